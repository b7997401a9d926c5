"""The protections, each driven through the orchestrator (docs/profiles.md, "Protection blocks").

Boundary tests run twice: with durations in bars and in days (`bars` parameter). In bar mode the
clock gives bar i on day i; in day mode events carry no bar index at all.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from helpers import ALL_SYSTEMS, Clock, clock, day, profile, result_of, unit

from bt_protection.audit import AuditLog, read_audit
from bt_protection.orchestrator import ProtectionOrchestrator

BOTH_UNITS = pytest.mark.parametrize("bars", [True, False], ids=["bars", "days"])

CORE = "core_asset_immunity"
REGIME = "regime_override"
GRACE = "grace_period"
HOLDING = "holding_period"
WHIPSAW = "whipsaw_protection"


def status(c: Clock, asset: str, at: int) -> dict:
    date, bar = c.point(at)
    return c.orch.get_protection_status(asset, date, bar=bar)["protections"]


# === 1. core asset immunity ==================================================================


@pytest.mark.parametrize(
    ("current", "target", "allowed"),
    [
        (100, 0, False),  # close
        (100, 50, False),  # decrease
        (100, -100, False),  # reverse
        (0, 100, True),  # open
        (100, 150, True),  # increase
    ],
)
def test_static_core_guards_close_decrease_reverse_only(current, target, allowed):
    c = clock(False, core_asset_immunity={"assets": ["SPY"]})
    if current:
        c.fill("SPY", 0, 0, current)
    decision = c.ask("SPY", 1, current, target)
    assert decision.approved is allowed
    assert result_of(decision, CORE).allowed is allowed
    if not allowed:
        assert decision.blocking_systems == (CORE,)
        assert "SPY is a core asset" in decision.reason


def test_non_core_asset_is_not_held_by_core():
    c = clock(False, core_asset_immunity={"assets": ["SPY"]})
    c.fill("QQQ", 0, 0, 100)
    assert c.ask("QQQ", 1, 100, 0).approved


@pytest.mark.parametrize(("target", "allowed"), [(0, False), (50, True), (-100, True), (150, True)])
def test_core_protect_subset_is_respected(target, allowed):
    c = clock(False, core_asset_immunity={"assets": ["SPY"], "protect": ["close"]})
    c.fill("SPY", 0, 0, 100)
    assert c.ask("SPY", 1, 100, target).approved is allowed


def dynamic(bars: bool, **overrides) -> dict:
    block = {"top_n": 1, "min_streak": 3, "duration": unit(bars, 10), "max_core": 1}
    return {"dynamic": {**block, **overrides}}


@BOTH_UNITS
def test_dynamic_core_promotion_after_min_streak_consecutive_reports(bars):
    c = clock(bars, core_asset_immunity=dynamic(bars))
    c.fill("AAA", 0, 0, 100)
    for at in (1, 2):
        c.scores(at, {"AAA": 0.9, "BBB": 0.1})
        assert not status(c, "AAA", at)["core_asset"]["is_core"]
        assert c.ask("AAA", at, 100, 0).approved
    c.scores(3, {"AAA": 0.9, "BBB": 0.1})
    assert status(c, "AAA", 3)["core_asset"]["is_core"]
    decision = c.ask("AAA", 3, 100, 0)
    assert not decision.approved
    assert decision.blocking_systems == (CORE,)
    assert "promoted core asset" in decision.reason
    assert c.ask("AAA", 3, 100, 200).approved  # increase is always allowed


def test_dynamic_core_streak_is_broken_by_a_report_outside_top_n():
    c = clock(True, core_asset_immunity=dynamic(True))
    c.fill("AAA", 0, 0, 100)
    reports = [{"AAA": 0.9, "BBB": 0.1}] * 2 + [{"AAA": 0.1, "BBB": 0.9}] + [{"AAA": 0.9}] * 2
    for at, scores in enumerate(reports, start=1):
        c.scores(at, scores)
    assert status(c, "AAA", 5)["core_asset"]["streak"] == 2
    assert c.ask("AAA", 5, 100, 0).approved
    c.scores(6, {"AAA": 0.9, "BBB": 0.1})
    assert not c.ask("AAA", 6, 100, 0).approved


def test_dynamic_core_max_core_keeps_the_higher_rank():
    c = clock(True, core_asset_immunity=dynamic(True, top_n=2, min_streak=2, max_core=1))
    for asset in ("AAA", "BBB"):
        c.fill(asset, 0, 0, 100)
    for at in (1, 2):
        c.scores(at, {"AAA": 0.8, "BBB": 0.9, "CCC": 0.1})
    assert not c.ask("BBB", 2, 100, 0).approved
    assert c.ask("AAA", 2, 100, 0).approved
    # AAA now ranks first: with one seat, the higher rank takes it
    c.scores(3, {"AAA": 0.95, "BBB": 0.9, "CCC": 0.1})
    assert not c.ask("AAA", 3, 100, 0).approved
    assert c.ask("BBB", 3, 100, 0).approved


@BOTH_UNITS
def test_dynamic_core_expires_exactly_after_duration(bars):
    c = clock(bars, core_asset_immunity=dynamic(bars, duration=unit(bars, 10)))
    c.fill("AAA", 0, 0, 100)
    for at in (0, 1, 2):
        c.scores(at, {"AAA": 0.9, "BBB": 0.1})
    assert not c.ask("AAA", 2, 100, 0).approved
    assert not c.ask("AAA", 11, 100, 0).approved  # one before 2 + 10
    assert status(c, "AAA", 11)["core_asset"]["is_core"]
    decision = c.ask("AAA", 12, 100, 0)
    assert decision.approved, decision.reason
    assert not status(c, "AAA", 12)["core_asset"]["is_core"]


def test_core_is_never_bypassed_by_a_critical_override_window():
    lifts = [GRACE, HOLDING, WHIPSAW]
    c = clock(
        True,
        core_asset_immunity={"assets": ["SPY"]},
        regime_override={
            "window": "10 bars",
            "cooldown": "0 bars",
            "can_override": {"critical": lifts, "high": lifts},
        },
        holding_period={"min_hold": "20 bars"},
    )
    c.regime(0, "bull")
    c.fill("SPY", 0, 0, 100)
    c.fill("QQQ", 0, 0, 100)
    c.regime(1, "crisis")
    assert status(c, "SPY", 1)["regime_override"]["window_open"]
    assert c.ask("QQQ", 1, 100, 0).approved  # the window does lift the holding period
    for target in (0, 50, -100):
        decision = c.ask("SPY", 1, 100, target)
        assert not decision.approved
        assert decision.blocking_systems == (CORE,)
        assert CORE not in decision.overridden_systems
        assert decision.reason.startswith("SPY is a core asset")


def test_profile_cannot_let_an_override_lift_core():
    with pytest.raises(ValueError, match="never bypassed"):
        profile(regime_override={"can_override": {"critical": [CORE]}})


# === 2. regime override ======================================================================

SEVERITY_PROBE = {
    "low": [GRACE],
    "medium": [HOLDING],
    "high": [WHIPSAW],
    "critical": [GRACE, HOLDING, WHIPSAW],
}


def regime_clock(**block) -> Clock:
    base = {"window": "5 bars", "cooldown": "0 bars", "can_override": SEVERITY_PROBE}
    return clock(True, regime_override={**base, **block})


@pytest.mark.parametrize(
    ("before", "after", "severity"),
    [
        ("bull", "neutral", "medium"),
        ("neutral", "bear", "medium"),
        ("bear", "crisis", "critical"),  # entering the most stressed regime
        ("bull", "bear", "high"),
        ("neutral", "crisis", "critical"),
        ("bull", "crisis", "critical"),
        ("neutral", "bull", "low"),
        ("crisis", "bull", "low"),
        ("crisis", "bear", "low"),
    ],
)
def test_default_severity_of_a_regime_change(before, after, severity):
    c = regime_clock()
    c.regime(0, before)
    c.regime(1, after)
    window = status(c, "X", 1)["regime_override"]
    assert window["window_open"]
    assert window["severity"] == severity
    assert window["lifts"] == sorted(SEVERITY_PROBE[severity])


@pytest.mark.parametrize(
    ("path", "severity"),
    [
        (["bull", "neutral", "bear"], "high"),  # bear, two steps from the bull it left
        (["neutral", "bear", "neutral", "bear"], "medium"),  # the climb restarted at neutral
        (["bull", "neutral", "bull", "neutral", "bear"], "high"),
        (["bull", "neutral", "bear", "crisis"], "critical"),
        (["crisis", "bear", "neutral"], "low"),
    ],
)
def test_default_severity_is_by_the_regime_entered_and_the_calm_it_left(path, severity):
    c = regime_clock()
    for at, label in enumerate(path):
        c.regime(at * 10, label)
    window = status(c, "X", (len(path) - 1) * 10)["regime_override"]
    assert window["window_open"]
    assert window["transition"] == f"{path[-2]}->{path[-1]}"
    assert window["severity"] == severity


def test_severity_table_replaces_the_default_for_that_transition_only():
    c = regime_clock(severity={"bull->neutral": "critical"})
    c.regime(0, "bull")
    c.regime(1, "neutral")
    assert status(c, "X", 1)["regime_override"]["severity"] == "critical"
    c.regime(2, "bear")  # neutral->bear keeps its default: two steps from bull
    assert status(c, "X", 2)["regime_override"]["severity"] == "high"


def test_wildcard_source_rates_every_change_into_a_regime_and_an_exact_entry_wins():
    c = regime_clock(severity={"*->bear": "low", "neutral->bear": "critical"})
    c.regime(0, "bull")
    c.regime(1, "bear")  # default high; the wildcard says low
    assert status(c, "X", 1)["regime_override"]["severity"] == "low"
    c.regime(2, "neutral")
    c.regime(3, "bear")  # the exact entry beats the wildcard
    assert status(c, "X", 3)["regime_override"]["severity"] == "critical"
    c.regime(4, "crisis")  # no entry: the default
    assert status(c, "X", 4)["regime_override"]["severity"] == "critical"


def lift_setup(can_override: dict, bars: bool = True, window: int = 5) -> Clock:
    """AAA is held by the holding period, BBB kept out by whipsaw; regime bull at 0."""
    c = clock(
        bars,
        regime_override={
            "window": unit(bars, window),
            "cooldown": unit(bars, 0),
            "can_override": can_override,
        },
        holding_period={"min_hold": unit(bars, 20)},
        whipsaw_protection={
            "max_cycles": 5,
            "window": unit(bars, 30),
            "min_reentry": unit(bars, 20),
        },
    )
    c.regime(0, "bull")
    c.fill("AAA", 0, 0, 100)
    c.fill("BBB", 0, 0, 100)
    c.fill("BBB", 1, 100, 0)
    return c


def test_critical_change_lifts_exactly_the_listed_systems():
    c = lift_setup({"critical": [HOLDING]})
    assert not c.ask("AAA", 2, 100, 0).approved
    c.regime(3, "crisis")
    close = c.ask("AAA", 3, 100, 0)
    assert close.approved
    assert close.override_applied
    assert close.overridden_systems == (HOLDING,)
    assert close.blocking_systems == ()
    assert not close.would_block
    assert not result_of(close, HOLDING).allowed  # the result still says what it thinks
    assert "regime override lifts holding_period" in close.reason
    reopen = c.ask("BBB", 3, 0, 100)
    assert not reopen.approved
    assert reopen.blocking_systems == (WHIPSAW,)
    assert not reopen.override_applied and reopen.overridden_systems == ()


def test_change_whose_severity_is_not_in_can_override_opens_no_window():
    c = lift_setup({"critical": [HOLDING]})
    c.regime(3, "bear")  # high
    assert not status(c, "AAA", 3)["regime_override"]["window_open"]
    decision = c.ask("AAA", 3, 100, 0)
    assert not decision.approved and not decision.override_applied


def test_approved_request_needs_no_override():
    c = lift_setup({"critical": [HOLDING]})
    c.regime(3, "crisis")
    decision = c.ask("CCC", 3, 0, 100)
    assert decision.approved
    assert not decision.override_applied and decision.overridden_systems == ()


@BOTH_UNITS
def test_override_window_ends_exactly_after_window(bars):
    c = lift_setup({"critical": [HOLDING]}, bars=bars, window=4)
    c.regime(3, "crisis")
    for at in (3, 4, 5, 6):  # 3 + 4 - 1 is the last moment inside
        c.regime(at, "crisis")
        assert c.ask("AAA", at, 100, 0).override_applied, at
    c.regime(7, "crisis")
    decision = c.ask("AAA", 7, 100, 0)
    assert not decision.approved
    assert decision.blocking_systems == (HOLDING,)
    assert not status(c, "AAA", 7)["regime_override"]["window_open"]


@BOTH_UNITS
def test_change_inside_cooldown_is_suppressed_and_logged(tmp_path, bars):
    path = tmp_path / "audit.jsonl"
    c = Clock(
        ProtectionOrchestrator(
            profile(
                regime_override={
                    "window": unit(bars, 2),
                    "cooldown": unit(bars, 10),
                    "can_override": {"critical": [HOLDING]},
                },
                holding_period={"min_hold": unit(bars, 50)},
            ),
            audit=AuditLog(path),
        ),
        bars,
    )
    c.regime(0, "bull")
    c.fill("AAA", 0, 0, 100)
    c.regime(1, "crisis")  # window opens at 1
    assert c.ask("AAA", 1, 100, 0).approved
    c.regime(3, "bull")
    c.regime(10, "crisis")  # 9 since the last window opened: suppressed
    assert not status(c, "AAA", 10)["regime_override"]["window_open"]
    assert not c.ask("AAA", 10, 100, 0).approved
    c.regime(10, "bull")
    c.regime(11, "crisis")  # exactly 10 after: a new window opens
    decision = c.ask("AAA", 11, 100, 0)
    assert decision.approved and decision.overridden_systems == (HOLDING,)
    c.orch.close()
    records = list(read_audit(path))
    suppressed = [r for r in records if r["kind"] == "override_suppressed"]
    assert len(suppressed) == 1
    assert suppressed[0]["transition"] == "bull->crisis"
    assert suppressed[0]["severity"] == "critical"
    assert suppressed[0]["time"].startswith(day(10).date().isoformat())
    opened = [r for r in records if r["kind"] == "override_window_opened"]
    assert [r["time"][:10] for r in opened] == [
        day(1).date().isoformat(),
        day(11).date().isoformat(),
    ]


@pytest.mark.parametrize("label", ["BULL", "panic", ""])
def test_unknown_regime_label_is_a_value_error(label):
    c = regime_clock()
    with pytest.raises(ValueError, match="unknown regime"):
        c.regime(0, label)


def test_window_in_decisions_stays_open_until_the_bar_of_the_last_counted_decision():
    c = clock(
        True,
        regime_override={
            "window": "3 decisions",
            "cooldown": "0 bars",
            "can_override": {"critical": [HOLDING]},
        },
        holding_period={"min_hold": "50 bars"},
    )
    c.regime(0, "bull")
    for asset in ("AAA", "BBB", "CCC"):
        c.fill(asset, 0, 0, 100)
    c.regime(1, "crisis")
    for at in range(2, 30):  # no decision: the window waits for them, however long
        c.regime(at, "crisis")
    assert status(c, "AAA", 29)["regime_override"]["window_open"]
    assert c.ask("AAA", 30, 100, 0, exempt=True).approved  # a safety exit is not counted
    assert c.ask("AAA", 30, 100, 0).override_applied  # 1
    assert c.ask("BBB", 30, 100, 0).override_applied  # 2
    c.regime(40, "crisis")
    assert c.ask("AAA", 40, 100, 0).override_applied  # 3: the window is used up ...
    assert c.ask("CCC", 40, 100, 0).override_applied  # ... at the end of this bar
    c.regime(41, "crisis")
    decision = c.ask("CCC", 41, 100, 0)
    assert not decision.approved and decision.blocking_systems == (HOLDING,)
    assert not status(c, "CCC", 41)["regime_override"]["window_open"]


# === 3. hierarchy ============================================================================


def everything(core: tuple[str, ...] = ("SPY",)) -> Clock:
    return clock(
        True,
        core_asset_immunity={"assets": list(core)},
        regime_override={
            "window": "5 bars",
            "cooldown": "10 bars",
            "can_override": {"critical": [GRACE, HOLDING, WHIPSAW]},
        },
        grace_period={"trigger": "close", "duration": "5 bars"},
        holding_period={"min_hold": "10 bars"},
        whipsaw_protection={"max_cycles": 1, "window": "30 days", "min_reentry": "5 bars"},
    )


def test_several_blocking_systems_highest_priority_gives_the_reason():
    c = everything()
    for bar, before, after in ((0, 0, 100), (1, 100, 0), (2, 0, 100)):
        c.fill("SPY", bar, before, after)  # one round trip, then a new position
        c.fill("QQQ", bar, before, after)
    decision = c.ask("SPY", 3, 100, -100)  # a reverse: every guard has an opinion
    assert not decision.approved
    assert decision.blocking_systems == (CORE, GRACE, HOLDING, WHIPSAW)
    assert decision.reason == result_of(decision, CORE).reason
    other = c.ask("QQQ", 3, 100, -100)
    assert other.blocking_systems == (GRACE, HOLDING, WHIPSAW)
    assert other.reason == result_of(other, GRACE).reason


def test_every_enabled_system_has_a_result_in_priority_order():
    c = everything()
    decision = c.ask("NEW", 0, 0, 100)
    assert decision.approved
    assert [r.system for r in decision.results] == list(ALL_SYSTEMS)
    assert [r.priority for r in decision.results] == [1, 2, 3, 4, 5]
    assert all(r.reason for r in decision.results)


def test_only_enabled_systems_have_results():
    c = clock(True, holding_period={"min_hold": "3 bars"}, core_asset_immunity={})
    decision = c.ask("NEW", 0, 0, 100)
    assert [r.system for r in decision.results] == [CORE, HOLDING]


# === 4. grace period =========================================================================


def grace(bars: bool, n: int = 5, **block) -> Clock:
    return clock(bars, grace_period={"duration": unit(bars, n), **block})


@BOTH_UNITS
def test_grace_trigger_close_first_close_starts_it_and_is_denied(bars):
    c = grace(bars, 5)
    c.fill("AAA", 0, 0, 100)
    first = c.ask("AAA", 2, 100, 0)
    assert not first.approved
    assert first.blocking_systems == (GRACE,)
    assert f"0 of 5 {'bars' if bars else 'days'}" in first.reason
    assert status(c, "AAA", 2)["grace_period"]["in_grace"]
    second = c.ask("AAA", 6, 100, 0)  # one before 2 + 5
    assert not second.approved
    assert "4 of 5" in second.reason
    assert c.ask("AAA", 7, 100, 0).approved


@BOTH_UNITS
def test_grace_trigger_score_starts_with_a_low_score_report(bars):
    c = grace(bars, 5, trigger="score", threshold=0.5)
    for asset in ("AAA", "BBB", "CCC"):
        c.fill(asset, 0, 0, 100)
    c.scores(1, {"AAA": 0.2, "BBB": 0.9})
    assert c.ask("BBB", 1, 100, 0).approved  # not in grace: not held back
    assert c.ask("CCC", 1, 100, 0).approved  # no score at all
    assert not c.ask("AAA", 1, 100, 0).approved
    assert not c.ask("AAA", 5, 100, 0).approved
    assert c.ask("AAA", 6, 100, 0).approved


@BOTH_UNITS
def test_grace_trigger_score_starts_with_a_request_score(bars):
    c = grace(bars, 5, trigger="score", threshold=0.5)
    c.fill("AAA", 0, 0, 100)
    assert c.ask("AAA", 1, 100, 0, score=0.7).approved  # above threshold: not held back
    first = c.ask("AAA", 2, 100, 0, score=0.1)
    assert not first.approved
    assert "0 of 5" in first.reason
    assert not c.ask("AAA", 6, 100, 0).approved
    assert c.ask("AAA", 7, 100, 0).approved


@pytest.mark.parametrize(
    ("block", "staying", "ending"),
    [
        ({"threshold": 0.5}, 0.49, 0.5),  # recovery_score defaults to threshold
        ({"threshold": 0.5, "recovery_score": 0.8}, 0.79, 0.8),
    ],
)
def test_grace_ends_with_a_recovery_score(block, staying, ending):
    c = grace(True, 10, trigger="score", **block)
    c.fill("AAA", 0, 0, 100)
    c.scores(1, {"AAA": 0.1})
    c.scores(2, {"AAA": staying})
    assert status(c, "AAA", 2)["grace_period"]["in_grace"]
    assert not c.ask("AAA", 2, 100, 0).approved
    c.scores(3, {"AAA": ending})
    assert not status(c, "AAA", 3)["grace_period"]["in_grace"]
    assert c.ask("AAA", 3, 100, 0).approved


def test_grace_with_trigger_close_ends_by_score_only_with_an_explicit_recovery_score():
    c = grace(True, 10, recovery_score=0.5)
    c.fill("AAA", 0, 0, 100)
    assert not c.ask("AAA", 1, 100, 0).approved
    c.scores(2, {"AAA": 0.49})
    assert status(c, "AAA", 2)["grace_period"]["in_grace"]
    c.scores(3, {"AAA": 0.5})
    assert not status(c, "AAA", 3)["grace_period"]["in_grace"]


def test_grace_with_trigger_close_is_not_ended_by_scores_at_the_default_threshold():
    # a rotation strategy reports a positive score for the asset it is dropping: its grace
    # must keep running so the close goes through once the grace has elapsed
    c = grace(True, 5)
    c.fill("AAA", 0, 0, 100)
    assert not c.ask("AAA", 1, 100, 0).approved
    c.scores(6, {"AAA": 0.3})
    assert status(c, "AAA", 6)["grace_period"]["in_grace"]
    assert c.ask("AAA", 6, 100, 0).approved


@pytest.mark.parametrize("target", [150, -100], ids=["increase", "reverse-not-selection"])
def test_grace_ends_when_the_asset_is_selected_again(target):
    c = grace(True, 10)
    c.fill("AAA", 0, 0, 100)
    assert not c.ask("AAA", 1, 100, 0).approved  # grace starts at 1
    c.ask("AAA", 2, 100, target)
    in_grace = status(c, "AAA", 2)["grace_period"]["in_grace"]
    assert in_grace is (target < 0)  # only an approved open/increase is a re-selection
    again = c.ask("AAA", 3, 100, 0)
    assert not again.approved
    assert ("0 of 10" in again.reason) is (target > 0)  # a fresh grace after re-selection


def test_denied_open_does_not_end_grace():
    c = clock(
        True,
        grace_period={"duration": "10 bars", "trigger": "score", "threshold": 0.5},
        whipsaw_protection={"max_cycles": 5, "window": "30 bars", "min_reentry": "10 bars"},
    )
    c.fill("AAA", 0, 0, 100)
    c.fill("AAA", 1, 100, 0)
    c.scores(2, {"AAA": 0.1})  # grace of a flat asset (score trigger)
    assert not c.ask("AAA", 3, 0, 100).approved  # whipsaw denies the re-entry
    assert status(c, "AAA", 3)["grace_period"]["in_grace"]


def test_grace_ends_when_the_position_reaches_zero():
    c = grace(True, 10, trigger="score", threshold=0.5)
    c.fill("AAA", 0, 0, 100)
    c.scores(1, {"AAA": 0.1})
    c.fill("AAA", 2, 100, 0)  # e.g. an exempt stop-loss
    assert not status(c, "AAA", 2)["grace_period"]["in_grace"]
    c.fill("AAA", 3, 0, 100)
    assert c.ask("AAA", 3, 100, 0).approved


def test_grace_is_not_ended_by_a_partial_fill():
    c = grace(True, 10, trigger="score", threshold=0.5)
    c.fill("AAA", 0, 0, 100)
    c.scores(1, {"AAA": 0.1})
    c.fill("AAA", 2, 100, 40)
    assert status(c, "AAA", 2)["grace_period"]["in_grace"]


# === 5. holding period =======================================================================


def holding(bars: bool, n: int = 10, **block) -> Clock:
    return clock(bars, holding_period={"min_hold": unit(bars, n), **block})


@BOTH_UNITS
def test_holding_clock_starts_at_the_opening_fill(bars):
    c = holding(bars, 10)
    c.fill("AAA", 3, 0, 100)
    early = c.ask("AAA", 12, 100, 0)  # one before 3 + 10
    assert not early.approved
    assert early.blocking_systems == (HOLDING,)
    assert f"held 9 of 10 {'bars' if bars else 'days'} since" in early.reason
    assert c.ask("AAA", 13, 100, 0).approved


@BOTH_UNITS
def test_holding_increase_does_not_restart_the_clock(bars):
    c = holding(bars, 10)
    c.fill("AAA", 0, 0, 100)
    c.fill("AAA", 8, 100, 300)
    assert not c.ask("AAA", 9, 300, 0).approved
    assert c.ask("AAA", 10, 300, 0).approved


@BOTH_UNITS
def test_holding_reversal_fill_restarts_the_clock(bars):
    c = holding(bars, 10)
    c.fill("AAA", 0, 0, 100)
    c.fill("AAA", 5, 100, -100)
    assert not c.ask("AAA", 10, -100, 0).approved
    assert not c.ask("AAA", 14, -100, 0).approved
    assert c.ask("AAA", 15, -100, 0).approved


def test_holding_clock_restarts_after_a_full_exit_and_reentry():
    c = holding(True, 10)
    c.fill("AAA", 0, 0, 100)
    c.fill("AAA", 10, 100, 0)
    c.fill("AAA", 11, 0, 100)
    assert not c.ask("AAA", 12, 100, 0).approved


@pytest.mark.parametrize(
    ("protect", "decrease_allowed"),
    [(None, True), (["close", "reverse"], True), (["close", "decrease", "reverse"], False)],
)
def test_holding_guards_decrease_only_if_in_protect(protect, decrease_allowed):
    block = {} if protect is None else {"protect": protect}
    c = holding(True, 10, **block)
    c.fill("AAA", 0, 0, 100)
    assert c.ask("AAA", 1, 100, 50).approved is decrease_allowed
    assert not c.ask("AAA", 1, 100, 0).approved


def test_holding_guards_reverse_by_default():
    c = holding(True, 10)
    c.fill("AAA", 0, 0, 100)
    decision = c.ask("AAA", 1, 100, -100)
    assert decision.blocking_systems == (HOLDING,)


def test_holding_protect_without_close_lets_close_through():
    c = holding(True, 10, protect=["reverse"])
    c.fill("AAA", 0, 0, 100)
    assert c.ask("AAA", 1, 100, 0).approved
    assert not c.ask("AAA", 1, 100, -100).approved


# === 6. whipsaw protection ===================================================================


def whipsaw(bars: bool, cycles: int = 2, window: int = 20, reentry: int = 0) -> Clock:
    return clock(
        bars,
        whipsaw_protection={
            "max_cycles": cycles,
            "window": unit(bars, window),
            "min_reentry": unit(bars, reentry),
        },
    )


def round_trips(c: Clock, asset: str, *pairs: tuple[int, int]) -> None:
    for opened, closed in pairs:
        c.fill(asset, opened, 0, 100)
        c.fill(asset, closed, 100, 0)


@pytest.mark.parametrize(("trips", "allowed"), [(0, True), (1, True), (2, False), (3, False)])
def test_whipsaw_max_cycles_counts_round_trips_from_fills(trips, allowed):
    c = whipsaw(True, cycles=2)
    round_trips(c, "AAA", *[(2 * i, 2 * i + 1) for i in range(trips)])
    decision = c.ask("AAA", 10, 0, 100)
    assert decision.approved is allowed
    assert status(c, "AAA", 10)["whipsaw_protection"]["round_trips_in_window"] == trips
    if not allowed:
        assert f"made {trips} round trips" in decision.reason


def test_whipsaw_counts_a_reversal_fill_as_a_round_trip():
    c = whipsaw(True, cycles=2)
    c.fill("AAA", 0, 0, 100)
    c.fill("AAA", 1, 100, -100)
    c.fill("AAA", 2, -100, 0)
    assert not c.ask("AAA", 3, 0, 100).approved


def test_whipsaw_does_not_count_partial_exits():
    c = whipsaw(True, cycles=1)
    c.fill("AAA", 0, 0, 100)
    c.fill("AAA", 1, 100, 50)
    assert status(c, "AAA", 2)["whipsaw_protection"]["round_trips_in_window"] == 0


def test_whipsaw_does_not_guard_increase_or_other_assets():
    c = whipsaw(True, cycles=1)
    round_trips(c, "AAA", (0, 1))
    c.fill("AAA", 2, 0, 100)  # e.g. an exempt re-entry
    assert c.ask("AAA", 3, 100, 200).approved
    assert c.ask("BBB", 3, 0, 100).approved


@BOTH_UNITS
def test_whipsaw_round_trip_falls_out_of_the_window_exactly_at_d(bars):
    c = whipsaw(bars, cycles=2, window=20)
    round_trips(c, "AAA", (0, 1), (2, 3))
    assert not c.ask("AAA", 20, 0, 100).approved  # one before 1 + 20
    assert c.ask("AAA", 21, 0, 100).approved


@BOTH_UNITS
def test_whipsaw_min_reentry_since_last_exit(bars):
    c = whipsaw(bars, cycles=5, window=20, reentry=4)
    round_trips(c, "AAA", (0, 5))
    early = c.ask("AAA", 8, 0, 100)
    assert not early.approved
    assert "re-entry allowed from" in early.reason
    assert c.ask("AAA", 9, 0, 100).approved


def test_whipsaw_reverse_counts_only_completed_round_trips():
    """The open leg of a reverse is judged on the round trips made so far, not its own."""
    first = whipsaw(True, cycles=1)
    first.fill("AAA", 0, 0, 100)
    assert first.ask("AAA", 3, 100, -100).approved  # never exited: no round trip yet
    c = whipsaw(True, cycles=2)
    round_trips(c, "AAA", (0, 1), (2, 3))
    c.fill("AAA", 4, 0, 100)
    decision = c.ask("AAA", 20, 100, -100)
    assert not decision.approved
    assert decision.blocking_systems == (WHIPSAW,)
    assert "made 2 round trips" in decision.reason
    assert "the close alone would be allowed" in decision.reason
    assert c.ask("AAA", 20, 100, 0).approved


def test_whipsaw_denial_names_the_first_day_entry_is_allowed():
    """Three trips in the window, max 2: entry comes back when the *second* exit falls out."""
    c = whipsaw(False, cycles=2, window=10)
    round_trips(c, "AAA", (0, 1), (2, 3), (4, 5))
    decision = c.ask("AAA", 6, 0, 100)
    assert not decision.approved
    first_allowed = (day(3) + timedelta(days=10)).date().isoformat()
    assert not c.ask("AAA", 12, 0, 100).approved
    assert c.ask("AAA", 13, 0, 100).approved
    assert f"entry allowed from {first_allowed}" in decision.reason


# === 7. reverse = close leg + open leg =======================================================


def reverse_clock() -> Clock:
    return clock(
        True,
        holding_period={"min_hold": "10 bars"},
        whipsaw_protection={"max_cycles": 5, "window": "60 bars", "min_reentry": "10 bars"},
    )


def test_reverse_is_denied_when_its_close_leg_is():
    c = reverse_clock()
    c.fill("AAA", 0, 0, 100)
    decision = c.ask("AAA", 3, 100, -100)
    assert not decision.approved
    assert decision.blocking_systems == (HOLDING,)
    assert result_of(decision, WHIPSAW).allowed


def test_reverse_is_denied_when_its_open_leg_is():
    c = clock(
        True,
        holding_period={"min_hold": "1 bar"},
        whipsaw_protection={"max_cycles": 5, "window": "60 bars", "min_reentry": "10 bars"},
    )
    round_trips(c, "AAA", (0, 20))
    c.fill("AAA", 22, 0, 100)  # a re-entry (say, an exempt one)
    decision = c.ask("AAA", 25, 100, -100)  # close leg fine, open leg 5 bars after an exit
    assert result_of(decision, HOLDING).allowed
    assert not decision.approved
    assert decision.blocking_systems == (WHIPSAW,)
    assert decision.reason.endswith("the close alone would be allowed.)")
    assert c.ask("AAA", 30, 100, -100).approved


def test_reverse_with_both_legs_denied_lists_both_systems():
    c = reverse_clock()
    round_trips(c, "AAA", (0, 20))
    c.fill("AAA", 21, 0, 100)
    decision = c.ask("AAA", 29, 100, -100)  # held 8 of 10, exited 9 of 10 bars ago
    assert decision.blocking_systems == (HOLDING, WHIPSAW)
    assert decision.reason == result_of(decision, HOLDING).reason  # the close leg is refused
