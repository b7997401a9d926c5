"""One backtest job: its description (`RunSpec`), its plan, and `run_job`, which executes it
on price frames it is given and returns a `RunResult`.

`run`, `compare` and `tune` all describe their backtests as `RunSpec`s and hand them, with the
price frames loaded once, to an executor (bt_protection.engine); `run_job` is what every
executor runs, in this process, a worker process or a Dask worker. It reads no file: the
strategy is resolved from its reference, the profile from a mapping or name, the frames are
cut to the job's dates. Only the audit is written, as it goes, to the path it is given.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import backtrader as bt
import pandas as pd

from bt_protection.fingerprint import run_fingerprint
from bt_protection.integration.feeds import add_feeds
from bt_protection.integration.recorder import EquityRecorder, OrderRecorder, TradeRecorder
from bt_protection.integration.replay import RecordedBar, RegimeReplay
from bt_protection.metrics import performance
from bt_protection.profile import Profile, load_profile
from bt_protection.regimes import regime_source
from bt_protection.strategies_registry import (
    StrategySource,
    convert_params,
    resolve_strategy,
    strategy_label,
    with_protection,
)

Frames = Mapping[str, pd.DataFrame]


@dataclass(frozen=True)
class RunSpec:
    """The description of one backtest job. `strategy`: a registered name,
    `package.module:Class`, `path/to/file.py:Class` or a `bt.Strategy` subclass (with or
    without `ProtectionMixin`); `params`: its params (text is converted to the type of each
    default). `profile`: a file, a shipped profile's name (`"balanced"`) or a mapping. `data`
    None: the shipped sample (`bt_protection/sample/`, also named `"sample"`), or the fetch
    cache `data/cache/` when `tickers` are given; `tickers` None: every CSV of the data folder;
    `start`/`end`: the first and last day of the data the backtest sees; `regime_data`: the
    ticker the regime indicator watches (None: the profile's `regime.data`, else the only
    ticker, else the composite of all, see `bt_protection.regimes`); `trade_start`: bars
    before it only warm up indicators; `regime_replay`: record the market state the
    protections follow (`RunResult.regime`), or replay a recorded one (the tune's timing test,
    `bt_protection.integration.replay`)."""

    strategy: StrategySource
    profile: str | os.PathLike[str] | Mapping[str, Any]  # what load_profile reads
    data: str | os.PathLike[str] | None = None
    tickers: tuple[str, ...] | None = None
    start: str | None = None
    end: str | None = None
    cash: float = 100_000.0
    commission: float = 0.001
    slippage: float = 0.0005
    runonce: bool = True
    preload: bool = True
    regime_data: str | None = None
    params: Mapping[str, Any] | tuple[tuple[str, Any], ...] = ()
    trade_start: str | None = None  # ISO date: bars before it only warm up indicators
    regime_replay: RegimeReplay | None = None

    def __post_init__(self) -> None:
        # sorted (key, value) pairs: the spec stays hashable and compares equal to itself
        pairs = self.params.items() if isinstance(self.params, Mapping) else self.params
        object.__setattr__(self, "params", tuple(sorted(pairs)))


@dataclass(frozen=True)
class RunPlan:
    """A RunSpec with everything loaded: the class the job executes (composed with
    `ProtectionMixin` when it had none), its converted params, the profile, the frames cut to
    the job's dates and the fingerprint (what summary.json and the audit header record)."""

    spec: RunSpec
    strategy: type
    params: dict[str, Any]
    profile: Profile
    frames: dict[str, pd.DataFrame]
    fingerprint: dict[str, Any]


@dataclass(frozen=True, eq=False)  # eq=False: DataFrames have no single truth value
class RunResult:
    """What a job gives back: its `error` (`Type: message`, None when it completed) or its
    recorded `orders`, `trades` and `equity` and its `summary` (summary.json); `audit`: the
    audit file's bytes when the job ran where the caller cannot read its files (Dask);
    `regime`: what a recording `regime_replay` recorded (each bar's datetime, regime code
    and volatility ratio)."""

    error: str | None
    orders: pd.DataFrame | None = None
    trades: pd.DataFrame | None = None
    equity: pd.DataFrame | None = None
    summary: dict[str, Any] | None = None
    audit: bytes | None = None
    regime: tuple[RecordedBar, ...] | None = None

    @classmethod
    def failed(cls, error: BaseException) -> RunResult:
        return cls(f"{type(error).__name__}: {error}")


def plan_job(spec: RunSpec, frames: Frames) -> RunPlan:
    """Resolve the job's strategy, params and profile and cut `frames` to its dates."""
    strategy = resolve_strategy(spec.strategy)
    params = convert_params(strategy, dict(spec.params))
    profile = load_profile(spec.profile)
    cut = {name: frame.loc[spec.start : spec.end] for name, frame in frames.items()}
    index = next(iter(cut.values())).index
    source = regime_source(spec.regime_data or profile.regime.data, sorted(cut))
    fingerprint = run_fingerprint(
        profile,
        strategy=strategy_label(spec.strategy),
        strategy_params={key: _plain(value) for key, value in sorted(params.items())},
        data=sorted(cut),
        start=index[0].date().isoformat(),
        end=index[-1].date().isoformat(),
        regime_data=source.label,
        cash=spec.cash,
        commission=spec.commission,
        slippage=spec.slippage,
    )
    return RunPlan(spec, with_protection(strategy), params, profile, cut, fingerprint)


def _plain(value: Any) -> Any:
    """A param value as JSON can hold it (others by their repr)."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)


def run_job(spec: RunSpec, frames: Frames, audit: Path | None = None) -> RunResult:
    """Execute `spec` on `frames`, writing its audit to `audit` (None: no audit). A strategy
    that raises gives a failed result (the audit keeps every decision before the failure);
    only what is not an Exception (KeyboardInterrupt) propagates."""
    try:
        plan = plan_job(spec, frames)
        strategy = backtest(plan, audit)
    except Exception as error:  # reported with the job; the caller's other jobs go on
        return RunResult.failed(error)
    analyzers = strategy.analyzers
    orders = analyzers.orders.to_frame()
    equity = analyzers.equity.to_frame()
    trades = analyzers.trades.to_frame()
    protection = strategy.protection.get_performance_metrics()
    summary = build_summary(plan, equity, orders, trades, protection)
    regime = strategy.protection_regime_record
    return RunResult(None, orders, trades, equity, summary, regime=regime)


def backtest(plan: RunPlan, audit: Path | None = None) -> Any:
    """Run the plan's backtest (with the recorder analyzers) and return the strategy instance."""
    return _cerebro(plan, audit).run()[0]


def gated(strategy: Any, trade_start: str) -> Any:
    """`strategy` that places no order on bars before `trade_start` (an ISO date): on those
    bars its `next` runs and its indicators warm up, but `buy` and `sell` (and with them
    `order_target_*` and `close`) return None, as backtrader does for an order of size 0."""
    first = pd.Timestamp(trade_start).date()

    def buy(self: Any, *args: Any, **kwargs: Any) -> Any:
        return strategy.buy(self, *args, **kwargs) if self.datetime.date(0) >= first else None

    def sell(self: Any, *args: Any, **kwargs: Any) -> Any:
        return strategy.sell(self, *args, **kwargs) if self.datetime.date(0) >= first else None

    namespace = {"buy": buy, "sell": sell, "__module__": strategy.__module__}
    return type(strategy)(strategy.__name__, (strategy,), namespace)


def _cerebro(plan: RunPlan, audit: Path | None) -> bt.Cerebro:
    spec = plan.spec
    cerebro = bt.Cerebro(runonce=spec.runonce, preload=spec.preload, stdstats=False)
    cerebro.broker.setcash(spec.cash)
    cerebro.broker.setcommission(commission=spec.commission)
    cerebro.broker.set_slippage_perc(spec.slippage, slip_open=True)
    cerebro.broker.set_coc(False)
    add_feeds(cerebro, plan.frames)
    strategy = plan.strategy if spec.trade_start is None else gated(plan.strategy, spec.trade_start)
    cerebro.addstrategy(
        strategy,
        protection=plan.profile,
        regime_data=spec.regime_data,
        audit_path=None if audit is None else str(audit),
        run_info=plan.fingerprint,
        regime_replay=spec.regime_replay,
        **plan.params,
    )
    cerebro.addanalyzer(OrderRecorder, _name="orders")
    cerebro.addanalyzer(EquityRecorder, _name="equity")
    cerebro.addanalyzer(TradeRecorder, _name="trades")
    return cerebro


def build_summary(
    plan: RunPlan,
    equity: pd.DataFrame,
    orders: pd.DataFrame,
    trades: pd.DataFrame,
    protection: dict[str, Any],
) -> dict[str, Any]:
    """summary.json: the run's inputs, performance and protection counts (docs/runs.md)."""
    label = orders["protection"].value_counts()
    partial = orders[orders["protection"] == "partial"]
    clipped = (partial["requested"] - partial["approved"]).abs() * partial["price"]
    denied = orders.loc[orders["protection"] == "denied", "blocking_systems"]
    blocks = Counter(s for text in denied for s in text.split(";") if s)
    fp = plan.fingerprint
    return {
        **{k: fp[k] for k in ("strategy", "profile", "profile_hash", "data", "start", "end")},
        "regime_data": fp["regime_data"],
        **{k: fp[k] for k in ("cash", "commission", "slippage")},
        **performance(equity, orders, trades),
        "final_value": float(equity["value"].iloc[-1]),
        "orders_attempted": len(orders),
        "orders_approved": int(label.get("approved", 0)),
        "orders_denied": int(label.get("denied", 0)),
        "orders_partial": int(label.get("partial", 0)),
        "value_clipped": float(clipped.sum()),
        "orders_exempt": int(label.get("exempt", 0)),
        "risk_exits": int(label.get("risk_exit", 0)),
        "denials_by_system": {key: blocks[key] for key in plan.profile.enabled_systems},
        "overrides_applied": int((orders["overridden_systems"] != "").sum()),
        "decisions": protection["decisions_processed"],
        "errors": protection["errors"],
        "fingerprint": fp,
    }
