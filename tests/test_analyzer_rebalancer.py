"""ProtectionAnalyzer and ProtectionAwareRebalancer in real backtrader runs on the sample data."""

from __future__ import annotations

import pickle
from functools import cache
from typing import Any

import backtrader as bt
import pandas as pd
import pytest

from bt_protection.data import load_universe
from bt_protection.errors import UserError
from bt_protection.integration.analyzer import FRAME_COLUMNS, ProtectionAnalyzer
from bt_protection.integration.feeds import add_feeds
from bt_protection.integration.mixin import ProtectionMixin
from bt_protection.integration.rebalancer import ProtectionAwareRebalancer, RebalanceResult
from bt_protection.shipped import PROFILES, SAMPLE_DATA
from bt_protection.strategies.sma_crossover import SmaCrossover

HOLD = {"name": "hold", "protections": {"holding_period": {"enabled": True, "min_hold": "20 bars"}}}
# Frequent regime changes (short indicator periods) with windows lifting the holding period,
# so that some denials are overridden.
OVERRIDE = {
    "name": "override",
    "protections": {
        "holding_period": {"enabled": True, "min_hold": "20 bars"},
        "whipsaw_protection": {"enabled": True, "max_cycles": 2, "window": "60 days"},
        "regime_override": {
            "enabled": True,
            "window": "10 bars",
            "cooldown": "1 bars",
            "can_override": {s: ["holding_period"] for s in ("low", "medium", "high", "critical")},
        },
    },
    "regime": {"fast_period": 10, "slow_period": 30, "vol_period": 10},
}


@cache
def frames(tickers: tuple[str, ...], end: str) -> dict[str, pd.DataFrame]:
    return load_universe(SAMPLE_DATA, list(tickers), end=end)


def cerebro(tickers: tuple[str, ...], end: str) -> bt.Cerebro:
    engine = bt.Cerebro(stdstats=False)
    add_feeds(engine, frames(tickers, end))
    engine.broker.setcash(100_000.0)
    return engine


# --- analyzer -------------------------------------------------------------------------------


def crossover(profile: Any) -> Any:
    """SmaCrossover on three sample stocks, 2013-2014, with the analyzer attached."""
    engine = cerebro(("AAPL", "AMZN", "NVDA"), "2014-12-31")
    engine.addstrategy(SmaCrossover, protection=profile)
    engine.addanalyzer(ProtectionAnalyzer, _name="protection")
    return engine.run()[0]


@pytest.mark.parametrize("profile", ["balanced", "shadow", "override"])
def test_analyzer_counts_equal_the_orchestrator_metrics(profile: str) -> None:
    source = OVERRIDE if profile == "override" else str(PROFILES / f"{profile}.yaml")
    strategy = crossover(source)
    analysis = strategy.analyzers.protection.get_analysis()
    metrics = strategy.protection.get_performance_metrics()
    counts = ("decisions_processed", "approved", "denied", "exempt", "overrides_applied", "errors")
    for key in counts:
        assert analysis[key] == metrics[key], key
    by_system = analysis["by_system"]
    assert set(by_system) == set(metrics["blocks_by_system"])
    for system, counts_of in by_system.items():
        assert counts_of["denied"] == metrics["blocks_by_system"][system], system
        assert counts_of["would_block"] == metrics["would_block_by_system"][system], system
    by_action = analysis["by_action"].values()
    assert sum(a["requested"] for a in by_action) == metrics["decisions_processed"]
    assert sum(a["denied"] for a in by_action) == metrics["denied"]
    overridden = sum(s["overridden"] for s in by_system.values())
    if profile == "shadow":
        assert metrics["denied"] == 0 and sum(s["would_block"] for s in by_system.values()) > 0
    elif profile == "override":
        assert overridden == metrics["overrides_applied"] > 0  # one overridable system
    else:
        assert sum(s["denied"] for s in by_system.values()) >= metrics["denied"] > 0


def test_analyzer_frame_has_one_row_per_decision() -> None:
    strategy = crossover(str(PROFILES / "balanced.yaml"))
    analyzer = strategy.analyzers.protection
    frame = analyzer.to_frame()
    decisions = analyzer.decisions
    assert list(frame.columns) == list(FRAME_COLUMNS)
    assert isinstance(frame.index, pd.DatetimeIndex) and frame.index.name == "date"
    metrics = strategy.protection.get_performance_metrics()
    assert len(frame) == len(decisions) == metrics["decisions_processed"]
    assert list(frame.index) == [pd.Timestamp(d.date) for d in decisions]
    assert list(frame["asset"]) == [d.asset for d in decisions]
    assert list(frame["approved"]) == [d.approved for d in decisions]
    assert list(frame["blocking_systems"]) == [";".join(d.blocking_systems) for d in decisions]
    assert list(frame["bar"]) == [d.bar for d in decisions]
    assert list(frame["attempt"]) == list(range(1, len(decisions) + 1))
    assert (~frame["approved"]).sum() > 0
    again = crossover(str(PROFILES / "balanced.yaml")).analyzers.protection.to_frame()
    pd.testing.assert_frame_equal(frame, again)


def test_analyzer_results_pickle_for_multiprocess_optimisation() -> None:
    engine = cerebro(("AAPL", "AMZN"), "2014-06-30")
    engine.optstrategy(SmaCrossover, protection=[HOLD])
    engine.addanalyzer(ProtectionAnalyzer, _name="protection")
    (result,) = engine.run(maxcpus=1)[0]  # optreturn strips the strategy, as for maxcpus > 1
    copy = pickle.loads(pickle.dumps(result))
    assert copy.analyzers.protection.get_analysis() == result.analyzers.protection.get_analysis()


def test_analyzer_needs_a_protection_strategy() -> None:
    engine = cerebro(("AAPL",), "2013-06-30")
    engine.addstrategy(bt.Strategy)
    engine.addanalyzer(ProtectionAnalyzer)
    with pytest.raises(UserError, match="ProtectionMixin"):
        engine.run()


# --- rebalancer -----------------------------------------------------------------------------

TICKERS = ("AAPL", "AMZN", "GOOG", "NVDA")


class Rebalancing(ProtectionMixin, bt.Strategy):
    """Calls `rebalance(*plan[bar])` at the planned bars; records orders, positions, results."""

    params = (("plan", None), ("buffer", 0.0))

    def __init__(self) -> None:
        self.rebalancer = ProtectionAwareRebalancer(self, buffer=self.p.buffer)
        self.results: dict[int, RebalanceResult] = {}
        self.held: list[dict[str, float]] = []
        self.statuses: list[tuple[int, str, str]] = []

    def notify_order(self, order: Any) -> None:
        self.statuses.append((order.ref, order.data._name, order.getstatusname()))

    def next(self) -> None:
        bar = len(self) - 1
        self.held.append({d._name: self.getposition(d).size for d in self.datas})
        if bar in self.p.plan:
            targets, scores = self.p.plan[bar]
            self.results[bar] = self.rebalancer.rebalance(targets, scores=scores)


def rebalancing(plan: dict[int, tuple[dict, dict | None]], profile: Any, **params: Any) -> Any:
    engine = cerebro(TICKERS, "2013-04-30")
    engine.addstrategy(Rebalancing, protection=profile, plan=plan, **params)
    return engine.run()[0]


def test_sells_are_sent_before_buys() -> None:
    plan = {
        0: ({"AAPL": 0.3, "AMZN": 0.3, "GOOG": 0.3}, None),
        5: ({"AAPL": 0.1, "GOOG": 0.3, "NVDA": 0.5}, None),  # AMZN held, absent: goes to 0
    }
    strategy = rebalancing(plan, {"name": "off"})
    result = strategy.results[5]
    by_ref = sorted(result.orders.items(), key=lambda item: item[1].ref)
    sells = [a for a, o in by_ref if o.issell()]
    buys = [a for a, o in by_ref if o.isbuy()]
    assert [a for a, _ in by_ref] == sells + buys
    assert sells[:2] == ["AAPL", "AMZN"] and sells == sorted(sells)
    assert "NVDA" in buys and buys == sorted(buys)
    assert result.decisions["AMZN"].action.value == "close"
    assert set(result.approved) | set(result.unchanged) == {"AAPL", "AMZN", "GOOG", "NVDA"}
    assert strategy.held[6]["AMZN"] == 0 and strategy.held[6]["NVDA"] > 0
    assert not any(status == "Margin" for *_, status in strategy.statuses)


def test_a_denied_asset_stays_where_it_is_and_buys_make_room() -> None:
    plan = {
        0: ({"AAPL": 0.3, "AMZN": 0.3}, None),
        5: ({"AMZN": 0.3, "NVDA": 0.6}, None),  # AAPL close denied: held 4 of 20 bars
    }
    strategy = rebalancing(plan, HOLD)
    result = strategy.results[5]
    assert result.denied == {"AAPL": 0.0}
    assert result.decisions["AAPL"].blocking_systems == ("holding_period",)
    assert result.orders["AAPL"].status == bt.Order.Rejected
    assert strategy.held[6]["AAPL"] == strategy.held[5]["AAPL"] > 0
    # AAPL keeps about 0.3, so NVDA's 0.6 is cut to about 0.3: nothing fails for lack of cash
    assert result.approved["NVDA"] == pytest.approx(0.3, abs=0.03)
    assert strategy.held[6]["NVDA"] > 0
    assert not any(status == "Margin" for *_, status in strategy.statuses)
    stats = strategy.rebalancer.stats
    assert stats["rebalances"] == 2
    assert stats["orders"] == stats["approved"] + stats["denied"]
    assert stats["denied"] == 1
    assert stats["approval_rate"] == pytest.approx(stats["approved"] / stats["orders"])


def test_scores_are_reported_at_the_rebalance_and_travel_with_orders() -> None:
    grace = {
        "name": "grace",
        "protections": {
            "grace_period": {
                "enabled": True,
                "trigger": "score",
                "threshold": 0.0,
                "duration": "5 bars",
            }
        },
    }
    plan = {
        0: ({"AAPL": 0.4, "AMZN": 0.4}, {"AAPL": 1.0, "AMZN": 1.0}),
        3: ({"AMZN": 0.4}, {"AAPL": -1.0, "AMZN": 1.0}),  # AAPL: grace starts at bar 3
        9: ({"AMZN": 0.4}, {"AAPL": -1.0, "AMZN": 1.0}),  # 6 bars later: grace is over
    }
    strategy = rebalancing(plan, grace)
    first, second = strategy.results[3], strategy.results[9]
    assert first.denied == {"AAPL": 0.0} and "grace" in first.decisions["AAPL"].reason
    assert second.approved["AAPL"] == 0.0
    assert strategy.held[10]["AAPL"] == 0


def test_buffer_skips_small_changes() -> None:
    targets = {"AAPL": 0.45, "AMZN": 0.45}
    plan = {0: (targets, None), 2: (targets, None)}
    strategy = rebalancing(plan, {"name": "off"}, buffer=0.05)
    assert set(strategy.results[0].approved) == {"AAPL", "AMZN"}
    assert strategy.results[2].unchanged == targets and not strategy.results[2].orders


def test_rebalancer_rejects_unknown_assets_and_other_strategies() -> None:
    with pytest.raises(UserError, match="MSFT"):
        rebalancing({0: ({"MSFT": 0.5}, None)}, {"name": "off"})
    with pytest.raises(UserError, match="ProtectionMixin"):
        ProtectionAwareRebalancer(bt.Strategy)  # type: ignore[arg-type]
