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
from dataclasses import fields
from typing import Any

import backtrader as bt

from bt_protection.errors import UserError
from bt_protection.metrics import TRADING_DAYS
from bt_protection.profile import RegimeConfig
from bt_protection.regime_factors import FactorName, FactorState
from bt_protection.regimes import REGIME_LABELS

BULL, NEUTRAL, BEAR, CRISIS = range(4)

_PARAMS: tuple[tuple[str, Any], ...] = tuple(
    (f.name, f.default) for f in fields(RegimeConfig) if f.name != "data"
)


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
        "raw",
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
        base = self._base
        drawdown = 1.0 - close / peaks[0][1] if FactorName.DRAWDOWN in base else 0.0
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

    Line `raw` holds the label of each bar's own inputs before confirmation (`confirm_bars`).
    Params are the fields of `RegimeConfig` except `data`. Every input uses only the current and
    past closes; a value is written from the first bar (see docs/regime.md for the warm-up).
    """

    lines: Any = ("regime", "raw")  # backtrader turns it into the Lines object `self.lines`
    params = _PARAMS
    plotinfo = dict(plotymargin=0.1, plotyticks=[BULL, NEUTRAL, BEAR, CRISIS])

    @classmethod
    def from_config(cls, data: Any, config: RegimeConfig) -> RegimeIndicator:
        """The indicator on `data` with the parameters of a profile's `regime:` block."""
        values = {name: getattr(config, name) for name, _ in _PARAMS}
        # backtrader's metaclass takes the data and the params before `__init__`
        return cls(data, **values)  # type: ignore[call-arg]

    def __init__(self) -> None:
        config = RegimeConfig(**{name: getattr(self.p, name) for name, _ in _PARAMS})
        self._state = RegimeState(config)
        self._seen = 0  # len(data) at the last update

    def label(self, ago: int = 0) -> str:
        """The regime label `ago` bars back (0 = current bar)."""
        return label_of(self.lines.regime[-ago])

    def next(self) -> None:
        # Several feeds on different calendars: backtrader calls next again without a new bar.
        if len(self.data) != self._seen:
            self._seen = len(self.data)
            self._state.update(self.data.close[0])
        self.lines.regime[0] = float(self._state.code)
        self.lines.raw[0] = float(self._state.raw)

    def once(self, start: int, end: int) -> None:
        state = self._state
        closes = self.data.close.array
        regime, raw = self.lines.regime.array, self.lines.raw.array
        for i in range(start, end):
            regime[i] = float(state.update(closes[i]))
            raw[i] = float(state.raw)


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
        clock = self.data.datetime.array
        feeds = [(d.datetime.array, d.close.array) for d in self.datas]
        out = self.lines.close.array
        seen = self._seen  # the next unread bar of each feed
        for i in range(start, end):
            closes = []
            for k, (dates, values) in enumerate(feeds):
                j = seen[k]
                while j < len(dates) and dates[j] <= clock[i]:
                    j += 1
                closes.append(values[j - 1] if j > seen[k] else math.nan)
                seen[k] = j
            out[i] = self._index.step(closes)


class ClockRegime:
    """The confirmed regime code on the strategy's clock: what the orchestrator is told.

    `update()` runs once per strategy bar. A watched feed whose length grew since the last
    call has a new bar, dated at or before the strategy's datetime (backtrader moves a feed
    only up to it, whatever the runonce, preload and exactbars modes); its close is read then.
    One watched feed: that close goes to the `RegimeState`. Several: the closes move an
    `EqualWeightIndex`, whose value goes to the `RegimeState`. A bar with no new bar of any
    watched feed leaves the code as it stands: neutral before the first, the last one after
    the feeds end. The cross-feed factors of `config.factors` (breadth, correlation, credit)
    read the closes of `markets` (the run's feeds by name) the same way (`FactorState`);
    `factors` holds their latest values. A credit feed not among `markets` is a `UserError`.

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
        stressed = self._factors.update(self._markets.read()) if self._factors else 0
        closes = self._closes.read()
        index = self._index
        if index is None:  # a NaN close (no new bar) leaves the state alone
            return self._state.update(closes[0], stressed)
        if any(c == c for c in closes):  # c == c: not NaN
            return self._state.update(index.step(closes), stressed)
        return self._state.code


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
