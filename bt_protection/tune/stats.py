"""The statistics of the verdict: a paired stationary block bootstrap, the deflated Sharpe
ratio and how stable the chosen parameters are across folds (numpy and the standard library
only; formulas and choices in docs/tune.md)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from bt_protection.metrics import TRADING_DAYS

EULER_GAMMA = 0.5772156649015329
BLOCK_DAYS = 20  # expected block length of the bootstrap: about one month of trading days
RESAMPLES = 2000
CONFIDENCE = 0.90


def sharpe(returns: np.ndarray) -> np.ndarray:
    """Annualised Sharpe ratio of each row of daily returns (NaN for a flat row)."""
    std = returns.std(axis=-1, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(std > 0, returns.mean(axis=-1) / std * math.sqrt(TRADING_DAYS), np.nan)


def stationary_indices(
    n: int, resamples: int, block: float, rng: np.random.Generator
) -> np.ndarray:
    """Index rows of the stationary bootstrap (Politis & Romano, 1994): blocks start at a
    uniform random day, wrap around the end, and have geometric lengths of mean `block`."""
    starts = rng.integers(0, n, size=(resamples, n))
    new_block = rng.random((resamples, n)) < 1.0 / block
    new_block[:, 0] = True
    position = np.arange(n)
    block_start = np.maximum.accumulate(np.where(new_block, position, 0), axis=1)
    first = np.take_along_axis(starts, block_start, axis=1)
    return (first + position - block_start) % n


@dataclass(frozen=True)
class BootstrapResult:
    """`estimate` on the data, its `ci` at `confidence`, and the share of resamples above 0;
    `differences`: the finite resampled differences themselves (not in `to_dict`)."""

    estimate: float
    ci: tuple[float, float]
    p_positive: float
    confidence: float
    block: float
    resamples: int
    differences: np.ndarray = field(default_factory=lambda: np.empty(0), compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "estimate": self.estimate,
            "ci": list(self.ci),
            "p_positive": self.p_positive,
            "confidence": self.confidence,
            "block_days": self.block,
            "resamples": self.resamples,
        }


def paired_bootstrap(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray] = sharpe,
    *,
    seed: int = 0,
    block: float = BLOCK_DAYS,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
) -> BootstrapResult:
    """statistic(a) - statistic(b) for two daily return series of the same days, resampled
    together (the same days for both), so the dependence between the arms is kept."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError("the two series must hold the same number (2 or more) of days")
    rng = np.random.default_rng(seed)
    index = stationary_indices(len(a), resamples, block, rng)
    diffs = statistic(a[index]) - statistic(b[index])
    diffs = diffs[np.isfinite(diffs)]
    estimate = float(statistic(a[None, :])[0] - statistic(b[None, :])[0])
    tail = (1 - confidence) / 2
    if len(diffs) == 0:
        return BootstrapResult(estimate, (math.nan, math.nan), math.nan, confidence, block, 0)
    low, high = np.quantile(diffs, [tail, 1 - tail])
    return BootstrapResult(
        estimate,
        (float(low), float(high)),
        float((diffs > 0).mean()),
        confidence,
        block,
        resamples,
        diffs,
    )


def deflated_sharpe(
    returns: Sequence[float] | np.ndarray, trials: int, trial_sharpe_variance: float
) -> dict[str, float]:
    """Deflated Sharpe ratio (Bailey & López de Prado, 2014) of daily `returns` picked as the
    best of `trials` configurations whose (daily, not annualised) Sharpe ratios vary with
    `trial_sharpe_variance`: the probability that the true Sharpe ratio exceeds the best one
    expected from `trials` tries of worthless configurations."""
    r = np.asarray(returns, dtype=float)
    normal = NormalDist()
    sr = float(r.mean() / r.std(ddof=1)) if r.std(ddof=1) > 0 else math.nan
    if trials > 1 and trial_sharpe_variance > 0:
        sr0 = math.sqrt(trial_sharpe_variance) * (
            (1 - EULER_GAMMA) * normal.inv_cdf(1 - 1 / trials)
            + EULER_GAMMA * normal.inv_cdf(1 - 1 / (trials * math.e))
        )
    else:
        sr0 = 0.0
    centred = r - r.mean()
    std = r.std(ddof=0)
    skew = float((centred**3).mean() / std**3) if std > 0 else 0.0
    kurt = float((centred**4).mean() / std**4) if std > 0 else 3.0
    spread = 1 - skew * sr + (kurt - 1) / 4 * sr**2
    if not math.isfinite(sr) or spread <= 0:
        dsr = math.nan
    else:
        dsr = normal.cdf((sr - sr0) * math.sqrt(len(r) - 1) / math.sqrt(spread))
    return {
        "deflated_sharpe": dsr,
        "trials": trials,
        "sharpe_annual": sr * math.sqrt(TRADING_DAYS),
        "expected_max_sharpe_annual": sr0 * math.sqrt(TRADING_DAYS),
        "skewness": skew,
        "kurtosis": kurt,
        "days": len(r),
    }


def stability(chosen: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per key: the value chosen most often, in how many folds, and the share of folds; and
    `overall`, the mean of those shares (1: every fold chose the same settings)."""
    keys = list(chosen[0]) if chosen else []
    per_key = {}
    for key in keys:
        values = [repr(c[key]) for c in chosen]
        counts = Counter(values)
        top = max(counts.values())
        mode = next(v for v in values if counts[v] == top)  # the earliest fold breaks ties
        per_key[key] = {
            "mode": chosen[values.index(mode)][key],
            "folds": top,
            "share": top / len(chosen),
            "distinct": len(counts),
        }
    overall = float(np.mean([v["share"] for v in per_key.values()])) if per_key else math.nan
    return {"overall": overall, "keys": per_key}
