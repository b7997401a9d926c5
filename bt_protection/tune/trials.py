"""One trial: a strategy under one profile on one window, with warm-up, as a plain-data result.

A trial is a job (`RunSpec`) whose dates are its window with the warm-up before it; the engine
runs it on the whole price history, which `run_job` cuts to those dates: the frames end on the
window's last day, so nothing after the window can reach the backtest. `trial_result` turns the
job's result into the JSON the trial store keeps.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pandas as pd

from bt_protection.engine import Task
from bt_protection.job import RunResult, RunSpec
from bt_protection.metrics import performance
from bt_protection.tune.folds import Window


class Objective(StrEnum):
    """What the search maximises on each train window (docs/tune.md gives the formulas)."""

    SHARPE = "sharpe"
    CALMAR = "calmar"
    CAGR = "cagr"
    RETURN_OVER_TURNOVER = "return_over_turnover"


def objective_value(metrics: dict[str, Any], objective: Objective) -> float | None:
    """The objective of a trial's metrics; None when undefined (e.g. no drawdown, no trades)."""
    if objective is Objective.CALMAR:
        cagr, drawdown = metrics.get("cagr"), metrics.get("max_drawdown")
        return cagr / -drawdown if cagr is not None and drawdown else None
    if objective is Objective.RETURN_OVER_TURNOVER:
        total, turnover = metrics.get("total_return"), metrics.get("turnover")
        return total / turnover if total is not None and turnover else None
    return metrics.get(objective.value)


@dataclass(frozen=True, eq=False)  # eq=False: the job's profile is a dict
class Trial:
    """One backtest of the tune. `arm` is a candidate (`c0`, `c1`, ...), `base`, `off` or
    `tuned`; `key` identifies the result (same inputs, same key) for the resume store; `spec`
    is the job (the strategy as a text any process resolves, or the class itself)."""

    key: str
    fold: int
    phase: str  # train | test
    arm: str
    window: Window
    spec: RunSpec

    @property
    def keeps_equity(self) -> bool:
        return self.phase == "test"

    @property
    def task(self) -> Task:
        return Task(f"trial-{self.key}", self.spec)


def trial_key(identity: dict[str, Any], window: Window, profile_hash: str, phase: str) -> str:
    """sha256 of everything a trial's result depends on."""
    text = json.dumps(
        {**identity, "window": vars(window), "profile": profile_hash, "phase": phase},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def trial_result(trial: Trial, result: RunResult) -> dict[str, Any]:
    """The trial's result as `{"metrics", "equity", "error"}` in JSON types; a trial whose
    backtest raised has its error and no metrics (it is left out of the search). Metrics
    count from the window's first day: the warm-up before it places no order. A recording of
    the market state (the timing test's) adds each bar's `states` ([code, volatility ratio])
    and `first`, the index of the window's first day among them."""
    if result.error is not None:
        return {"metrics": None, "equity": None, "error": result.error}
    assert result.equity is not None and result.orders is not None and result.trades is not None
    equity = result.equity[result.equity.index >= pd.Timestamp(trial.window.first)]
    metrics = performance(equity, result.orders, result.trades)
    metrics["orders_denied"] = int((result.orders["protection"] == "denied").sum())
    series = None
    if trial.keeps_equity:
        days = pd.DatetimeIndex(equity.index).strftime("%Y-%m-%d")
        series = [[day, float(value)] for day, value in zip(days, equity["value"], strict=True)]
    out: dict[str, Any] = {"metrics": metrics, "equity": series, "error": None}
    if result.regime is not None:
        first = pd.Timestamp(trial.window.first)
        out["states"] = [[code, ratio] for _, code, ratio in result.regime]
        out["first"] = sum(1 for when, _, _ in result.regime if pd.Timestamp(when) < first)
    return out
