"""`regime_series`: `RegimeState` over a whole preloaded series at once, float op by float op.

The `ClockRegime` of one watched feed whose closes backtrader preloaded reads its code and
volatility ratio from here instead of updating a `RegimeState` every bar. Each value at a bar
depends only on the closes up to that bar (rolling windows, an expanding median, a
confirmation that looks back), so computing them ahead reads no future close at any bar. The
values are the ones `RegimeState.update` gives, bit for bit: each running sum is the same
sequence of additions and subtractions (`_running_sum`: a cumulative sum, which numpy adds in
order), logarithms come from `math.log`, and the median and the confirmation run the same
code (tests/test_regime_series.py checks equality on real data and in every backtrader mode).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from bt_protection.integration.regime import BEAR, BULL, CRISIS, NEUTRAL, ExpandingMedian
from bt_protection.metrics import TRADING_DAYS
from bt_protection.profile import RegimeConfig
from bt_protection.regime_factors import FactorName


@dataclass(frozen=True)
class RegimeSeries:
    """After each close of the series: the confirmed code and the volatility ratio
    (`RegimeState.code` and `vol_ratio` had the closes been fed one by one)."""

    codes: list[int]
    vol_ratios: list[float | None]


def _running_sum(values: np.ndarray, period: int) -> np.ndarray:
    """The sum after each value, as `s += v[i]; if i >= period: s -= v[i - period]` keeps
    it from `s = 0.0`: one cumulative sum over those steps in that order."""
    steps = np.zeros(2 * len(values) + 1)
    steps[1::2] = values
    steps[2 * period + 2 :: 2] = -values[: max(len(values) - period, 0)]
    return np.cumsum(steps)[2::2]


def _window(values: np.ndarray, size: int, fill: float) -> np.ndarray:
    """The last `size` values at each position (`fill` before the first)."""
    padded = np.concatenate([np.full(size - 1, fill), values])
    return sliding_window_view(padded, size)


def regime_series(closes: Sequence[float] | np.ndarray, config: RegimeConfig) -> RegimeSeries:
    """`RegimeState(config)` fed `closes` one by one (no extra factors): the code and the
    volatility ratio after each; a missing or non-positive close repeats the previous ones."""
    config.validate()
    prices = np.asarray(closes, dtype=float)
    valid = (prices > 0.0) & ~np.isinf(prices)
    close = prices[valid]
    codes, ratios = _valid_series(close, config) if len(close) else ([], [])
    out_codes: list[int] = []
    out_ratios: list[float | None] = []
    code, ratio = NEUTRAL, None
    k = 0
    for ok in valid.tolist():
        if ok:
            code, ratio = codes[k], ratios[k]
            k += 1
        out_codes.append(code)
        out_ratios.append(ratio)
    return RegimeSeries(out_codes, out_ratios)


def _valid_series(
    close: np.ndarray, config: RegimeConfig
) -> tuple[list[int], list[float | None]]:
    base = {f.name for f in config.factors}
    n = len(close)
    bars = np.arange(1, n + 1)
    fast_period, slow_period, k = config.fast_period, config.slow_period, config.vol_period

    fast = _running_sum(close, fast_period) / np.minimum(bars, fast_period)
    slow = _running_sum(close, slow_period) / np.minimum(bars, slow_period)
    trend = bars > fast_period if FactorName.TREND in base else np.zeros(n, dtype=bool)

    ratios = (close[1:] / close[:-1]).tolist()
    returns = np.array([math.log(r) for r in ratios])  # math.log, as RegimeState takes it
    vol = np.full(n, np.nan)
    if len(returns) >= k:
        ret_sum = _running_sum(returns, k)[k - 1 :]
        ret_sq = _running_sum(returns * returns, k)[k - 1 :]
        spread = ret_sq - ret_sum * ret_sum / k
        var = np.where(spread < 0.0, 0.0, spread) / (k - 1)  # max(spread, 0.0)
        vol[k:] = np.sqrt(var * TRADING_DAYS)
    known = ~np.isnan(vol)
    vol_ratio: list[float | None] = [None] * n
    median = ExpandingMedian()
    for i, v in zip(np.flatnonzero(known).tolist(), vol[known].tolist(), strict=True):
        middle = median.add(v)
        vol_ratio[i] = v / middle if middle > 0.0 else None
    if FactorName.VOLATILITY not in base:  # a left-out base factor counts as calm: 0.0
        vol, known = np.zeros(n), np.ones(n, dtype=bool)

    peak = _window(close, config.drawdown_period, -math.inf).max(axis=1)
    drawdown = 1.0 - close / peak if FactorName.DRAWDOWN in base else np.zeros(n)

    with np.errstate(invalid="ignore"):  # NaN volatility while it warms up: `known` guards
        raw = np.select(
            [
                (drawdown >= config.drawdown_crisis) | (known & (vol >= config.vol_crisis)),
                drawdown >= config.drawdown_bear,
                ~trend,
                (close < slow) & (fast < slow),
                (fast > slow) & (close > slow) & known & (vol < config.vol_high),
            ],
            [CRISIS, BEAR, NEUTRAL, BEAR, BULL],
            default=NEUTRAL,
        )
    confirm = config.confirm_bars
    window = _window(raw, confirm, NEUTRAL)
    calmest, most_stressed = window.min(axis=1).tolist(), window.max(axis=1).tolist()
    crisis = (drawdown >= config.drawdown_crisis).tolist()
    bear = (drawdown >= config.drawdown_bear).tolist()
    codes: list[int] = []
    code = NEUTRAL
    for i in range(n):
        if i >= confirm - 1:
            if calmest[i] > code:
                code = calmest[i]
            elif most_stressed[i] < code:
                code = most_stressed[i]
        if crisis[i]:
            code = CRISIS
        elif bear[i]:
            code = max(code, BEAR)
        codes.append(code)
    return codes, vol_ratio
