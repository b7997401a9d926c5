"""Partial approvals and the drawdown guard in real backtrader runs on the sample data.

Everything is checked from the broker's side: the executed size of each order (what
`notify_order` and the broker's positions show), the broker's value each bar, and the lots
rebuilt from executed buys by the test itself, never from the plugin's counters alone.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import backtrader as bt
import pandas as pd
import pytest

from bt_protection.data import load_universe
from bt_protection.integration.analyzer import ProtectionAnalyzer
from bt_protection.integration.feeds import add_feeds
from bt_protection.integration.mixin import ProtectionMixin
from bt_protection.integration.rebalancer import ProtectionAwareRebalancer
from bt_protection.models import ProtectionDecision
from bt_protection.runner import RunSpec, execute_run
from bt_protection.shipped import PROFILES, SAMPLE_DATA

SIX = ("AAPL", "AMZN", "GOOG", "META", "NFLX", "NVDA")
MIN_HOLD = 10


@cache
def frames(tickers: tuple[str, ...], start: str, end: str) -> dict[str, pd.DataFrame]:
    return load_universe(SAMPLE_DATA, list(tickers), start=start, end=end)


class Recording(ProtectionMixin, bt.Strategy):
    """Runs `script[bar]` in `next`; records decisions, executed orders and the broker's book."""

    params = (("script", None),)

    def __init__(self) -> None:
        self.decisions: list[ProtectionDecision] = []
        self.executed: list[tuple[int, str, float, ProtectionDecision]] = []  # bar, asset, size
        self.values: list[float] = []
        self.book: list[dict[str, float]] = []

    def notify_protection(self, decision: ProtectionDecision) -> None:
        self.decisions.append(decision)

    def notify_order(self, order: Any) -> None:
        if order.status == order.Completed:
            bar = len(self) - 1  # notified on the bar it executed at
            self.executed.append(
                (bar, order.data._name, order.executed.size, order.info.protection)
            )

    def next(self) -> None:
        self.values.append(self.broker.getvalue())
        self.book.append({d._name: self.getposition(d).size for d in self.datas})
        for step in (self.p.script or {}).get(len(self) - 1, ()):
            step(self)


def run(script: dict[int, list[Any]], protections: dict[str, Any], **data: Any) -> Recording:
    tickers = data.get("tickers", ("AAPL",))
    engine = bt.Cerebro(stdstats=False)
    add_feeds(
        engine, frames(tickers, data.get("start", "2013-01-02"), data.get("end", "2013-04-30"))
    )
    engine.broker.setcash(1_000_000.0)
    profile = {"name": "t", "protections": protections}
    engine.addstrategy(Recording, protection=profile, script=script)
    return engine.run()[0]


def lots_profile(partial: bool) -> dict[str, Any]:
    block = {
        "min_hold": f"{MIN_HOLD} bars",
        "protect": ["close", "decrease", "reverse"],
        "lots": "fifo",
        "partial": partial,
    }
    return {"holding_period": block}


def buy(size: int, asset: str = "AAPL") -> Any:
    return lambda s: s.buy(data=asset, size=size)


def sell(size: int, asset: str = "AAPL") -> Any:
    return lambda s: s.sell(data=asset, size=size)


def close(asset: str = "AAPL") -> Any:
    return lambda s: s.close(data=asset)


# bar 0 buys 100 (filled at bar 1), bar 5 buys 50 (filled at bar 6); the rest tries to sell
LOTS_SCRIPT = {
    0: [buy(100)],
    5: [buy(50)],
    8: [close()],  # nothing held 10 bars yet
    12: [close()],  # the first lot is ripe (1 + 10 <= 12), the second is not
    14: [sell(30)],  # the second lot ripens at 16
    16: [close()],
}


def ripe_units(strategy: Recording, asset: str, bar: int) -> float:
    """Units held at least MIN_HOLD bars at `bar`, rebuilt FIFO from the broker's executions."""
    lots: list[list[float]] = []
    for filled, name, size, _ in strategy.executed:
        if name != asset or filled >= bar:
            continue
        if size > 0:
            lots.append([size, filled])
        else:
            left = -size
            while left > 0:
                taken = min(left, lots[0][0])
                lots[0][0] -= taken
                left -= taken
                if not lots[0][0]:
                    lots.pop(0)
    return sum(size for size, filled in lots if bar - filled >= MIN_HOLD)


def test_partial_sells_exactly_the_ripe_lots():
    s = run(LOTS_SCRIPT, lots_profile(partial=True))
    sells = [(bar, size, d) for bar, _, size, d in s.executed if size < 0]
    # the close of bar 8 was denied; bar 12 sold the first lot only; 14's sell of 30 waited
    # for nothing (denied: no ripe units left); bar 16 sold the second lot
    assert [(bar, size) for bar, size, _ in sells] == [(13, -100.0), (17, -50.0)]
    first = sells[0][2]
    assert first.partial and first.approved_size == -100 and first.target_size == 0
    assert "holding_period clips it" in first.reason
    by_bar = {d.bar: d for d in s.decisions}
    assert not by_bar[8].approved and not by_bar[14].approved
    for _, size, decision in sells:  # the broker never sold more than the ripe lots
        assert size == decision.approved_size
        assert -size <= ripe_units(s, "AAPL", decision.bar)
    assert s.book[-1]["AAPL"] == 0


def test_without_partial_a_sale_past_the_ripe_lots_is_denied_whole():
    s = run(LOTS_SCRIPT, lots_profile(partial=False))
    sells = [(bar, size) for bar, _, size, _ in s.executed if size < 0]
    # bar 12's close of 150 (100 ripe) is denied whole; bar 14's sale of 30 is within the
    # ripe lots and passes; at bar 16 every lot is ripe
    assert sells == [(15, -30.0), (17, -120.0)]
    assert not any(d.partial for d in s.decisions)
    assert not next(d for d in s.decisions if d.bar == 12).approved


def test_a_core_asset_is_never_sold_below_its_floor():
    core = {"core_asset_immunity": {"assets": ["AAPL"], "keep": 0.5, "partial": True}}
    script = {
        0: [buy(100)],
        3: [buy(100)],
        6: [close()],
        9: [sell(30)],
        12: [buy(40)],
        15: [close()],
    }
    s = run(script, core)
    sells = [(bar, size) for bar, _, size, _ in s.executed if size < 0]
    # peak 200: the close sells down to 100; the sale of 30 is denied at the floor; after
    # buying 40 (peak 200 still) the close sells those 40 only
    assert sells == [(7, -100.0), (16, -40.0)]
    held = [p["AAPL"] for p in s.book]
    assert min(held[5:]) == 100  # from the second fill on, never below the floor
    denied = next(d for d in s.decisions if d.bar == 9)
    assert not denied.approved and "at the floor" in denied.reason


def test_the_drawdown_guard_goes_reduce_only_in_the_2020_crash_and_resumes():
    guard = {
        "drawdown_guard": {"max_drawdown": 0.2, "resume": {"after": "60 bars", "recover": 0.5}}
    }
    # bar 0: invest about 95% equally; then every bar try to add one share of each stock,
    # and every 10 bars trim one share (a decrease, which the guard must let through)
    invest = [lambda s, a=a: s.order_target_percent(data=a, target=0.158) for a in SIX]
    add = [buy(1, a) for a in SIX]
    trim = [sell(1, a) for a in SIX]
    script = {0: invest, **{b: add + (trim if b % 10 == 0 else []) for b in range(2, 140)}}
    s = run(script, guard, tickers=SIX, start="2019-11-01", end="2020-08-31")
    values = pd.Series(s.values)
    drawdown = 1 - values / values.cummax()
    denied = sorted({d.bar for d in s.decisions if "drawdown_guard" in d.blocking_systems})
    assert denied, "the guard never tripped"
    tripped = denied[0]
    # it tripped on the first bar whose value (reported before next) was 20% under the peak
    assert drawdown[tripped] >= 0.2 - 1e-9 and (drawdown[:tripped] < 0.2).all()
    assert (
        s.decisions[0].date
        < pd.Timestamp("2020-03-01")
        < pd.Timestamp(next(d.date for d in s.decisions if d.bar == tripped))
        < pd.Timestamp("2020-03-31")
    )
    resumed = denied[-1] + 1
    assert denied == list(range(tripped, resumed))  # every add denied in between, none after
    assert resumed - tripped < 60  # by recovery, before `after`
    trough = values[tripped : resumed + 1].min()
    peak = values[:tripped].max()
    assert values[resumed] >= trough + 0.5 * (peak - trough)
    buys = {bar for bar, _, size, _ in s.executed if size > 0}
    sells = {bar for bar, _, size, _ in s.executed if size < 0}
    assert not buys & set(range(tripped + 1, resumed + 1))  # no buy executed while reduce-only
    assert sells & set(range(tripped + 1, resumed + 1))  # trims went through
    assert buys & set(range(resumed + 1, resumed + 5))  # buying again once resumed


def test_orders_csv_and_summary_of_a_run_under_portfolio_guard(tmp_path):
    spec = RunSpec(
        "momentum_rotation",
        str(PROFILES / "portfolio_guard.yaml"),
        data=str(SAMPLE_DATA),
        end="2016-06-30",
    )
    folder = execute_run(spec, tmp_path / "run")
    orders = pd.read_csv(folder / "orders.csv")
    summary = json.loads((folder / "summary.json").read_text())
    partial = orders[orders["protection"] == "partial"]
    assert len(partial) == summary["orders_partial"] > 0
    # the broker was sent the approved part, and executed exactly that
    assert (partial["size"] == partial["approved"]).all()
    done = partial[partial["status"] == "Completed"]
    assert (done["filled"] == done["approved"]).all() and len(done)
    inside = (partial["approved"] * partial["requested"] > 0) & (
        partial["approved"].abs() < partial["requested"].abs()
    )
    assert inside.all()
    clipped = ((done["requested"] - done["approved"]).abs() * done["price"]).sum()
    assert summary["value_clipped"] == pytest.approx(clipped)
    full = orders[orders["protection"].isin(["approved", "exempt"])]
    assert (full["approved"] == full["requested"]).all()
    assert (orders.loc[orders["protection"] == "denied", "approved"] == 0).all()


class Rebalancing(Recording):
    """`script[bar]` holds target weights; the rebalancer sends them (sells first)."""

    def __init__(self) -> None:
        super().__init__()
        self.rebalancer = ProtectionAwareRebalancer(self)
        self.results: dict[int, Any] = {}

    def next(self) -> None:
        self.values.append(self.broker.getvalue())
        targets = (self.p.script or {}).get(len(self) - 1)
        if targets is not None:
            self.results[len(self) - 1] = self.rebalancer.rebalance(targets)


def test_the_rebalancer_buys_only_with_what_a_partial_sale_frees():
    engine = bt.Cerebro(stdstats=False)
    add_feeds(engine, frames(("AAPL", "AMZN"), "2013-01-02", "2013-04-30"))
    engine.broker.setcash(100_000.0)
    engine.addanalyzer(ProtectionAnalyzer, _name="protection")
    # AAPL bought in two lots (bars 0 and 5); at bar 12 only the first lot is held 10 bars
    script = {0: {"AAPL": 0.5}, 5: {"AAPL": 0.9}, 12: {"AAPL": 0.0, "AMZN": 0.9}}
    engine.addstrategy(
        Rebalancing, protection={"name": "t", "protections": lots_profile(True)}, script=script
    )
    s = engine.run()[0]
    result = s.results[12]
    sale = result.decisions["AAPL"]
    assert sale.partial and result.clipped == {"AAPL": 0.0}
    assert 0 < result.approved["AAPL"] < 0.9  # the weight the sold lot leads to
    executed = {(bar, asset): size for bar, asset, size, _ in s.executed}
    assert executed[(13, "AAPL")] == sale.approved_size  # the ripe lot, no more
    # the buy was scaled to the cash the partial sale freed: the broker filled all of it
    buy = result.decisions["AMZN"]
    assert executed[(13, "AMZN")] == buy.approved_size > 0
    assert result.approved["AMZN"] < 0.9
    assert s.rebalancer.stats["partial"] == 1
    counts = s.analyzers.protection.get_analysis()
    assert counts["by_system"]["holding_period"]["clipped"] >= 1
    assert counts["by_action"]["close"]["partial"] == 1
