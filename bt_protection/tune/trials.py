"""One trial: a strategy under one profile on one window, with warm-up, as a plain-data result.

`run_trial` is what worker processes and Dask workers execute. It gets the whole price
history once (as the worker's shared data) and cuts the trial's window from it: the frames end
on the window's last day, so nothing after the window can reach the backtest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pandas as pd

from bt_protection.metrics import performance
from bt_protection.profile import load_profile
from bt_protection.runner import RunPlan, RunSpec, backtest
from bt_protection.strategies_registry import resolve_strategy, with_protection
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


@dataclass(frozen=True, eq=False)  # eq=False: the profile is a dict
class Trial:
    """What one backtest needs. `arm` is a candidate (`c0`, `c1`, ...), `base`, `off` or
    `tuned`; `key` identifies the result (same inputs, same key) for the resume store."""

    key: str
    fold: int
    phase: str  # train | test
    arm: str
    window: Window
    profile: dict[str, Any]
    strategy: Any  # a text any process resolves (strategy_reference), or the class itself
    params: tuple[tuple[str, Any], ...]  # the strategy's params, converted
    broker: tuple[float, float, float]  # cash, commission, slippage

    @property
    def keeps_equity(self) -> bool:
        return self.phase == "test"


def trial_key(identity: dict[str, Any], window: Window, profile_hash: str, phase: str) -> str:
    """sha256 of everything a trial's result depends on."""
    text = json.dumps(
        {**identity, "window": vars(window), "profile": profile_hash, "phase": phase},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def run_trial(
    trial: Trial, frames: dict[str, pd.DataFrame], strategy: type | None = None
) -> dict[str, Any]:
    """Run one trial; `{"metrics", "equity", "error"}` in JSON types. A trial whose backtest
    raises returns its error (and no metrics) instead of raising. `strategy`: the protected
    class to run instead of the trial's (the timing test's, `bt_protection.tune.timing`)."""
    window = trial.window
    cut = {name: frame.loc[window.warmup : window.last] for name, frame in frames.items()}
    cash, commission, slippage = trial.broker
    spec = RunSpec(
        trial.strategy,
        "",
        params=trial.params,
        cash=cash,
        commission=commission,
        slippage=slippage,
        trade_start=window.first,
    )
    profile = load_profile(trial.profile)
    protected = strategy or with_protection(resolve_strategy(trial.strategy))
    plan = RunPlan(spec, protected, dict(trial.params), profile, cut, {})
    try:
        ran = backtest(plan)
    except Exception as error:  # recorded with the trial and left out of the search
        return {"metrics": None, "equity": None, "error": f"{type(error).__name__}: {error}"}
    analyzers = ran.analyzers
    equity = analyzers.equity.to_frame()
    equity = equity[equity.index >= pd.Timestamp(window.first)]
    orders = analyzers.orders.to_frame()
    metrics = performance(equity, orders, analyzers.trades.to_frame())
    metrics["orders_denied"] = int((orders["protection"] == "denied").sum())
    series = None
    if trial.keeps_equity:
        series = [[d.strftime("%Y-%m-%d"), float(v)] for d, v in equity["value"].items()]
    return {"metrics": metrics, "equity": series, "error": None}
