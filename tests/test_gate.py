"""The order gate without cerebro: every order shape of the zoo (tests/zoo/) as the plain
values the mixin hands over, the request it puts to the orchestrator, and what a real
orchestrator's decision leaves to send."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

import backtrader as bt
import pytest
from helpers import orch

from bt_protection.integration.gate import (
    CLOSE,
    LIMIT,
    MARKET,
    STOP,
    STOP_LIMIT,
    STOP_TRAIL,
    STOP_TRAIL_LIMIT,
    GatedOrder,
    OrderGate,
    RefusedParent,
    size_to_send,
)
from bt_protection.models import Action, ProtectionRequest, derive_action

WHEN = datetime(2020, 3, 2)


@dataclass
class Executed:
    size: float = 0.0


@dataclass
class Live:
    """A sent order as the gate reads it: signed size, executed part, alive or not."""

    size: float
    executed: Executed = field(default_factory=Executed)
    living: bool = True

    def alive(self) -> bool:
        return self.living


def ask(
    gate: OrderGate, isbuy: bool, size: float, position: float = 0.0, **more: Any
) -> GatedOrder:
    return gate.request("AAPL", WHEN, 5, isbuy, size, position, metadata={"attempt": 1}, **more)


def sizes_of(gated: GatedOrder) -> tuple[float, float]:
    return gated.request.current_size, gated.request.target_size


def sizes(gated: GatedOrder) -> tuple[float, float, Action]:
    """The request's current and target sizes, and the action between them."""
    return (*sizes_of(gated), derive_action(*sizes_of(gated)))


def test_the_exectypes_are_backtraders() -> None:
    assert (
        bt.Order.Market,
        bt.Order.Close,
        bt.Order.Limit,
        bt.Order.Stop,
        bt.Order.StopLimit,
        bt.Order.StopTrail,
        bt.Order.StopTrailLimit,
    ) == (MARKET, CLOSE, LIMIT, STOP, STOP_LIMIT, STOP_TRAIL, STOP_TRAIL_LIMIT)


@pytest.mark.parametrize("exectype", [None, MARKET, CLOSE, LIMIT])
def test_market_close_and_limit_orders_are_judged_and_live(exectype: int | None) -> None:
    gate = OrderGate()
    gated = ask(gate, True, 10, exectype=exectype, reason="entry", score=0.5)
    assert sizes(gated) == (0.0, 10.0, Action.OPEN)
    request = gated.request
    assert not request.exempt and gated.refusal is None and gated.tracked
    assert (request.asset, request.current_date, request.bar) == ("AAPL", WHEN, 5)
    assert (request.reason, request.score, request.metadata) == ("entry", 0.5, {"attempt": 1})
    exit_ = ask(gate, False, 10, position=10, exectype=exectype)  # a plain exit is judged too
    assert sizes(exit_) == (10.0, 0.0, Action.CLOSE) and not exit_.request.exempt


def test_the_size_sign_is_the_sides_not_the_arguments() -> None:
    """backtrader takes `sell(size=-5)` as a sell of 5."""
    assert sizes_of(ask(OrderGate(), False, -5, position=20)) == (20.0, 15.0)
    assert sizes_of(ask(OrderGate(), True, -5)) == (0.0, 5.0)


@pytest.mark.parametrize("exectype", [STOP, STOP_LIMIT, STOP_TRAIL, STOP_TRAIL_LIMIT])
def test_a_protective_stop_is_an_exempt_exit_that_is_not_live(exectype: int) -> None:
    gate = OrderGate()
    stop = ask(gate, False, 10, position=10, exectype=exectype)
    assert sizes(stop) == (10.0, 0.0, Action.CLOSE)
    assert stop.request.exempt and not stop.tracked
    gate.sent(stop, Live(-10))
    assert gate.live_size("AAPL") == 0.0  # it may never execute: the position stays 10
    part = ask(gate, False, 4, position=10, exectype=exectype)  # a partial stop: DECREASE
    assert sizes(part) == (10.0, 6.0, Action.DECREASE) and part.request.exempt


@pytest.mark.parametrize("exectype", [STOP, STOP_LIMIT, STOP_TRAIL, STOP_TRAIL_LIMIT])
def test_a_stop_entry_and_a_stop_and_reverse_are_judged(exectype: int) -> None:
    entry = ask(OrderGate(), True, 10, exectype=exectype)  # StopEntryBreakout
    assert sizes(entry) == (0.0, 10.0, Action.OPEN)
    assert not entry.request.exempt and entry.tracked
    reverse = ask(OrderGate(), True, 20, position=-10, exectype=exectype)  # StopAndReverse
    assert sizes(reverse) == (-10.0, 10.0, Action.REVERSE) and not reverse.request.exempt


def test_a_bracket_parent_is_judged_and_its_children_are_exempt_exits() -> None:
    """BracketBreakout: `buy_bracket` sends the parent, then a stop and a limit child, each
    judged on the position the pending parent will leave."""
    gate = OrderGate()
    parent = ask(gate, True, 10, exectype=LIMIT)
    assert sizes(parent) == (0.0, 10.0, Action.OPEN) and parent.tracked
    gate.sent(parent, Live(10))
    for exectype in (STOP, LIMIT):
        child = ask(gate, False, 10, exectype=exectype, has_parent=True)
        assert sizes(child) == (10.0, 0.0, Action.CLOSE)
        assert child.request.exempt and not child.tracked and child.refusal is None
        gate.sent(child, Live(-10))
    assert gate.live_size("AAPL") == 10.0  # the parent only


def test_a_bracket_child_that_opens_is_judged() -> None:
    child = ask(OrderGate(), False, 10, exectype=LIMIT, has_parent=True)
    assert sizes(child) == (0.0, -10.0, Action.OPEN)
    assert not child.request.exempt and child.tracked


def test_the_children_of_a_denied_parent_are_refused_on_the_position_it_would_leave() -> None:
    refused = RefusedParent(10, True, 7, "whipsaw_protection: 2 round trips in 60 days.")
    child = ask(OrderGate(), False, 10, exectype=STOP, has_parent=True, refused_parent=refused)
    assert sizes(child) == (10.0, 0.0, Action.CLOSE)
    assert not child.request.exempt  # refused whatever it is, exempt or not
    assert child.refusal == (
        "Rejected with its bracket parent: the parent buy (attempt 7) was denied: "
        "whipsaw_protection: 2 round trips in 60 days."
    )
    exempt = ask(OrderGate(), False, 10, refused_parent=refused, exempt=True, has_parent=True)
    assert not exempt.request.exempt and exempt.refusal == child.refusal
    no_decision = RefusedParent(-5, False, None, None)  # rejected by the broker, not by us
    assert no_decision.refusal == (
        "Rejected with its bracket parent: the parent sell (attempt None) was denied."
    )


def test_oco_a_stop_then_its_limit_partner() -> None:
    """LongWithStop-style OCO: the stop is an exempt exit that is not live, so its limit
    partner is judged on the whole position."""
    gate = OrderGate()
    stop = ask(gate, False, 10, position=10, exectype=STOP)
    gate.sent(stop, Live(-10))
    limit = ask(gate, False, 10, position=10, exectype=LIMIT)
    assert sizes(limit) == (10.0, 0.0, Action.CLOSE) and not limit.request.exempt


def test_close_then_sell_in_one_bar_is_a_close_and_an_open() -> None:
    """CloseSellReversal: `close(); sell(10)` in one bar; the second order sees the first."""
    gate = OrderGate()
    close = ask(gate, False, 10, position=10)
    assert sizes(close) == (10.0, 0.0, Action.CLOSE)
    gate.sent(close, Live(-10))
    sell = ask(gate, False, 10, position=10)
    assert sizes(sell) == (0.0, -10.0, Action.OPEN)


@pytest.mark.parametrize(
    ("position", "target", "action"),
    [(0, 25, Action.OPEN), (10, 25, Action.INCREASE), (25, 10, Action.DECREASE),
     (10, 0, Action.CLOSE), (10, -10, Action.REVERSE), (-10, 10, Action.REVERSE)],
)  # fmt: skip
def test_order_target_orders_are_one_request_to_the_target(
    position: float, target: float, action: Action
) -> None:
    """`order_target_size/value/percent` (CrossTargets, TargetPercentPortfolio,
    TargetReversals) send one buy or sell of the difference: one request to the target."""
    change = target - position
    gated = ask(OrderGate(), change > 0, abs(change), position=position)
    assert sizes(gated) == (position, target, action)


def test_several_orders_per_bar_see_each_other_and_partial_fills_count_their_rest() -> None:
    gate = OrderGate()
    first = ask(gate, True, 10)
    order = Live(10)
    gate.sent(first, order)
    second = ask(gate, True, 5)
    assert sizes_of(second) == (10.0, 15.0)
    order.executed.size = 4  # partly filled: the broker holds 4, 6 are still coming
    assert sizes_of(ask(gate, True, 5, position=4)) == (10.0, 15.0)
    order.living = False  # cancelled or expired with 4 filled: only the broker's 4 count
    assert sizes_of(ask(gate, True, 5, position=4)) == (4.0, 9.0)
    assert gate.live_size("AAPL") == 0.0 and gate.live_size("MSFT") == 0.0


def test_an_order_the_broker_did_not_create_is_not_live() -> None:
    gate = OrderGate()
    gated = ask(gate, True, 10)
    gate.sent(gated, None)  # e.g. a size backtrader rounds to nothing
    assert gate.live_size("AAPL") == 0.0


def test_exempt_and_the_order_keywords_travel_with_the_request() -> None:
    gated = ask(OrderGate(), False, 10, position=10, exempt=True, reason=None, score=None)
    assert gated.request.exempt and gated.tracked  # not contingent: it will execute
    assert gated.request.reason == ""


# --------------------------------------------------------------------------- decision -> order


def decide(gated: GatedOrder, **blocks: Any) -> float | None:
    return size_to_send(orch(**blocks).can_execute_action(gated.request, gated.refusal))


def test_an_approved_order_is_sent_whole() -> None:
    assert decide(ask(OrderGate(), False, 10, position=10)) == 10.0


def test_a_denied_order_is_not_sent() -> None:
    block = {"min_hold": "20 bars"}
    gated = ask(OrderGate(), False, 10, position=10)
    orchestrator = orch(holding_period=block)
    orchestrator.on_fill("AAPL", datetime(2020, 2, 28), 0, 10, bar=4)
    decision = orchestrator.can_execute_action(gated.request, gated.refusal)
    assert not decision.approved and size_to_send(decision) is None


def test_a_refused_child_is_not_sent_even_under_no_rule() -> None:
    refused = RefusedParent(10, True, 1, None)
    gated = ask(OrderGate(), False, 10, exectype=STOP, has_parent=True, refused_parent=refused)
    assert decide(gated) is None


@pytest.mark.parametrize(("isbuy", "size", "sent"), [(False, 150, 100.0), (False, 250, 100.0)])
def test_a_partly_approved_order_sends_the_allowed_part(
    isbuy: bool, size: float, sent: float
) -> None:
    """A decrease (150 -> 0) or a reversal (150 -> -100) clipped by holding lots: 50 units
    bought 5 bars ago must stay, so the order sends the 100 that may go."""
    block = {"min_hold": "10 bars", "lots": "fifo", "protect": ["close", "decrease", "reverse"]}
    orchestrator = orch(holding_period={**block, "partial": True})
    orchestrator.on_fill("AAPL", datetime(2020, 1, 1), 0, 100, bar=0)
    orchestrator.on_fill("AAPL", datetime(2020, 1, 6), 100, 150, bar=5)
    gated = OrderGate().request(
        "AAPL", datetime(2020, 1, 11), 10, isbuy, size, 150, metadata={"attempt": 1}
    )
    decision = orchestrator.can_execute_action(gated.request, gated.refusal)
    assert decision.partial and decision.approved_target == 50
    assert size_to_send(decision) == sent


@pytest.mark.parametrize(
    ("isbuy", "size", "position"),
    [(True, 10, 0.0), (False, 10, 10.0), (False, 25, 10), (True, 5, -10.0), (True, 3, 10)],
)
def test_a_gated_request_equals_what_the_checked_constructor_makes(
    isbuy: bool, size: int, position: float
) -> None:
    """The gate builds its requests without checking again what it guarantees; each equals,
    field by field and type by type, the checked constructor's request of the same values."""
    request = ask(OrderGate(), isbuy, size, position, reason="why").request
    target = position + (size if isbuy else -size)
    checked = ProtectionRequest(
        "AAPL", WHEN, position, target, reason="why", bar=5, metadata={"attempt": 1}
    )
    for name in (f.name for f in fields(ProtectionRequest)):
        mine, theirs = getattr(request, name), getattr(checked, name)
        assert mine == theirs and type(mine) is type(theirs), name


@pytest.mark.parametrize(
    ("size", "field_name"), [(float("nan"), "target_size"), (float("inf"), "target_size")]
)
def test_a_size_the_gate_cannot_vouch_for_gets_the_constructors_error(
    size: float, field_name: str
) -> None:
    with pytest.raises(ValueError, match=field_name):
        ask(OrderGate(), True, size, 10.0)


def test_a_score_is_checked_by_the_constructor() -> None:
    with pytest.raises(ValueError, match="score"):
        ask(OrderGate(), True, 5, score=float("nan"))
