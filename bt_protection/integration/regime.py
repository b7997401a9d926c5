"""`RegimeIndicator`: a market regime code per bar from trend, realised volatility and drawdown.

Codes: 0 bull, 1 neutral, 2 bear, 3 crisis (`REGIME_LABELS`, calm to stressed). The rules, the
warm-up and the parameters are described in docs/regime.md. The indicator keeps its own rolling
state, so its minimum period is 1: it never delays a strategy's `next`, and it does not depend
on how many bars backtrader keeps in its line buffers.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import fields
from typing import Any

import backtrader as bt

from bt_protection.metrics import TRADING_DAYS
from bt_protection.profile import RegimeConfig

REGIME_LABELS: tuple[str, ...] = ("bull", "neutral", "bear", "crisis")
BULL, NEUTRAL, BEAR, CRISIS = range(4)

_PARAMS: tuple[tuple[str, Any], ...] = tuple(
    (f.name, f.default) for f in fields(RegimeConfig) if f.name != "data"
)


def label_of(code: float) -> str:
    """The label of a regime code (`2` or `2.0` -> `"bear"`); `ValueError` for anything else."""
    if isinstance(code, float) and code.is_integer():
        code = int(code)
    if not isinstance(code, int) or not 0 <= code < len(REGIME_LABELS):
        raise ValueError(f"unknown regime code {code!r}; codes are 0..{len(REGIME_LABELS) - 1}")
    return REGIME_LABELS[code]


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

    A missing or non-positive close repeats the previous code and leaves the windows alone.
    """

    __slots__ = (
        "_bars",
        "_code",
        "_fast",
        "_fast_period",
        "_fast_sum",
        "_limits",
        "_peaks",
        "_drawdown_period",
        "_prev_close",
        "_ret_sq",
        "_ret_sum",
        "_returns",
        "_slow",
        "_slow_period",
        "_slow_sum",
        "_vol_period",
    )

    def __init__(
        self,
        fast_period: int,
        slow_period: int,
        vol_period: int,
        vol_high: float,
        vol_crisis: float,
        drawdown_period: int,
        drawdown_bear: float,
        drawdown_crisis: float,
    ) -> None:
        periods = dict(
            fast_period=fast_period,
            slow_period=slow_period,
            vol_period=vol_period,
            drawdown_period=drawdown_period,
        )
        for name, value in periods.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"RegimeIndicator: {name} must be a positive integer, got {value!r}"
                )
        if fast_period >= slow_period:
            raise ValueError("RegimeIndicator: fast_period must be shorter than slow_period")
        if vol_period < 2:
            raise ValueError("RegimeIndicator: vol_period must be at least 2")
        self._fast_period = fast_period
        self._slow_period = slow_period
        self._vol_period = vol_period
        self._drawdown_period = drawdown_period
        self._limits = (vol_high, vol_crisis, drawdown_bear, drawdown_crisis)
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
        self._code = NEUTRAL

    def update(self, close: float) -> int:
        """Feed the close of the next bar; return that bar's regime code."""
        if not close > 0.0 or math.isinf(close):
            return self._code
        self._bars = n = self._bars + 1

        self._fast.append(close)
        self._fast_sum += close
        if len(self._fast) > self._fast_period:
            self._fast_sum -= self._fast.popleft()
        self._slow.append(close)
        self._slow_sum += close
        if len(self._slow) > self._slow_period:
            self._slow_sum -= self._slow.popleft()

        returns = self._returns
        if n > 1:
            r = math.log(close / self._prev_close)
            returns.append(r)
            self._ret_sum += r
            self._ret_sq += r * r
            if len(returns) > self._vol_period:
                old = returns.popleft()
                self._ret_sum -= old
                self._ret_sq -= old * old
        self._prev_close = close

        peaks = self._peaks
        while peaks and peaks[-1][1] <= close:
            peaks.pop()
        peaks.append((n, close))
        if peaks[0][0] <= n - self._drawdown_period:
            peaks.popleft()

        vol = None
        k = self._vol_period
        if len(returns) == k:
            var = max(self._ret_sq - self._ret_sum * self._ret_sum / k, 0.0) / (k - 1)
            vol = math.sqrt(var * TRADING_DAYS)
        fast = slow = None
        if n > self._fast_period:
            fast = self._fast_sum / len(self._fast)
            slow = self._slow_sum / len(self._slow)
        self._code = classify(1.0 - close / peaks[0][1], vol, close, fast, slow, *self._limits)
        return self._code


class RegimeIndicator(bt.Indicator):
    """Line `regime`: 0 bull, 1 neutral, 2 bear, 3 crisis, from the close of the watched feed.

    Params are the fields of `RegimeConfig` except `data`. Every input uses only the current and
    past closes; a value is written from the first bar (see docs/regime.md for the warm-up).
    """

    lines: Any = ("regime",)  # backtrader turns it into the Lines object `self.lines`
    params = _PARAMS
    plotinfo = dict(plotymargin=0.1, plotyticks=[BULL, NEUTRAL, BEAR, CRISIS])

    @classmethod
    def from_config(cls, data: Any, config: RegimeConfig) -> RegimeIndicator:
        """The indicator on `data` with the parameters of a profile's `regime:` block."""
        values = {name: getattr(config, name) for name, _ in _PARAMS}
        # backtrader's metaclass takes the data and the params before `__init__`
        return cls(data, **values)  # type: ignore[call-arg]

    def __init__(self) -> None:
        self._state = RegimeState(**{name: getattr(self.p, name) for name, _ in _PARAMS})
        self._code = float(NEUTRAL)
        self._seen = 0  # len(data) at the last update

    def label(self, ago: int = 0) -> str:
        """The regime label `ago` bars back (0 = current bar)."""
        return label_of(self.lines.regime[-ago])

    def next(self) -> None:
        # Several feeds on different calendars: backtrader calls next again without a new bar.
        if len(self.data) != self._seen:
            self._seen = len(self.data)
            self._code = float(self._state.update(self.data.close[0]))
        self.lines.regime[0] = self._code

    def once(self, start: int, end: int) -> None:
        update = self._state.update
        closes = self.data.close.array
        out = self.lines.regime.array
        for i in range(start, end):
            out[i] = float(update(closes[i]))
