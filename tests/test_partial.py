"""Partial approvals and the portfolio-level systems, driven through the orchestrator.

Covers the partial approvals of issue 12 (docs/profiles.md, `partial`): a result may allow
part of a request, the most restrictive allowed target wins, an override window lifts a clip;
the core floor (`keep`), holding lots (`lots: fifo`), `drawdown_guard` and `turnover_budget`,
each at its boundaries in bars and in days.
"""

from __future__ import annotations

import pytest
from helpers import Clock, clock, profile, result_of, unit

from bt_protection.audit import AuditLog, read_audit
from bt_protection.errors import ProfileError
from bt_protection.orchestrator import ProtectionOrchestrator

BOTH_UNITS = pytest.mark.parametrize("bars", [True, False], ids=["bars", "days"])
REDUCE = ["close", "decrease", "reverse"]


def lots(bars: bool, partial: bool = True, n: int = 10, **more) -> Clock:
    block = {"min_hold": unit(bars, n), "lots": "fifo", "protect": REDUCE, "partial": partial}
    return clock(bars, holding_period=block, **more)


# === partial approvals: the decision ==========================================================


def test_without_partial_a_clip_is_a_denial_that_keeps_the_current_size():
    c = lots(True, partial=False)
    c.fill("AAA", 0, 0, 100)
    c.fill("AAA", 5, 100, 150)
    decision = c.ask("AAA", 10, 150, 0)
    assert not decision.approved and not decision.partial
    assert decision.approved_target == 150 and decision.approved_size == 0
    assert decision.blocking_systems == ("holding_period",)
    assert "100 of 150 units held 10 bars" in decision.reason


def test_partial_approves_the_allowed_part_and_says_what_was_clipped():
    c = lots(True)
    c.fill("AAA", 0, 0, 100)
    c.fill("AAA", 5, 100, 150)
    decision = c.ask("AAA", 10, 150, 0)
    assert decision.approved and decision.partial
    assert decision.approved_target == 50 and decision.approved_size == -100
    assert decision.blocking_systems == ("holding_period",) and decision.would_block
    assert decision.reason.startswith(
        "Partly approved: AAA may go from 150 to 50 of the requested 0"
    )
    assert "holding_period clips it" in decision.reason and "free from bar 15" in decision.reason
    assert result_of(decision, "holding_period").allowed_target == 50
    plain = decision.to_dict()
    assert plain["approved_target"] == 50 and plain["partial"] is True
    metrics = c.orch.get_performance_metrics()
    assert metrics["partial"] == 1 and metrics["approved"] == 1
    assert metrics["blocks_by_system"]["holding_period"] == 1


def test_a_fully_allowed_request_has_its_own_target():
    c = lots(True)
    decision = c.ask("AAA", 0, 0, 100)
    assert decision.approved and not decision.partial and decision.approved_target == 100


def test_the_most_restrictive_allowed_target_wins():
    c = lots(True, core_asset_immunity={"assets": ["SPY"], "keep": 0.8, "partial": True})
    c.fill("SPY", 0, 0, 100)
    c.fill("SPY", 5, 100, 150)
    # holding lets 100 go (to 50); the core floor keeps 0.8 * 150 = 120: the floor wins
    decision = c.ask("SPY", 10, 150, 0)
    assert decision.partial and decision.approved_target == 120
    assert decision.blocking_systems == ("core_asset_immunity", "holding_period")
    assert "core_asset_immunity clips it" in decision.reason
    # with a lower floor the holding lots are tighter
    c = lots(True, core_asset_immunity={"assets": ["SPY"], "keep": 0.2, "partial": True})
    c.fill("SPY", 0, 0, 100)
    c.fill("SPY", 5, 100, 150)
    decision = c.ask("SPY", 10, 150, 0)
    assert decision.approved_target == 50 and "holding_period clips it" in decision.reason


def test_a_denial_beats_any_clip():
    c = lots(
        True, whipsaw_protection={"max_cycles": 1, "window": "60 bars", "min_reentry": "0 bars"}
    )
    c.fill("AAA", 0, 0, 100)
    c.fill("AAA", 1, 100, 0)
    c.fill("AAA", 2, 0, 100)
    c.fill("AAA", 3, 100, 150)
    decision = c.ask("AAA", 12, 150, -50)  # holding would let 100 go; whipsaw denies the open leg
    assert not decision.approved and decision.approved_target == 150


def test_an_override_window_lifts_the_clip_of_the_systems_it_lifts():
    override = {
        "window": "5 bars",
        "cooldown": "0 bars",
        "can_override": {"critical": ["holding_period"]},
    }
    c = lots(True, regime_override=override)
    c.regime(0, "bull")
    c.fill("AAA", 0, 0, 100)
    c.regime(3, "crisis")
    decision = c.ask("AAA", 3, 100, 0)
    assert decision.approved and not decision.partial and decision.approved_target == 0
    assert decision.overridden_systems == ("holding_period",)


@pytest.mark.parametrize("mode", ["exempt", "shadow"])
def test_exempt_and_shadow_decisions_approve_the_whole_request(mode):
    block = {"min_hold": "10 bars", "lots": "fifo", "partial": True}
    c = Clock(
        ProtectionOrchestrator(
            profile(mode="shadow" if mode == "shadow" else "enforce", holding_period=block)
        ),
        True,
    )
    c.fill("AAA", 0, 0, 100)
    decision = c.ask("AAA", 3, 100, 0, exempt=mode == "exempt")
    assert decision.approved and not decision.partial and decision.approved_target == 0
    assert decision.would_block


def test_audit_records_the_approved_target(tmp_path):
    path = tmp_path / "audit.jsonl"
    block = {"min_hold": "10 bars", "lots": "fifo", "partial": True, "protect": REDUCE}
    c = Clock(ProtectionOrchestrator(profile(holding_period=block), AuditLog(path, {})), True)
    c.fill("AAA", 0, 0, 100)
    c.fill("AAA", 4, 100, 130)
    c.ask("AAA", 10, 130, 0)
    c.orch.close()
    record = next(r for r in read_audit(path) if r.get("kind") == "decision")
    assert record["approved_target"] == 30 and record["partial"] is True
    assert record["results"][0]["allowed_target"] == 30


# === holding period by lots ===================================================================


@BOTH_UNITS
def test_each_lot_is_held_from_its_own_fill(bars):
    c = lots(bars, partial=False)
    c.fill("AAA", 0, 0, 100)
    c.fill("AAA", 5, 100, 150)  # does not restart the first lot
    assert not c.ask("AAA", 9, 150, 60).approved  # nothing held 10 yet
    assert c.ask("AAA", 10, 150, 50).approved  # the first lot exactly at 0 + 10
    assert not c.ask("AAA", 14, 150, 49).approved
    assert c.ask("AAA", 15, 150, 0).approved  # the second lot exactly at 5 + 10


@BOTH_UNITS
def test_decreases_consume_the_oldest_lot_first(bars):
    c = lots(bars)
    c.fill("AAA", 0, 0, 100)
    c.fill("AAA", 5, 100, 150)
    c.fill("AAA", 11, 150, 90)  # 60 of the first lot sold: 40 of it left, then the 50 lot
    decision = c.ask("AAA", 12, 90, 0)
    assert decision.approved_target == 50
    assert c.orch.get_protection_status("AAA", *c.point(12))["protections"]["holding_period"][
        "lots"
    ] == [
        {"size": 40.0, "filled": c.point(0)[0].isoformat()},
        {"size": 50.0, "filled": c.point(5)[0].isoformat()},
    ]


def test_a_reversal_fill_starts_one_new_lot_and_a_close_clears_them():
    c = lots(True)
    c.fill("AAA", 0, 0, 100)
    c.fill("AAA", 12, 100, -40)
    assert c.ask("AAA", 21, -40, 0).approved_target == -40  # new lot at 12: nothing ripe
    assert c.ask("AAA", 22, -40, 0).approved_target == 0
    c.fill("AAA", 22, -40, 0)
    c.fill("AAA", 23, 0, 10)
    assert not c.ask("AAA", 24, 10, 0).approved


def test_units_committed_to_live_sells_come_out_of_the_ripe_lots():
    c = lots(True)
    c.fill("AAA", 0, 0, 100)
    c.fill("AAA", 5, 100, 150)
    # a live sell of 70 already took the request's current size to 80: 30 ripe units are left
    decision = c.ask("AAA", 10, 80, 0)
    assert decision.approved_target == 50


def test_a_reverse_is_clipped_to_the_ripe_units_of_its_close_leg():
    c = lots(True)
    c.fill("AAA", 0, 0, 100)
    c.fill("AAA", 5, 100, 150)
    assert c.ask("AAA", 10, 150, -150).approved_target == 50


# === core floor ===============================================================================


def core(keep: float, partial: bool = True) -> Clock:
    return clock(True, core_asset_immunity={"assets": ["SPY"], "keep": keep, "partial": partial})


def test_core_floor_is_keep_of_the_largest_core_position():
    c = core(0.5, partial=False)
    c.fill("SPY", 0, 0, 100)
    c.fill("SPY", 1, 100, 200)
    assert c.ask("SPY", 2, 200, 100).approved  # exactly at the floor
    assert not c.ask("SPY", 2, 200, 99).approved
    c.fill("SPY", 3, 200, 100)
    denied = c.ask("SPY", 4, 100, 90)
    assert not denied.approved and "at the floor" in denied.reason
    assert c.ask("SPY", 4, 100, 300).approved  # increases stay free


@pytest.mark.parametrize(("target", "clipped"), [(0, 50), (-100, 50), (20, 50), (70, 70)])
def test_core_floor_clips_closes_decreases_and_reversals(target, clipped):
    c = core(0.5)
    c.fill("SPY", 0, 0, 100)
    decision = c.ask("SPY", 1, 100, target)
    assert decision.approved and decision.approved_target == clipped


def test_core_floor_rounds_whole_shares_up():
    c = core(0.335)
    c.fill("SPY", 0, 0, 100)
    assert c.ask("SPY", 1, 100, 0).approved_target == 34  # never below 33.5


def test_promoted_core_floor_counts_from_the_position_at_promotion():
    block = {
        "keep": 0.5,
        "partial": True,
        "dynamic": {"top_n": 1, "min_streak": 1, "duration": "50 bars"},
    }
    c = clock(True, core_asset_immunity=block)
    c.fill("AAA", 0, 0, 80)
    c.scores(1, {"AAA": 1.0, "BBB": 0.0})
    assert c.ask("AAA", 2, 80, 0).approved_target == 40
    c.fill("AAA", 3, 80, 120)
    assert c.ask("AAA", 4, 120, 0).approved_target == 60


def test_core_without_keep_decides_as_before():
    c = clock(True, core_asset_immunity={"assets": ["SPY"]})
    c.fill("SPY", 0, 0, 100)
    decision = c.ask("SPY", 1, 100, 99)
    assert not decision.approved and "never allowed" in decision.reason


# === drawdown guard ===========================================================================


def guard(bars: bool, partial: bool = False, **resume) -> Clock:
    block = {"max_drawdown": 0.2, "resume": {"after": unit(bars, 10), **resume}, "partial": partial}
    return clock(bars, drawdown_guard=block)


@BOTH_UNITS
def test_drawdown_guard_trips_at_max_drawdown_and_resumes_after(bars):
    c = guard(bars)
    c.portfolio(0, 1000.0)
    c.portfolio(1, 800.01)
    assert c.ask("AAA", 1, 0, 10).approved
    c.portfolio(2, 800.0)  # exactly 20% below the peak
    opened = c.ask("AAA", 2, 0, 10)
    assert not opened.approved and opened.blocking_systems == ("drawdown_guard",)
    assert "drawdown reached 20.0% of the peak 1,000" in opened.reason
    assert not c.ask("AAA", 2, 10, 20).approved  # increase
    assert c.ask("AAA", 2, 10, 5).approved and c.ask("AAA", 2, 10, 0).approved
    c.portfolio(11, 700.0)
    assert not c.ask("AAA", 11, 0, 10).approved
    c.portfolio(12, 700.0)  # 2 + 10: resumed, and the peak starts again at 700
    assert c.ask("AAA", 12, 0, 10).approved
    c.portfolio(13, 561.0)
    assert c.ask("AAA", 13, 0, 10).approved
    c.portfolio(14, 560.0)
    assert not c.ask("AAA", 14, 0, 10).approved


def test_drawdown_guard_resumes_on_recovering_part_of_the_drawdown(tmp_path):
    path = tmp_path / "audit.jsonl"
    block = {"max_drawdown": 0.2, "resume": {"after": "100 bars", "recover": 0.5}}
    c = Clock(ProtectionOrchestrator(profile(drawdown_guard=block), AuditLog(path, {})), True)
    for bar, value in enumerate([1000.0, 900.0, 750.0, 700.0, 849.0]):
        c.portfolio(bar, value)
    assert not c.ask("AAA", 4, 0, 10).approved  # half of 1000 - 700 is 850
    c.portfolio(5, 850.0)
    assert c.ask("AAA", 5, 0, 10).approved
    c.orch.close()
    events = [r for r in read_audit(path) if r.get("kind", "").startswith("drawdown_guard")]
    assert [(e["kind"], e["bar"]) for e in events] == [
        ("drawdown_guard_tripped", 2),
        ("drawdown_guard_resumed", 5),
    ]
    assert events[1]["by"] == "recover" and events[1]["trough"] == 700.0


def test_drawdown_guard_clips_a_reversal_to_a_close_with_partial():
    c = guard(True, partial=True)
    c.portfolio(0, 100.0)
    c.portfolio(1, 50.0)
    decision = c.ask("AAA", 1, 10, -10)
    assert decision.partial and decision.approved_target == 0
    assert not c.ask("AAA", 1, 10, 20).approved  # an increase has nothing to clip to


def test_drawdown_guard_is_lifted_only_when_the_profile_says_so():
    override = {
        "window": "5 bars",
        "cooldown": "0 bars",
        "can_override": {"critical": ["drawdown_guard"]},
    }
    c = clock(True, drawdown_guard={"max_drawdown": 0.1}, regime_override=override)
    c.regime(0, "bull")
    c.portfolio(0, 100.0)
    c.portfolio(1, 80.0)
    assert not c.ask("AAA", 1, 0, 10).approved
    c.regime(2, "crisis")
    assert c.ask("AAA", 2, 0, 10).overridden_systems == ("drawdown_guard",)


# === turnover budget ==========================================================================


@BOTH_UNITS
def test_max_trades_counts_fills_within_the_trailing_window(bars):
    c = clock(bars, turnover_budget={"window": unit(bars, 5), "max_trades": 2})
    c.fill("AAA", 0, 0, 10)
    c.fill("AAA", 1, 10, 20)
    denied = c.ask("AAA", 4, 20, 30)
    assert not denied.approved and "2 fills within 5" in denied.reason
    assert c.ask("AAA", 4, 20, 10, exempt=True).approved
    assert c.ask("AAA", 5, 20, 30).approved  # the fill of 0 left the window exactly at 0 + 5


def test_max_turnover_denies_or_clips_to_the_value_left():
    for partial, expected in ((False, 40.0), (True, 50.0)):
        block = {"window": "20 bars", "max_turnover": 0.5, "partial": partial}
        c = clock(True, turnover_budget=block)
        c.portfolio(0, 1000.0)
        c.orch.on_fill("AAA", c.point(0)[0], 0, 40, bar=0, price=10.0)  # 400 traded
        c.portfolio(1, 1000.0)
        assert c.ask("AAA", 1, 40, 50, metadata={"price": 10.0}).approved  # 500: the budget
        decision = c.ask("AAA", 1, 40, 60, metadata={"price": 10.0})
        assert decision.approved_target == expected and decision.partial is partial


# === profile errors ===========================================================================


@pytest.mark.parametrize(
    ("blocks", "message"),
    [
        ({"core_asset_immunity": {"keep": 1.5}}, "core_asset_immunity.keep: keep is the fraction"),
        (
            {"drawdown_guard": {"max_drawdown": 20}},
            "drawdown_guard.max_drawdown: max_drawdown is a fraction",
        ),
        (
            {"drawdown_guard": {"resume": {"recover": 0}}},
            "drawdown_guard.resume.recover: recover is",
        ),
        ({"drawdown_guard": {"resume": {"after": "3 decisions"}}}, "drawdown_guard.resume.after:"),
        (
            {"turnover_budget": {"window": "5 bars"}},
            "turnover_budget.max_turnover: give max_turnover",
        ),
        ({"grace_period": {"partial": True}}, "grace_period: unknown key 'partial'"),
    ],
)
def test_bad_settings_of_the_new_keys_name_the_key(blocks, message):
    with pytest.raises(ProfileError, match=message):
        profile(**blocks)
