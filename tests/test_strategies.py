"""The example strategies under every shipped profile, on the full sample data (2013-2023).

The protection invariants are checked from the outside: from the orders the strategy was
notified of (fills, and the decision each order carries), not from the orchestrator's state.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import backtrader as bt
import pandas as pd
import pytest

from bt_protection.data import load_universe
from bt_protection.errors import UserError
from bt_protection.integration.feeds import add_feeds
from bt_protection.models import Action, ProtectionDecision
from bt_protection.profile import Mode, Profile, load_profile
from bt_protection.shipped import PROFILES as CONFIGS
from bt_protection.shipped import SAMPLE_DATA
from bt_protection.strategies import MomentumRotation, SmaCrossover
from bt_protection.strategies.momentum_rotation import selection_scores
from bt_protection.strategies_registry import registered_strategies, resolve_strategy

PROFILES = sorted(p.stem for p in CONFIGS.glob("*.yaml"))


@cache
def universe(folder: Path = SAMPLE_DATA, end: str | None = None) -> dict[str, pd.DataFrame]:
    return load_universe(folder, end=end)


@dataclass(frozen=True)
class Fill:
    """A completed order as `notify_order` saw it."""

    bar: int
    date: pd.Timestamp
    asset: str
    size: float
    decision: ProtectionDecision


def observed(strategy: type) -> type:
    """`strategy` also recording its decisions and notified orders (fills, attempts)."""

    class Observed(strategy):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.fills: list[Fill] = []
            self.decisions: list[ProtectionDecision] = []
            self.attempts: set[int] = set()
            self.margin = 0

        def notify_protection(self, decision: ProtectionDecision) -> None:
            self.decisions.append(decision)

        def notify_order(self, order: Any) -> None:
            self.attempts.add(order.info.protection_attempt)
            self.margin += order.status == bt.Order.Margin
            if order.status == bt.Order.Completed:
                when = pd.Timestamp(bt.num2date(order.executed.dt))
                decision = order.info.protection
                fill = Fill(len(self) - 1, when, order.data._name, order.executed.size, decision)
                self.fills.append(fill)

    return Observed


def run(name: str, profile: Any, frames: dict[str, pd.DataFrame], **cerebro: Any) -> Any:
    engine = bt.Cerebro(stdstats=False, **cerebro)
    add_feeds(engine, frames)
    engine.broker.setcash(100_000.0)
    engine.addstrategy(observed(resolve_strategy(name)), protection=profile)
    return engine.run()[0]


def reductions(fills: list[Fill]) -> list[tuple[Fill, Action, tuple[int, pd.Timestamp]]]:
    """Fills that shrink or flip a position: (fill, action, (bar, date) of the opening fill)."""
    position: dict[str, float] = defaultdict(float)
    opened: dict[str, tuple[int, pd.Timestamp]] = {}
    out = []
    for fill in fills:
        before = position[fill.asset]
        after = position[fill.asset] = before + fill.size
        flips = before * after < 0
        if after == 0:
            out.append((fill, Action.CLOSE, opened.pop(fill.asset)))
        elif flips:
            out.append((fill, Action.REVERSE, opened[fill.asset]))
        elif abs(after) < abs(before):
            out.append((fill, Action.DECREASE, opened[fill.asset]))
        if after and (before == 0 or flips):
            opened[fill.asset] = (fill.bar, fill.date)
    return out


def check_holding_period(strategy: Any, profile: Profile) -> int:
    """No guarded exit before `min_hold` (the value of the regime at the deciding bar, when the
    profile gives it by regime) since the opening fill, unless exempt, overridden or a risk exit
    (exit safety lifted it)."""
    config = profile.protections["holding_period"]
    if not config.enabled or profile.mode is Mode.SHADOW:
        return 0
    checked = 0
    for fill, action, (bar, date) in reductions(strategy.fills):
        decision = fill.decision
        if action not in config.protect or decision.exempt:
            continue
        if "holding_period" in (*decision.overridden_systems, *decision.lifted_systems):
            continue
        min_hold = config.resolve(decision.regime, None)[0].min_hold  # by regime: that bar's
        held = decision.bar - bar if min_hold.uses_bars else (decision.date - date).days
        assert held >= min_hold.amount, (fill, held)
        assert fill.bar > decision.bar  # the order executes after the bar that decided it
        checked += 1
    return checked


@pytest.mark.parametrize("profile_name", PROFILES)
@pytest.mark.parametrize("name", sorted(registered_strategies()))
def test_strategy_runs_with_every_shipped_profile(name: str, profile_name: str) -> None:
    path = CONFIGS / f"{profile_name}.yaml"
    frames = universe()
    strategy = run(name, str(path), frames)
    metrics = strategy.protection.get_performance_metrics()
    assert len(strategy) == len(next(iter(frames.values())))  # ran to the last bar
    assert strategy.fills and metrics["decisions_processed"] > 0
    # one decision per attempt; notifications queued on the last bar are never delivered
    last = {i for i, d in enumerate(strategy.decisions, 1) if d.bar == len(strategy) - 1}
    assert len(strategy.decisions) == metrics["decisions_processed"]
    assert strategy.attempts | last == set(range(1, len(strategy.decisions) + 1))
    profile = load_profile(path)
    if profile_name in ("off", "shadow"):
        assert metrics["denied"] == 0
    if profile_name in ("balanced", "conservative") and name == "sma_crossover":
        assert metrics["denied"] > 0
    checked = check_holding_period(strategy, profile)
    assert checked > 0 or profile_name in ("off", "shadow")
    if name == "momentum_rotation":
        assert strategy.margin == 0  # denied sells never leave buys without cash


def with_core_asset(profile_name: str, asset: str) -> Profile:
    """A shipped profile with `asset` listed as a static core asset."""
    plain = load_profile(CONFIGS / f"{profile_name}.yaml").to_dict()
    core = plain["protections"]["core_asset_immunity"]
    core.update(enabled=True, assets=[asset])
    return load_profile({**plain, "name": f"{profile_name}+{asset}"})


@pytest.mark.parametrize("name", sorted(registered_strategies()))
def test_core_asset_is_never_reduced(name: str) -> None:
    profile = with_core_asset("balanced", "NVDA")
    strategy = run(name, profile, universe())
    assert any(f.asset == "NVDA" and f.size > 0 for f in strategy.fills)
    assert not [f for f, *_ in reductions(strategy.fills) if f.asset == "NVDA"]
    assert strategy.protection.get_performance_metrics()["blocks_by_system"]["core_asset_immunity"]
    assert check_holding_period(strategy, profile) > 0


@pytest.mark.parametrize("name", sorted(registered_strategies()))
def test_runonce_and_preload_do_not_change_a_run(name: str) -> None:
    frames = universe(end="2015-12-31")
    runs = [
        run(name, str(CONFIGS / "balanced.yaml"), frames, runonce=once, preload=pre)
        for once in (True, False)
        for pre in (True, False)
    ]

    def outcome(strategy: Any) -> tuple[Any, ...]:
        decisions = [(d.bar, d.asset, d.action, d.approved, d.reason) for d in strategy.decisions]
        fills = [(f.bar, f.asset, f.size) for f in strategy.fills]
        return decisions, fills, strategy.broker.getvalue()

    first = outcome(runs[0])
    assert first[0] and first[1]
    assert all(outcome(other) == first for other in runs[1:])


def test_momentum_rotation_on_shared_etfs(shared_data: Path) -> None:
    """Ten years of an MIT-licensed ETF universe: runs, and the holding invariant holds."""
    frames = universe(shared_data / "etf17_quantfiction")
    profile = load_profile(CONFIGS / "conservative.yaml")
    strategy = run("momentum_rotation", profile, frames)
    assert len(strategy) == len(next(iter(frames.values())))
    assert strategy.margin == 0
    assert check_holding_period(strategy, profile) > 0


def test_bundled_strategies_are_found_through_their_entry_points() -> None:
    assert registered_strategies() == {
        "momentum_rotation": "bt_protection.strategies.momentum_rotation:MomentumRotation",
        "sma_crossover": "bt_protection.strategies.sma_crossover:SmaCrossover",
    }
    assert resolve_strategy("sma_crossover") is SmaCrossover
    assert resolve_strategy("momentum_rotation") is MomentumRotation
    with pytest.raises(UserError, match="valid names: momentum_rotation, sma_crossover "):
        resolve_strategy("buy_and_hold")


def test_selection_scores_split_at_the_top_k() -> None:
    momentum = {"A": 0.4, "B": 0.1, "C": -0.2, "D": 0.3}
    scores = selection_scores(momentum, 2)
    assert sorted(a for a, s in scores.items() if s > 0) == ["A", "D"]
    assert scores["D"] - scores["B"] == pytest.approx(0.2)  # ranks and gaps are kept
    assert all(s > 0 for s in selection_scores(momentum, 4).values())
