"""`RegimeIndicator`: a market regime code per bar from trend, realised volatility and drawdown.

Codes: 0 bull, 1 neutral, 2 bear, 3 crisis (`REGIME_LABELS`, calm to stressed). The rules, the
warm-up and the parameters are described in docs/regime.md. The indicator keeps its own rolling
state, so its minimum period is 1: it never delays a strategy's `next`, and it does not depend
on how many bars backtrader keeps in its line buffers.
"""

from __future__ import annotations

import heapq
import math
from array import array as ArrayType
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

import backtrader as bt

from bt_protection.errors import UserError
from bt_protection.metrics import TRADING_DAYS
from bt_protection.profile import RegimeConfig
from bt_protection.regime_factors import BASE_FACTORS, FactorName, FactorState
from bt_protection.regimes import REGIME_LABELS

BULL, NEUTRAL, BEAR, CRISIS = range(4)

_PARAMS: tuple[tuple[str, Any], ...] = tuple(
    (f.name, f.default) for f in fields(RegimeConfig) if f.name != "data"
)


FACTOR_LINES: tuple[str, ...] = tuple(name.value for name in FactorName)

_LABEL_OF_CODE = {float(code): label for code, label in enumerate(REGIME_LABELS)}


def label_of(code: float) -> str:
    """The label of a regime code (`2` or `2.0` -> `"bear"`); `ValueError` for anything else."""
    try:
        return _LABEL_OF_CODE[code]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown regime code {code!r}; codes are 0..{len(REGIME_LABELS) - 1}"
        ) from None


def classify(
    drawdown: float,
    vol: float | None,
    close: float,
    fast: float | None,
    slow: float | None,
    vol_high: float,
    vol_crisis: float,
    drawdown_bear: float,
    drawdown_crisis: float,
) -> int:
    """The regime code of one bar: the first rule that holds wins.

    crisis: drawdown >= drawdown_crisis or vol >= vol_crisis; bear: drawdown >= drawdown_bear or
    (close < slow and fast < slow); bull: fast > slow and close > slow and vol < vol_high;
    otherwise neutral. `vol` and `fast`/`slow` are None while warming up: rules needing them fail.
    """
    if drawdown >= drawdown_crisis or (vol is not None and vol >= vol_crisis):
        return CRISIS
    if drawdown >= drawdown_bear:
        return BEAR
    if fast is None or slow is None:
        return NEUTRAL
    if close < slow and fast < slow:
        return BEAR
    if fast > slow and close > slow and vol is not None and vol < vol_high:
        return BULL
    return NEUTRAL


class RegimeState:
    """The rolling windows behind `RegimeIndicator`: feed closes in order, get a code per bar.

    `update` returns the confirmed regime: it moves toward stress when each of the last
    `confirm_bars` raw codes (`classify`) is more stressed than the regime, to the calmest of
    them, and toward calm when each of them is calmer, to the most stressed of them; a drawdown
    of `drawdown_bear` (`drawdown_crisis`) makes it at least bear (crisis) at once. `raw` is
    the latest raw code. A missing or non-positive close repeats the previous codes and leaves
    the windows alone. `vol` is the latest realised volatility (annualised, over `vol_period`
    returns; None while it warms up) and `vol_ratio` that volatility over the median of every
    volatility so far, this bar's included (`ExpandingMedian`): what volatility-scaled profile
    values follow (docs/regime.md).
    """

    __slots__ = (
        "_bars",
        "_base",
        "code",
        "_config",
        "_median",
        "_fast",
        "_fast_sum",
        "_peaks",
        "_prev_close",
        "_raws",
        "_ret_sq",
        "_ret_sum",
        "_returns",
        "_slow",
        "_slow_sum",
        "drawdown",
        "raw",
        "trend",
        "vol",
        "vol_ratio",
    )

    def __init__(self, config: RegimeConfig) -> None:
        config.validate()
        self._config = config
        self._base = {f.name for f in config.factors}
        self._bars = 0  # valid closes seen
        self._prev_close = math.nan
        self._fast: deque[float] = deque()
        self._slow: deque[float] = deque()
        self._fast_sum = 0.0
        self._slow_sum = 0.0
        self._returns: deque[float] = deque()
        self._ret_sum = 0.0
        self._ret_sq = 0.0
        self._peaks: deque[tuple[int, float]] = deque()  # decreasing closes: the rolling max
        self._raws: deque[int] = deque(maxlen=config.confirm_bars)
        self.code = self.raw = NEUTRAL
        self._median = ExpandingMedian()
        self.vol: float | None = None
        self.vol_ratio: float | None = None
        self.trend: float | None = None
        self.drawdown = 0.0

    def update(self, close: float, stressed: int = 0) -> int:
        """Feed the close of the next bar; return that bar's confirmed regime code.

        `stressed` extra factors (`FactorState`) each move the raw code one step toward crisis;
        a base factor left out of `factors` counts as calm (docs/regime.md).
        """
        if not close > 0.0 or math.isinf(close):
            return self.code
        config = self._config
        self._bars = n = self._bars + 1

        self._fast.append(close)
        self._fast_sum += close
        if len(self._fast) > config.fast_period:
            self._fast_sum -= self._fast.popleft()
        self._slow.append(close)
        self._slow_sum += close
        if len(self._slow) > config.slow_period:
            self._slow_sum -= self._slow.popleft()

        returns = self._returns
        if n > 1:
            r = math.log(close / self._prev_close)
            returns.append(r)
            self._ret_sum += r
            self._ret_sq += r * r
            if len(returns) > config.vol_period:
                old = returns.popleft()
                self._ret_sum -= old
                self._ret_sq -= old * old
        self._prev_close = close

        peaks = self._peaks
        while peaks and peaks[-1][1] <= close:
            peaks.pop()
        peaks.append((n, close))
        if peaks[0][0] <= n - config.drawdown_period:
            peaks.popleft()

        vol = None
        k = config.vol_period
        if len(returns) == k:
            var = max(self._ret_sq - self._ret_sum * self._ret_sum / k, 0.0) / (k - 1)
            vol = math.sqrt(var * TRADING_DAYS)
            median = self._median.add(vol)
            self.vol, self.vol_ratio = vol, (vol / median if median > 0.0 else None)
        fast = slow = None
        if n > config.fast_period:
            fast = self._fast_sum / len(self._fast)
            slow = self._slow_sum / len(self._slow)
            self.trend = fast / slow - 1.0
        base = self._base
        self.drawdown = 1.0 - close / peaks[0][1]
        drawdown = self.drawdown if FactorName.DRAWDOWN in base else 0.0
        if FactorName.TREND not in base:
            fast = slow = None
        raw = classify(
            drawdown,
            vol if FactorName.VOLATILITY in base else 0.0,
            close,
            fast,
            slow,
            config.vol_high,
            config.vol_crisis,
            config.drawdown_bear,
            config.drawdown_crisis,
        )
        self.raw = min(raw + stressed, CRISIS)
        raws = self._raws
        raws.append(self.raw)
        if len(raws) == config.confirm_bars:
            calmest, most_stressed = min(raws), max(raws)
            if calmest > self.code:
                self.code = calmest
            elif most_stressed < self.code:
                self.code = most_stressed
        if drawdown >= config.drawdown_crisis:  # a drawdown counts at once: it took many bars
            self.code = CRISIS
        elif drawdown >= config.drawdown_bear:
            self.code = max(self.code, BEAR)
        return self.code


class ExpandingMedian:
    """The median of every value added so far (two heaps: each `add` is O(log n))."""

    __slots__ = ("_high", "_low")

    def __init__(self) -> None:
        self._low: list[float] = []  # the smaller half, negated (a max-heap)
        self._high: list[float] = []  # the larger half

    def add(self, value: float) -> float:
        """Add `value`; return the median of all values added."""
        low, high = self._low, self._high
        if low and value > -low[0]:
            heapq.heappush(high, value)
        else:
            heapq.heappush(low, -value)
        if len(low) > len(high) + 1:
            heapq.heappush(high, -heapq.heappop(low))
        elif len(high) > len(low):
            heapq.heappush(low, -heapq.heappop(high))
        if len(low) > len(high):
            return -low[0]
        return (-low[0] + high[0]) / 2.0


class RegimeIndicator(bt.Indicator):
    """Line `regime`: 0 bull, 1 neutral, 2 bear, 3 crisis, from the close of the watched feed.

    The first data is the watched market; the others, given only when `factors` has breadth,
    correlation or credit, are the feeds those factors read (their names are the feeds').
    Line `raw` holds the label of each bar's own inputs before confirmation (`confirm_bars`);
    one line per factor holds its value (`FACTOR_LINES`; NaN while it warms up or when the
    factor is not in `factors`). Params are the fields of `RegimeConfig` except `data`. Every
    value uses only the current and past bars; a value is written from the first bar
    (docs/regime.md).
    """

    lines: Any = ("regime", "raw", *FACTOR_LINES)  # backtrader makes it the Lines object
    params = _PARAMS
    plotinfo = dict(plotymargin=0.1, plotyticks=[BULL, NEUTRAL, BEAR, CRISIS])
    plotlines = {name: dict(_plotskip=True) for name in FACTOR_LINES}

    @classmethod
    def from_config(
        cls, data: Any, config: RegimeConfig, markets: Sequence[Any] = ()
    ) -> RegimeIndicator:
        """The indicator on `data` with the parameters of a profile's `regime:` block;
        `markets` are the feeds its cross-feed factors read (ignored without such factors)."""
        values = {name: getattr(config, name) for name, _ in _PARAMS}
        extra = any(f.name not in BASE_FACTORS for f in config.factors)
        # backtrader's metaclass takes the data and the params before `__init__`
        return cls(data, *(markets if extra else ()), **values)  # type: ignore[call-arg]

    def __init__(self) -> None:
        config = RegimeConfig(**{name: getattr(self.p, name) for name, _ in _PARAMS})
        self._state = RegimeState(config)
        self._markets = list(self.datas[1:])
        names = [d._name or f"data{k + 1}" for k, d in enumerate(self._markets)]
        self._factors = FactorState(config.factors, names)  # ValueError: a feed not given
        self._new = _NewCloses(self._markets)
        self._listed = [f.name.value for f in config.factors]
        self._readers = {name: self._reader(name) for name in self._listed}
        self._seen = 0  # len(data) at the last update

    def label(self, ago: int = 0) -> str:
        """The regime label `ago` bars back (0 = current bar)."""
        return label_of(self.lines.regime[-ago])

    def _reader(self, name: str) -> Callable[[], float | None]:
        """What gives the value of factor `name` after an update."""
        state, cross = self._state, self._factors.values  # `values` is updated in place
        if name == FactorName.TREND:
            return lambda: state.trend
        if name == FactorName.VOLATILITY:
            return lambda: state.vol
        if name == FactorName.DRAWDOWN:
            return lambda: state.drawdown
        return lambda: cross[name]

    def next(self) -> None:
        # Several feeds on different calendars: backtrader calls next again without a new bar.
        if len(self.data) != self._seen:
            self._seen = len(self.data)
            factors = self._factors  # the cross-feed ones move with the regime's bars
            stressed = factors.update(self._new.read()) if factors else 0
            self._state.update(self.data.close[0], stressed)
        lines = self.lines
        lines.regime[0] = float(self._state.code)
        lines.raw[0] = float(self._state.raw)
        for name in self._listed:
            value = self._readers[name]()
            getattr(lines, name)[0] = math.nan if value is None else value

    def once(self, start: int, end: int) -> None:
        state, factors = self._state, self._factors
        closes = self.data.close.array
        regime, raw = self.lines.regime.array, self.lines.raw.array
        outs = [(self._readers[n], getattr(self.lines, n).array) for n in self._listed]
        markets = _DatedCloses(_dates(self.data).array, self._markets)
        for i in range(start, end):
            state.update(closes[i], factors.update(markets.read(i)) if factors else 0)
            regime[i] = float(state.code)
            raw[i] = float(state.raw)
            for read, out in outs:
                value = read()
                out[i] = math.nan if value is None else value


def _dates(data: Any) -> Any:
    """The datetime line of `data`, or of the feed an indicator such as `CompositeIndex` runs on."""
    while not isinstance(data, bt.AbstractDataBase):
        data = data.datas[0]
    return data.datetime


class _DatedCloses:
    """For `once`: each feed's latest close dated at or before a bar of `clock` (an array of
    dates), if that feed has such a bar it did not give before, else NaN (what `_NewCloses`
    reads bar by bar)."""

    __slots__ = ("_clock", "_feeds", "_seen")

    def __init__(self, clock: Any, feeds: Sequence[Any]) -> None:
        self._clock = clock
        self._feeds = [(d.datetime.array, d.close.array) for d in feeds]
        self._seen = [0] * len(feeds)  # the next unread bar of each feed

    def read(self, i: int) -> list[float]:
        now = self._clock[i]
        seen = self._seen
        closes = []
        for k, (dates, values) in enumerate(self._feeds):
            j = seen[k]
            while j < len(dates) and dates[j] <= now:
                j += 1
            closes.append(values[j - 1] if j > seen[k] else math.nan)
            seen[k] = j
        return closes


class EqualWeightIndex:
    """An equal-weight index of `n` series, 100 at the start.

    `step(closes)` takes one close per series (NaN or a non-positive close: no new bar) and
    grows the index by the mean of the returns of the series with a valid close against
    their last valid close; a step where none has such a return leaves it unchanged.
    """

    __slots__ = ("_last", "value")

    def __init__(self, n: int) -> None:
        self.value = 100.0
        self._last = [math.nan] * n  # each series' last valid close

    def step(self, closes: list[float]) -> float:
        last = self._last
        returns = []
        for k, close in enumerate(closes):
            if close > 0.0 and not math.isinf(close):
                if last[k] > 0.0:
                    returns.append(close / last[k] - 1.0)
                last[k] = close
        if returns:
            self.value *= 1.0 + math.fsum(returns) / len(returns)
        return self.value


class CompositeIndex(bt.Indicator):
    """Line `close`: an equal-weight index of the feeds given, 100 on the first bar.

    It runs on the first feed's bars. At each, every feed contributes its latest bar dated at
    or before that bar (matched by date, so feeds on other calendars, starting later or
    ending earlier, never shift or look ahead): its return against its last valid close
    (`EqualWeightIndex`). The regime indicator watches it when several feeds run, none is
    named and the strategy reads `self.regime` (docs/regime.md).
    """

    lines: Any = ("close",)  # backtrader turns it into the Lines object `self.lines`
    plotinfo = dict(subplot=True)

    def __init__(self) -> None:
        self._index = EqualWeightIndex(len(self.datas))
        self._seen = [0] * len(self.datas)

    def next(self) -> None:
        # called on every tick of the strategy; a feed counts when it has a new bar dated at
        # or before the first feed's
        now = self.data.datetime[0]
        seen = self._seen
        closes = []
        for k, data in enumerate(self.datas):
            if len(data) > seen[k] and data.datetime[0] <= now:
                seen[k] = len(data)
                closes.append(data.close[0])
            else:
                closes.append(math.nan)
        self.lines.close[0] = self._index.step(closes)

    def once(self, start: int, end: int) -> None:
        feeds = _DatedCloses(self.data.datetime.array, self.datas)
        out = self.lines.close.array
        for i in range(start, end):
            out[i] = self._index.step(feeds.read(i))


class ClockRegime:
    """The confirmed regime code on the strategy's clock: what the orchestrator is told.

    `update()` runs once per strategy bar. A watched feed whose length grew since the last
    call has a new bar, dated at or before the strategy's datetime (backtrader moves a feed
    only up to it, whatever the runonce, preload and exactbars modes); its close is read then.
    One watched feed: that close goes to the `RegimeState`. Several: the closes move an
    `EqualWeightIndex`, whose value goes to the `RegimeState`. A bar with no new bar of any
    watched feed leaves the code as it stands: neutral before the first, the last one after
    the feeds end. The cross-feed factors of `config.factors` (breadth, correlation, credit)
    move at the bars where the regime moves: each of `markets` (the run's feeds by name) gives
    its latest close if it has a new bar since the last such bar (`FactorState`), as
    `RegimeIndicator` reads them on its own bars; `factors` holds their latest values. A
    credit feed not among `markets` is a `UserError`.

    One watched feed that backtrader preloaded (and no cross-feed factor): the codes of all its
    bars are worked out at the first update (`regime_series`, equal to the `RegimeState` fed bar
    by bar); each update then reads the code of the feed's current bar.
    """

    __slots__ = ("_closes", "_config", "_factors", "_index", "_markets", "_series", "_state")

    @property
    def vol_ratio(self) -> float | None:
        """The watched market's volatility over its long-run median (`RegimeState.vol_ratio`)."""
        series = self._series
        if series is not None:
            return series.vol_ratio
        return self._state.vol_ratio

    @property
    def factors(self) -> dict[str, float | None]:
        """The latest value of each cross-feed factor (None while it warms up)."""
        return dict(self._factors.values)

    def __init__(
        self, feeds: list[Any], config: RegimeConfig, markets: dict[str, Any] | None = None
    ) -> None:
        markets = markets or {}
        try:
            self._factors = FactorState(config.factors, list(markets))
        except ValueError as error:
            raise UserError(str(error)) from None
        self._config = config
        self._closes = _NewCloses(feeds)
        self._markets = _NewCloses(list(markets.values()) if self._factors else [])
        self._index = EqualWeightIndex(len(feeds)) if len(feeds) > 1 else None
        self._state = RegimeState(config)
        self._series = (
            _Preloaded(feeds[0]) if len(feeds) == 1 and not self._factors else None
        )

    def update(self) -> int:
        """The code at the strategy's current bar."""
        series = self._series
        if series is not None:
            code = series.update(self._config)
            if code is not None:
                return code
            self._series = None  # not preloaded: bar by bar from here (nothing was read yet)
        closes = self._closes.read()
        if not any(c == c for c in closes):  # c == c: not NaN; no new bar of the regime
            return self._state.code
        stressed = self._factors.update(self._markets.read()) if self._factors else 0
        index = self._index
        close = closes[0] if index is None else index.step(closes)
        return self._state.update(close, stressed)


class _Preloaded:
    """The regime of one preloaded feed, read by its length from `regime_series`."""

    __slots__ = ("_codes", "_feed", "_line", "_ratios", "code", "vol_ratio")

    def __init__(self, feed: Any) -> None:
        self._feed = feed
        self._line = feed.lines.close
        self._codes: list[int] | None = None
        self._ratios: list[float | None] = []
        self.code = NEUTRAL
        self.vol_ratio: float | None = None

    def update(self, config: RegimeConfig) -> int | None:
        """The code at the feed's current bar; None at the first call unless backtrader
        preloaded the feed (cerebro's `preload`, full-length lines: the closes of every bar
        are in the line's array from the start). A feed grown past the bars worked out has
        them worked out again from its whole array."""
        size = len(self._line)
        codes = self._codes
        if codes is None or size > len(codes):
            array = self._line.array
            if codes is None and not (
                getattr(getattr(self._feed, "_env", None), "_dopreload", False)
                and isinstance(array, ArrayType)
            ):
                return None
            from bt_protection.integration.regime_series import regime_series  # it imports us

            series = regime_series(array, config)  # each code uses closes up to its bar only
            codes = self._codes = series.codes
            self._ratios = series.vol_ratios
        if size:
            self.code, self.vol_ratio = codes[size - 1], self._ratios[size - 1]
        return self.code


class _NewCloses:
    """Each feed's close at a strategy bar where its length grew since the last `read`, else NaN."""

    __slots__ = ("_lines", "_seen")

    def __init__(self, feeds: list[Any]) -> None:
        self._lines = [d.lines.close for d in feeds]  # a line's len is its feed's
        self._seen = [0] * len(feeds)

    def read(self) -> list[float]:
        seen = self._seen
        closes = []
        for k, line in enumerate(self._lines):
            size = len(line)
            if size > seen[k]:
                seen[k] = size
                closes.append(line[0])
            else:
                closes.append(math.nan)
        return closes
