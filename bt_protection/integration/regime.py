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

from bt_protection.profile import RegimeConfig

REGIME_LABELS: tuple[str, ...] = ("bull", "neutral", "bear", "crisis")
BULL, NEUTRAL, BEAR, CRISIS = range(4)
TRADING_DAYS = 252

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
    *,
    vol_high: float,
    vol_crisis: float,
    drawdown_bear: float,
    drawdown_crisis: float,
) -> int:
    """The regime code of one bar; `vol` / `fast` / `slow` are None while still warming up."""
    if drawdown >= drawdown_crisis or (vol is not None and vol >= vol_crisis):
        return CRISIS
    if fast is None or slow is None:
        return BEAR if drawdown >= drawdown_bear else NEUTRAL
    if drawdown >= drawdown_bear or (close < slow and fast < slow):
        return BEAR
    if fast > slow and close > slow and vol is not None and vol < vol_high:
        return BULL
    return NEUTRAL


class RegimeIndicator(bt.Indicator):
    """Line `regime`: 0 bull, 1 neutral, 2 bear, 3 crisis, from the close of the watched feed.

    Params are the fields of `RegimeConfig` except `data`. Every input uses only the current and
    past closes; a value is written from the first bar (see docs/regime.md for the warm-up).
    """

    lines = ("regime",)
    params = _PARAMS
    plotinfo = dict(plotymargin=0.1, plotyticks=[BULL, NEUTRAL, BEAR, CRISIS])

    @classmethod
    def from_config(cls, data: Any, config: RegimeConfig) -> RegimeIndicator:
        """The indicator on `data` with the parameters of a profile's `regime:` block."""
        return cls(data, **{name: getattr(config, name) for name, _ in _PARAMS})

    def __init__(self) -> None:
        p = self.p
        for name in ("fast_period", "slow_period", "vol_period", "drawdown_period"):
            if not isinstance(getattr(p, name), int) or getattr(p, name) < 1:
                raise ValueError(f"RegimeIndicator: {name} must be a positive integer")
        if p.fast_period >= p.slow_period:
            raise ValueError("RegimeIndicator: fast_period must be shorter than slow_period")
        if p.vol_period < 2:
            raise ValueError("RegimeIndicator: vol_period must be at least 2")
        self._bars = 0  # valid closes seen
        self._prev_close = math.nan
        self._fast: deque[float] = deque()
        self._slow: deque[float] = deque()
        self._fast_sum = 0.0
        self._slow_sum = 0.0
        self._returns: deque[float] = deque()
        self._ret_sum = 0.0
        self._ret_sq = 0.0
        self._peaks: deque[tuple[int, float]] = deque()  # decreasing closes, for the rolling max
        self._code = float(NEUTRAL)
        self._seen = 0  # len(data) at the last update

    def label(self, ago: int = 0) -> str:
        """The regime label `ago` bars back (0 = current bar)."""
        return label_of(self.lines.regime[-ago])

    def next(self) -> None:
        # Several feeds on different calendars: backtrader calls next again without a new bar.
        if len(self.data) != self._seen:
            self._seen = len(self.data)
            self._code = self._update(self.data.close[0])
        self.lines.regime[0] = self._code

    def once(self, start: int, end: int) -> None:
        closes = self.data.close.array
        out = self.lines.regime.array
        for i in range(start, end):
            out[i] = self._code = self._update(closes[i])

    def _update(self, close: float) -> float:
        """Feed one close, return the code of this bar (a missing or non-positive close repeats
        the previous code and leaves the state alone)."""
        if not close > 0.0 or math.isinf(close):
            return self._code
        p = self.p
        self._bars += 1
        n = self._bars

        self._fast.append(close)
        self._fast_sum += close
        if len(self._fast) > p.fast_period:
            self._fast_sum -= self._fast.popleft()
        self._slow.append(close)
        self._slow_sum += close
        if len(self._slow) > p.slow_period:
            self._slow_sum -= self._slow.popleft()

        if n > 1:
            r = math.log(close / self._prev_close)
            self._returns.append(r)
            self._ret_sum += r
            self._ret_sq += r * r
            if len(self._returns) > p.vol_period:
                old = self._returns.popleft()
                self._ret_sum -= old
                self._ret_sq -= old * old
        self._prev_close = close

        peaks = self._peaks
        while peaks and peaks[-1][1] <= close:
            peaks.pop()
        peaks.append((n, close))
        if peaks[0][0] <= n - p.drawdown_period:
            peaks.popleft()

        vol = None
        if len(self._returns) == p.vol_period:
            k = p.vol_period
            var = max(self._ret_sq - self._ret_sum * self._ret_sum / k, 0.0) / (k - 1)
            vol = math.sqrt(var * TRADING_DAYS)
        trend = n > p.fast_period
        return float(
            classify(
                drawdown=1.0 - close / peaks[0][1],
                vol=vol,
                close=close,
                fast=self._fast_sum / len(self._fast) if trend else None,
                slow=self._slow_sum / len(self._slow) if trend else None,
                vol_high=p.vol_high,
                vol_crisis=p.vol_crisis,
                drawdown_bear=p.drawdown_bear,
                drawdown_crisis=p.drawdown_crisis,
            )
        )
