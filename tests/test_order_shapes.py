"""Order shapes of issue 8 in real backtrader runs: orders of one bar see each other, stop
entries are judged, exempt orders change no state, orphaned bracket children, cheat-on-close
bars, SignalStrategy, feed-name errors, half-executed reversals, the user's hook in a base
class, and the one-line rebalancer for `order_target_percent` portfolios."""

from __future__ import annotations

from typing import Any

import backtrader as bt
import pytest
from test_mixin import DENY, HOLD, OFF, SETUP, Scripted, cerebro, frames, merge, run
from test_zoo import PROFILES, run_shape

from bt_protection.errors import UserError
from bt_protection.integration.mixin import ProtectionMixin
from bt_protection.integration.regime import RegimeIndicator

WHIP = {
    "name": "whip",
    "protections": {
        "whipsaw_protection": {
            "enabled": True,
            "max_cycles": 1,
            "window": "60 days",
            "min_reentry": "0 bars",
        }
    },
}
GRACE = {"name": "grace", "protections": {"grace_period": {"enabled": True, "duration": "5 bars"}}}
# bar 0 buy AAPL (fill 1), bar 3 close (fill 4: one round trip), bar 6 buy again as an exempt
# order (whipsaw would deny it), filled at bar 7
ROUND_TRIP = {
    0: [lambda s: s.buy(data="AAPL", size=10)],
    3: [lambda s: s.close(data="AAPL")],
    6: [lambda s: s.buy(data="AAPL", size=10, protection_exempt=True)],
}


def decisions_at(strategy: Any, bar: int) -> list[tuple[str, float, bool]]:
    return [
        (d.action.value, d.current_size, d.approved) for d in strategy.decisions if d.bar == bar
    ]


def test_close_then_sell_in_one_bar_is_a_close_and_an_open() -> None:
    """`close(); sell(10)` is judged like `order_target_size(-10)`: the new short meets
    whipsaw protection (one round trip already made, max 1)."""
    pair = run(merge(ROUND_TRIP, {9: [lambda s: s.close(data="AAPL"), sell10]}), WHIP)
    assert decisions_at(pair, 9) == [("close", 10.0, True), ("open", 0.0, False)]
    denied = pair.decisions[-1]
    assert denied.blocking_systems == ("whipsaw_protection",)
    assert pair.getpositionbyname("AAPL").size == 0  # closed, not reversed
    target = run(
        merge(ROUND_TRIP, {9: [lambda s: s.order_target_size(data="AAPL", target=-10)]}), WHIP
    )
    (reverse,) = [d for d in target.decisions if d.bar == 9]
    assert reverse.action.value == "reverse" and not reverse.approved
    assert "the close alone would be allowed" in reverse.reason


def sell10(s: Scripted) -> Any:
    return s.sell(data="AAPL", size=10)


def far_limit_sell(s: Scripted) -> Any:
    price = 3 * s.getdatabyname("AAPL").close[0]
    return s.sell(data="AAPL", size=10, exectype=bt.Order.Limit, price=price)


def test_cancelled_and_margin_orders_stop_counting() -> None:
    """A live limit sell makes the next sell an open; once cancelled it counts no more. Buys
    the broker refuses for margin (backtrader refuses both of bar 7) count until the refusal."""

    def cancel_limits(s: Scripted) -> None:
        for order in list(s.broker.pending):
            s.cancel(order)

    script = {
        0: [lambda s: s.buy(data="AAPL", size=10)],
        2: [far_limit_sell, lambda s: s.sell(data="AAPL", size=5)],
        4: [cancel_limits],
        5: [lambda s: s.sell(data="AAPL", size=5)],
        7: [lambda s: s.buy(data="AMZN", size=10**6), lambda s: s.buy(data="AMZN", size=1)],
        9: [lambda s: s.buy(data="AMZN", size=1)],
    }
    strategy = run(script, OFF)
    assert decisions_at(strategy, 2) == [("close", 10.0, True), ("open", 0.0, True)]
    # the sell of 5 at bar 2 filled at bar 3: 5 left; the limit is gone at bar 4
    assert decisions_at(strategy, 5) == [("close", 5.0, True)]
    assert decisions_at(strategy, 7) == [("open", 0.0, True), ("increase", 10.0**6, True)]
    margin = [n.bar for n in strategy.notified if n.status == "Margin"]
    assert margin == [8, 8]
    assert decisions_at(strategy, 9) == [("open", 0.0, True)]  # the margin calls unwound


def test_a_buy_stop_entry_is_judged_and_a_protective_stop_is_exempt() -> None:
    def stop_entry(s: Scripted) -> Any:  # AMZN was exited at bar 3: re-entry denied
        data = s.getdatabyname("AMZN")
        return s.buy(data=data, size=10, exectype=bt.Order.Stop, price=1.01 * data.close[0])

    def protective(s: Scripted) -> Any:
        data = s.getdatabyname("AAPL")
        return s.sell(data=data, size=10, exectype=bt.Order.Stop, price=0.5 * data.close[0])

    strategy = run(merge(SETUP, {5: [stop_entry, protective]}), DENY)
    entry, guard = (o.info.protection for o in strategy.placed_orders(5))
    assert (entry.action.value, entry.exempt, entry.approved) == ("open", False, False)
    assert entry.blocking_systems == ("whipsaw_protection",)
    assert (guard.action.value, guard.exempt, guard.approved) == ("close", True, True)


def test_an_exempt_stop_starts_no_grace() -> None:
    """A protective stop at bar 2 (never triggered) leaves no grace behind: the strategy's
    own close at bar 9 starts the grace then, and is denied."""

    def protective(s: Scripted) -> Any:
        data = s.getdatabyname("AAPL")
        return s.sell(data=data, size=10, exectype=bt.Order.Stop, price=0.5 * data.close[0])

    script = {
        0: [lambda s: s.buy(data="AAPL", size=10)],
        2: [protective],
        9: [lambda s: s.close(data="AAPL")],
    }
    strategy = run(script, GRACE)
    stop, close = strategy.decisions[1:]
    assert stop.exempt and stop.would_block  # grace would have blocked it ...
    assert not close.approved  # ... but it started nothing
    assert close.reason.startswith("Grace for AAPL starts now")


def test_an_order_linked_to_a_denied_oco_partner_stands_alone() -> None:
    """A take-profit limit denied by the holding period, then a stop-loss with `oco=` it: the
    stop reaches the broker on its own (backtrader would raise on an unknown OCO group)."""

    def take_profit_then_stop(s: Scripted) -> list[Any]:
        data = s.getdatabyname("AAPL")
        limit = s.sell(data=data, size=10, exectype=bt.Order.Limit, price=2 * data.close[0])
        stop = s.sell(
            data=data, size=10, exectype=bt.Order.Stop, price=0.5 * data.close[0], oco=limit
        )
        return [limit, stop]

    strategy = run({0: [lambda s: s.buy(data="AAPL", size=10)], 3: [take_profit_then_stop]}, HOLD)
    limit, stop = strategy.placed_orders(3)
    assert limit.status == bt.Order.Rejected and not limit.info.protection.approved
    assert stop.info.protection.exempt and stop.alive()


def test_children_of_a_denied_bracket_parent_say_so() -> None:
    def bracket(s: Scripted) -> Any:
        data = s.getdatabyname("AMZN")
        close = data.close[0]
        return s.buy_bracket(
            data=data, size=10, exectype=bt.Order.Market, stopprice=0.9 * close,
            limitprice=1.1 * close,
        )  # fmt: skip

    strategy = run(merge(SETUP, {5: [bracket]}), DENY)
    parent, *children = (o.info.protection for o in strategy.placed_orders(5))
    assert not parent.approved
    for child in children:
        assert not child.approved and not child.exempt
        assert child.reason.startswith("Rejected with its bracket parent: the parent buy")
        assert parent.reason in child.reason


@pytest.mark.parametrize("coc", [False, True])
def test_fills_are_booked_at_the_bar_they_execute(coc: bool) -> None:
    """With cheat-on-close a bar-0 buy fills at bar 0's close: the 20-bar hold ends at bar 20
    (at bar 21 without it), and the opening fill is dated bar 0."""
    engine = cerebro()
    engine.broker.set_coc(coc)
    script = {0: [lambda s: s.buy(data="AAPL", size=10)]}
    script.update({bar: [lambda s: s.close(data="AAPL")] for bar in (19, 20, 21)})
    engine.addstrategy(GuardedOnce, protection=HOLD, script=script)
    strategy = engine.run()[0]
    closes = [(d.bar, d.approved) for d in strategy.decisions if d.action.value == "close"]
    opened = 0 if coc else 1
    assert closes == [(19, False), (20, coc)] + ([] if coc else [(21, True)])
    (hold,) = [r for r in strategy.decisions[1].results if r.system == "holding_period"]
    assert hold.details["opened"].date() == frames()["AAPL"].index[opened].date()


class GuardedOnce(Scripted):
    """Stops closing once a close was approved."""

    def next(self) -> None:
        if any(d.approved and d.action.value == "close" for d in self.decisions):
            self.p.script = {}
        super().next()


def test_signal_strategy_works_with_the_mixin() -> None:
    strategy = run_shape("SignalStrategy LONGSHORT", OFF)
    decisions = strategy.analyzers.executions.get_analysis()["decisions"]
    actions = {d.action.value for d in decisions}
    assert {"open", "close"} <= actions  # LONGSHORT: close, then open the other side


class LateRegimeReader(Scripted):
    def next(self) -> None:
        self.regime  # noqa: B018 - first read after __init__


def test_the_regime_indicator_runs_only_when_the_strategy_reads_it() -> None:
    """The protection follows the regime on the strategy's clock: it adds no indicator."""

    def regimes(strategy: Any) -> int:
        return sum(isinstance(i, RegimeIndicator) for i in strategy.getindicators())

    assert regimes(run({}, OFF)) == 0
    assert regimes(run({}, PROFILES["balanced"])) == 0  # regime_override is on
    for profile in (OFF, PROFILES["balanced"]):
        with pytest.raises(UserError, match=r"read self.regime once in __init__"):
            run({}, profile, strategy=LateRegimeReader)


class HookBase(bt.Strategy):
    def __init__(self) -> None:
        self.seen: list[Any] = []

    def notify_protection(self, decision: Any) -> None:
        self.seen.append(decision)


class HookUser(ProtectionMixin, HookBase):
    def next(self) -> None:
        if len(self) == 1:
            self.buy(size=1)


def test_notify_protection_of_a_base_class_is_called() -> None:
    engine = cerebro(("AAPL",))
    engine.addstrategy(HookUser, protection=OFF)
    strategy = engine.run()[0]
    assert len(strategy.seen) == 1 and strategy.seen[0].approved


class WeeklyTrader(ProtectionMixin, bt.Strategy):
    def next(self) -> None:
        if len(self) == 30:
            self.buy(data=self.datas[-1], size=1)


def test_an_unnamed_resample_needs_a_name_only_when_traded() -> None:
    engine = cerebro()
    engine.resampledata(engine.datas[0], timeframe=bt.TimeFrame.Weeks)
    engine.addstrategy(WeeklyTrader, protection=OFF)
    with pytest.raises(UserError, match=r"resampledata\(data, name="):
        engine.run()


def test_a_core_asset_naming_no_feed_is_refused_at_start() -> None:
    profile = {
        "name": "core",
        "protections": {"core_asset_immunity": {"enabled": True, "assets": ["aapl"]}},
    }
    with pytest.raises(UserError, match=r"core asset 'aapl' .* \(did you mean 'AAPL'\?\); feeds"):
        run({}, profile)


def test_a_regime_feed_naming_no_feed_is_refused_even_when_no_indicator_runs() -> None:
    profile = {"name": "off", "protections": {}, "regime": {"data": "spy"}}
    with pytest.raises(UserError, match=r"'spy'.*feeds: AAPL, AMZN"):
        run({}, profile)


@pytest.mark.parametrize("profile", [OFF, HOLD])
def test_a_half_executed_reversal_ends_no_run(profile: Any) -> None:
    """The broker executes a reversal it cannot pay for as its close only; the fill is booked
    as such and the run goes on to the end, as it does without the mixin."""
    engine = cerebro(("AAPL",))
    engine.broker.setcash(5.0)  # enough to sell short, far from enough to buy 10 shares
    engine.broker.setcommission(commission=0.001)
    engine.broker.set_checksubmit(False)
    script = {0: [lambda s: s.sell(data="AAPL", size=10)], 25: [lambda s: s.buy(size=20)]}
    engine.addstrategy(Scripted, protection=profile, script=script)
    strategy = engine.run()[0]
    executed = [n.executed for n in strategy.notified if n.status in ("Margin", "Partial")]
    assert strategy.getpositionbyname("AAPL").size == 0 and executed  # half executed
    assert strategy.protection.positions == {"AAPL": 0.0}
    assert len(strategy.books) == len(frames(("AAPL",))["AAPL"])  # to the last bar


def test_the_rebalancer_line_makes_margin_rejections_go_away() -> None:
    """`order_target_percent` per asset: a denied sell leaves the buys short of cash and the
    broker rejects them; `self.order_target_weights(targets)` instead makes room."""
    loop = run_shape("target percent with a Sizer", PROFILES["conservative"])
    line = run_shape("target percent with a Sizer", PROFILES["conservative"], weights=True)
    counts = [
        sum(s.status == "Margin" for s in st.analyzers.executions.get_analysis()["orders"].values())
        for st in (loop, line)
    ]
    assert counts[0] > 0 and counts[1] == 0, counts
