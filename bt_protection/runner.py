"""Execute one backtest run (a strategy under a profile) into a run folder.

Every input is checked before anything is written. The run writes into `<out>.partial/`,
which becomes `<out>` only once every file is complete; a run whose strategy raises is kept
as `<out>.failed/` (profile, audit up to the failure, status.json) and raises `RunFailed`.
The folder format is described in docs/runs.md.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import backtrader as bt
import pandas as pd
import yaml

from bt_protection.data import DEFAULT_CACHE_DIR, load_universe, parse_date
from bt_protection.errors import UserError
from bt_protection.fingerprint import run_fingerprint
from bt_protection.integration.feeds import add_feeds
from bt_protection.integration.recorder import EquityRecorder, OrderRecorder, TradeRecorder
from bt_protection.metrics import performance
from bt_protection.profile import Profile, load_profile
from bt_protection.regimes import regime_source
from bt_protection.shipped import SAMPLE_DATA, price_folder
from bt_protection.strategies_registry import (
    StrategySource,
    convert_params,
    resolve_strategy,
    strategy_label,
    strategy_name,
    with_protection,
)

CSV_FLOAT = "%.10g"
JSON_DIGITS = 10


class RunFailed(UserError):
    """The strategy raised during the backtest; the run folder is kept as `<out>.failed/`."""


@dataclass(frozen=True)
class RunSpec:
    """The inputs of one run. `strategy`: a registered name, `package.module:Class`,
    `path/to/file.py:Class` or a `bt.Strategy` subclass (with or without `ProtectionMixin`);
    `params`: its params (text is converted to the type of each default).
    `profile`: a file, a shipped profile's name (`"balanced"`) or a mapping. `data` None: the
    shipped sample (`bt_protection/sample/`, also named `"sample"`), or the fetch cache
    `data/cache/` when `tickers` are given; `tickers` None: every CSV of the data folder;
    `regime_data`: the ticker the regime indicator watches (None: the profile's `regime.data`,
    else the only ticker, else the composite of all, see `bt_protection.regimes`)."""

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

    def __post_init__(self) -> None:
        # sorted (key, value) pairs: the spec stays hashable and compares equal to itself
        pairs = self.params.items() if isinstance(self.params, Mapping) else self.params
        object.__setattr__(self, "params", tuple(sorted(pairs)))


@dataclass(frozen=True)
class RunPlan:
    """A checked RunSpec: everything `execute_run` needs, loaded. `strategy` is the class the
    run executes (composed with `ProtectionMixin` when it had no mixin)."""

    spec: RunSpec
    strategy: type
    params: dict[str, Any]
    profile: Profile
    frames: dict[str, pd.DataFrame]
    fingerprint: dict[str, Any]


def data_folder(spec: RunSpec) -> Path:
    """The folder the run reads: `data` (`sample` names the shipped sample unless a folder of
    that name exists), else the fetch cache for `tickers`, else the shipped sample."""
    if spec.data is not None:
        return price_folder(spec.data)
    if spec.tickers:
        if not DEFAULT_CACHE_DIR.is_dir():
            raise UserError(
                f"`tickers` without `data` reads the fetch cache {DEFAULT_CACHE_DIR}/, which "
                "does not exist; fetch the tickers first (bt-protection fetch, or "
                "bt_protection.data.fetch) or pass `data`."
            )
        return DEFAULT_CACHE_DIR
    return SAMPLE_DATA


def default_out(spec: RunSpec) -> Path:
    """`runs/<strategy>-<profile name>` (a strategy given as a class or spec: its class name)."""
    return Path("runs") / f"{strategy_name(spec.strategy)}-{load_profile(spec.profile).name}"


def _check_broker(spec: RunSpec) -> None:
    for name, value, low_ok in (
        ("cash", spec.cash, False),
        ("commission", spec.commission, True),
        ("slippage", spec.slippage, True),
    ):
        bound = "0 or more" if low_ok else "above 0"
        if not math.isfinite(value) or value < 0 or (value == 0 and not low_ok):
            raise UserError(f"`{name}` must be {bound}, not {value:g}.")


def _check_out(out: Path) -> None:
    """A run never overwrites anything but an earlier run folder."""
    if out.exists() and not (out.is_dir() and (out / "status.json").is_file()):
        raise UserError(
            f"`out` {out} exists and is not a run folder (no status.json); choose another "
            "folder or remove it."
        )


def plan_run(spec: RunSpec, out: Path) -> RunPlan:
    """Check every input and load the data; raises UserError with one sentence, writes nothing."""
    strategy = resolve_strategy(spec.strategy)
    params = convert_params(strategy, dict(spec.params))
    profile = load_profile(spec.profile)
    _check_broker(spec)
    start = parse_date(spec.start, "`start`") if spec.start else None
    end = parse_date(spec.end, "`end`") if spec.end else None
    if start is not None and end is not None and end < start:
        raise UserError(f"`end` {spec.end} is before `start` {spec.start}; end must come last.")
    _check_out(out)
    frames = load_universe(data_folder(spec), spec.tickers, start, end)
    index = next(iter(frames.values())).index
    source = regime_source(spec.regime_data or profile.regime.data, sorted(frames))
    fingerprint = run_fingerprint(
        profile,
        strategy=strategy_label(spec.strategy),
        strategy_params={key: _plain(value) for key, value in sorted(params.items())},
        data=sorted(frames),
        start=index[0].date().isoformat(),
        end=index[-1].date().isoformat(),
        regime_data=source.label,
        cash=spec.cash,
        commission=spec.commission,
        slippage=spec.slippage,
    )
    return RunPlan(spec, with_protection(strategy), params, profile, frames, fingerprint)


def _plain(value: Any) -> Any:
    """A param value as JSON can hold it (others by their repr)."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)


def execute_run(spec: RunSpec, out_dir: str | Path) -> Path:
    """Run `spec` into the run folder `out_dir` and return its path.

    Raises UserError (nothing written) for bad input, RunFailed if the strategy raises.
    """
    out = Path(out_dir)
    plan = plan_run(spec, out)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    (partial / "profile.yaml").write_text(
        yaml.safe_dump(plan.profile.to_dict(), sort_keys=False), encoding="utf-8"
    )
    try:
        strategy = backtest(plan, partial / "audit.jsonl")
    except BaseException as error:
        failed = keep_failed(partial, out, error)
        if not isinstance(error, Exception):
            raise
        raise RunFailed(
            f"run {out} failed: {type(error).__name__}: {error} (the audit up to the failure "
            f"is in {failed / 'audit.jsonl'})."
        ) from error
    _write_results(plan, strategy, partial)
    install_folder(partial, out)
    return out


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
        **plan.params,
    )
    cerebro.addanalyzer(OrderRecorder, _name="orders")
    cerebro.addanalyzer(EquityRecorder, _name="equity")
    cerebro.addanalyzer(TradeRecorder, _name="trades")
    return cerebro


def _write_results(plan: RunPlan, strategy: Any, folder: Path) -> None:
    analyzers = strategy.analyzers
    orders = analyzers.orders.to_frame()
    equity = analyzers.equity.to_frame()
    trades = analyzers.trades.to_frame()
    csv: dict[str, Any] = {"float_format": CSV_FLOAT, "lineterminator": "\n"}
    orders.to_csv(folder / "orders.csv", index=False, **csv)
    trades.to_csv(folder / "trades.csv", index=False, **csv)
    equity.to_csv(folder / "equity.csv", date_format="%Y-%m-%d", **csv)
    summary = build_summary(
        plan, equity, orders, trades, strategy.protection.get_performance_metrics()
    )
    write_json(folder / "summary.json", summary)
    write_json(folder / "status.json", {"status": "complete"})


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


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.{JSON_DIGITS}g}") if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def write_json(path: Path, data: dict[str, Any]) -> None:
    """`data` as sorted, indented JSON (floats to 10 significant digits, NaN as null)."""
    text = json.dumps(_rounded(data), sort_keys=True, indent=2, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")


def keep_failed(partial: Path, out: Path, error: BaseException) -> Path:
    """Rename the partial folder to `<out>.failed/` with a status.json naming the error."""
    failed = out.with_name(out.name + ".failed")
    write_json(
        partial / "status.json", {"status": "failed", "error": f"{type(error).__name__}: {error}"}
    )
    shutil.rmtree(failed, ignore_errors=True)
    partial.rename(failed)
    return failed


def install_folder(partial: Path, out: Path) -> None:
    """Put a complete folder in place of `out`; an earlier `out` goes only now."""
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    partial.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(out.with_name(out.name + ".failed"), ignore_errors=True)
