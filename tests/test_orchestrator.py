"""The orchestrator API and the cross-cutting modes: exempt, shadow, on_error (docs/profiles.md)."""

from __future__ import annotations

import pytest
from helpers import ALL_SYSTEMS, Clock, clock, day, profile, result_of

from bt_protection.audit import AuditLog, read_audit
from bt_protection.models import ProtectionRequest
from bt_protection.orchestrator import ProtectionOrchestrator
from bt_protection.profile import Profile

FULL = {
    "core_asset_immunity": {"assets": ["SPY"]},
    "regime_override": {
        "window": "5 bars",
        "cooldown": "10 bars",
        "can_override": {"critical": ["holding_period", "whipsaw_protection"]},
    },
    "grace_period": {"trigger": "score", "threshold": 0.5, "duration": "5 bars"},
    "holding_period": {"min_hold": "10 bars"},
    "whipsaw_protection": {"max_cycles": 2, "window": "30 days", "min_reentry": "5 bars"},
}


def full(mode: str = "enforce", on_error: str = "deny", audit: AuditLog | None = None) -> Clock:
    return Clock(ProtectionOrchestrator(profile(mode=mode, on_error=on_error, **FULL), audit), True)


def held(c: Clock, asset: str = "AAA", at: int = 0) -> None:
    c.fill(asset, at, 0, 100)


# --- exempt and shadow ------------------------------------------------------------------------


def test_exempt_request_is_approved_but_still_evaluated():
    c = full()
    held(c)
    decision = c.ask("AAA", 1, 100, 0, exempt=True)
    assert decision.approved
    assert decision.exempt
    assert decision.would_block
    assert decision.blocking_systems == ("holding_period",)
    assert [r.system for r in decision.results] == list(ALL_SYSTEMS)
    assert not result_of(decision, "holding_period").allowed
    assert "safety exit" in decision.reason and "holding_period" in decision.reason
    metrics = c.orch.get_performance_metrics()
    assert (metrics["exempt"], metrics["approved"], metrics["denied"]) == (1, 1, 0)


def test_exempt_core_asset_close_is_approved_with_core_reported():
    c = full()
    held(c, "SPY")
    decision = c.ask("SPY", 20, 100, 0, exempt=True)
    assert decision.approved and decision.would_block
    assert decision.blocking_systems == ("core_asset_immunity",)


def test_exempt_request_nothing_objects():
    c = full()
    decision = c.ask("NEW", 0, 0, 100, exempt=True)
    assert decision.approved and decision.exempt and not decision.would_block
    assert c.orch.get_performance_metrics()["exempt"] == 1


def test_shadow_mode_approves_everything_and_reports_would_block():
    c = full(mode="shadow")
    held(c, "SPY")
    held(c, "AAA")
    c.fill("BBB", 0, 0, 100)
    c.fill("BBB", 1, 100, 0)
    asks = [("SPY", 100, 0), ("AAA", 100, -100), ("BBB", 0, 100), ("CCC", 0, 100)]
    decisions = [c.ask(asset, 2, cur, tgt) for asset, cur, tgt in asks]
    assert all(d.approved for d in decisions)
    assert [d.would_block for d in decisions] == [True, True, True, False]
    assert decisions[0].blocking_systems == ("core_asset_immunity", "holding_period")
    assert decisions[1].blocking_systems == ("holding_period",)
    assert decisions[2].blocking_systems == ("whipsaw_protection",)
    assert decisions[0].reason.startswith("Approved in shadow mode; core_asset_immunity")
    assert not any(d.exempt for d in decisions)
    metrics = c.orch.get_performance_metrics()
    assert metrics["approved"] == 4 and metrics["denied"] == 0 and metrics["approval_rate"] == 1


def test_shadow_and_enforce_agree_on_what_would_block():
    def run(mode: str) -> list:
        c = full(mode=mode)
        held(c)
        return [c.ask("AAA", at, 100, 0) for at in (1, 5, 12)]

    enforce, shadow = run("enforce"), run("shadow")
    assert [d.blocking_systems for d in enforce] == [d.blocking_systems for d in shadow]
    assert [d.approved for d in enforce] == [not d.would_block for d in enforce]


# --- on_error ---------------------------------------------------------------------------------


def break_once(c: Clock, system: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `system`'s next check raise once, on this orchestrator only."""
    protection = next(p for p in c.orch._systems.all if p.key == system)
    original = protection.check

    def boom(request, now):
        monkeypatch.setattr(protection, "check", original)
        raise RuntimeError("boom")

    monkeypatch.setattr(protection, "check", boom)


@pytest.mark.parametrize("on_error", ["deny", "approve"])
def test_a_protection_that_raises_follows_on_error_and_the_run_goes_on(
    on_error, monkeypatch, tmp_path
):
    path = tmp_path / "audit.jsonl"
    c = full(on_error=on_error, audit=AuditLog(path))
    held(c)
    break_once(c, "grace_period", monkeypatch)
    decision = c.ask("AAA", 20, 100, 0)
    assert decision.approved is (on_error == "approve")
    assert "grace_period raised RuntimeError: boom" in decision.error
    grace = result_of(decision, "grace_period")
    assert grace.allowed is (on_error == "approve")
    assert "boom" in grace.reason
    if on_error == "deny":
        assert decision.blocking_systems == ("grace_period",)
        assert "boom" in decision.reason
    # the run goes on: the next decisions are normal
    after = c.ask("AAA", 21, 100, 0)
    assert after.approved and after.error is None
    assert c.ask("BBB", 21, 0, 100).approved
    metrics = c.orch.get_performance_metrics()
    assert metrics["errors"] == 1
    assert metrics["recent_errors"] == ["grace_period raised RuntimeError: boom"]
    assert metrics["decisions_processed"] == 3
    c.orch.close()
    errors = [r for r in read_audit(path) if r["kind"] == "error"]
    assert len(errors) == 1
    assert errors[0]["asset"] == "AAA" and "boom" in errors[0]["error"]
    decisions = [r for r in read_audit(path) if r["kind"] == "decision"]
    assert "boom" in decisions[0]["error"]


def test_a_failing_event_hook_is_counted_and_logged_and_the_run_goes_on(monkeypatch, tmp_path):
    path = tmp_path / "audit.jsonl"
    c = full(audit=AuditLog(path))
    holding = next(p for p in c.orch._systems.all if p.key == "holding_period")

    def boom(*args):
        raise KeyError("state")

    monkeypatch.setattr(holding, "on_fill", boom)
    held(c)  # the hook fails, the fill is still recorded
    assert c.orch.positions == {"AAA": 100}
    metrics = c.orch.get_performance_metrics()
    assert metrics["errors"] == 1
    assert metrics["recent_errors"] == ["holding_period raised KeyError: 'state'"]
    c.orch.close()
    errors = [r for r in read_audit(path) if r["kind"] == "error"]
    assert [e["hook"] for e in errors] == ["on_fill"]
    assert "holding_period raised KeyError" in errors[0]["error"]


def test_regime_each_bar_follows_the_window_and_a_failing_answer_asks_every_bar(monkeypatch):
    c = full()
    c.regime(0, "bull")
    assert c.orch.regime_each_bar is False  # no window: the label goes on change only
    c.regime(1, "crisis")  # critical: a 5-bar window opens
    assert c.orch.regime_each_bar is True
    for at in range(2, 7):
        c.regime(at, "crisis")
    assert c.orch.regime_each_bar is False  # closed at bar 6, 5 bars after it opened
    override = next(p for p in c.orch._systems.all if p.key == "regime_override")

    def boom() -> bool:
        raise KeyError("window")

    monkeypatch.setattr(override, "wants_each_bar", boom)
    c.regime(7, "bull")  # the run goes on; the label comes every bar, as it used to
    assert c.orch.regime_each_bar is True
    metrics = c.orch.get_performance_metrics()
    assert metrics["errors"] == 1
    assert metrics["recent_errors"] == ["regime_override raised KeyError: 'window'"]


# --- event validation -------------------------------------------------------------------------


def test_fill_without_size_change_is_an_error():
    c = full()
    with pytest.raises(ValueError, match="changes nothing"):
        c.fill("AAA", 0, 0, 0)
    held(c)
    with pytest.raises(ValueError, match="changes nothing"):
        c.fill("AAA", 1, 100, 100)


def test_closing_a_position_never_opened_is_an_error():
    c = full()
    with pytest.raises(ValueError, match="unknown asset ZZZ"):
        c.fill("ZZZ", 0, 100, 0)
    assert c.orch.positions == {}


def test_fill_that_disagrees_with_earlier_fills_is_an_error():
    c = full()
    held(c)
    with pytest.raises(ValueError, match="fills so far left 100"):
        c.fill("AAA", 1, 50, 0)


@pytest.mark.parametrize(
    "event",
    [
        lambda o: o.on_fill("AAA", day(4), 100, 0, bar=4),
        lambda o: o.on_regime(day(4), "bull", bar=4),
        lambda o: o.on_scores(day(4), {"AAA": 1.0}, bar=4),
        lambda o: o.can_execute_action(ProtectionRequest("AAA", day(4), 100, 0, bar=4)),
        lambda o: o.can_execute_action(ProtectionRequest("AAA", day(5), 100, 0, bar=4)),
    ],
    ids=["fill", "regime", "scores", "request", "request-earlier-bar"],
)
def test_events_earlier_than_the_last_one_are_errors(event):
    c = full()
    held(c)
    c.regime(5, "bull")
    with pytest.raises(ValueError, match="earlier than the last event"):
        event(c.orch)
    assert c.orch.positions == {"AAA": 100}


@pytest.mark.parametrize(
    "event",
    [
        lambda o: o.on_fill("AAA", day(1), 0, 100),
        lambda o: o.on_regime(day(1), "bull"),
        lambda o: o.on_scores(day(1), {"AAA": 1.0}),
        lambda o: o.can_execute_action(ProtectionRequest("AAA", day(1), 0, 100)),
    ],
    ids=["fill", "regime", "scores", "request"],
)
def test_missing_bar_with_a_bar_unit_profile_is_an_error_naming_bar(event):
    c = full()
    with pytest.raises(ValueError, match="bar is required"):
        event(c.orch)


def test_day_unit_profile_needs_no_bar():
    c = clock(False, holding_period={"min_hold": "3 days"})
    c.fill("AAA", 0, 0, 100)
    assert not c.ask("AAA", 2, 100, 0).approved
    assert c.ask("AAA", 3, 100, 0).approved


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_scores_and_fill_sizes_are_errors(bad):
    c = full()
    with pytest.raises(ValueError, match="finite"):
        c.scores(0, {"AAA": bad})
    with pytest.raises(ValueError, match="finite"):
        c.fill("AAA", 0, 0, bad)


def test_trace_id_is_one_per_bar_and_one_per_score_report():
    c = full()
    held(c)
    a, b = c.ask("AAA", 1, 100, 150), c.ask("BBB", 1, 0, 100)
    assert a.trace_id == b.trace_id is not None
    c.scores(1, {"AAA": 0.9})
    after_scores = c.ask("BBB", 1, 0, 100)
    assert after_scores.trace_id != a.trace_id
    assert c.ask("BBB", 2, 0, 100).trace_id not in (a.trace_id, after_scores.trace_id)


@pytest.mark.parametrize(
    "when", [day(1), day(1).date(), day(1).date().isoformat()], ids=["datetime", "date", "iso"]
)
def test_events_of_one_bar_share_one_trace_whatever_the_date_type(when):
    orch = ProtectionOrchestrator(profile(holding_period={"min_hold": "2 days"}))
    orch.on_fill("AAA", when, 0, 100)
    orch.on_fill("BBB", when, 0, 100)
    orch.on_regime(when, "bull")
    decision = orch.can_execute_action(ProtectionRequest("CCC", when, 0, 100))
    assert decision.trace_id == f"{day(1).date().isoformat()}#1"


def test_decision_carries_the_current_regime_and_backtest_clock():
    c = full()
    c.regime(3, "bear")
    decision = c.ask("AAA", 3, 0, 100)
    assert decision.regime == "bear"
    assert decision.date == day(3) and decision.bar == 3


# --- questions: status, explain ---------------------------------------------------------------


FIVE = {"core_asset", "regime_override", "grace_period", "holding_period", "whipsaw_protection"}


def test_protection_status_has_the_spec_keys():
    c = full()
    c.regime(0, "bull")
    held(c, "SPY")
    status = c.orch.get_protection_status("SPY", day(1), bar=1)
    assert {"asset", "date", "protections"} <= set(status)
    assert status["asset"] == "SPY"
    assert status["date"].startswith("2024-01-02")
    protections = status["protections"]
    assert set(protections) == {
        "core_asset",
        "grace_period",
        "holding_period",
        "whipsaw_protection",
        "regime_override",
        "drawdown_guard",
        "turnover_budget",
    }
    assert all(protections[k]["enabled"] is (k in FIVE) for k in protections)
    assert protections["core_asset"]["is_core"] is True
    assert protections["holding_period"]["held"] == 1
    assert protections["holding_period"]["can_exit"] is False
    assert protections["grace_period"]["in_grace"] is False
    assert protections["whipsaw_protection"]["round_trips_in_window"] == 0
    assert protections["regime_override"]["window_open"] is False
    assert protections["regime_override"]["regime"] == "bull"


def test_disabled_systems_say_enabled_false_in_status():
    c = clock(True, holding_period={"min_hold": "2 bars"})
    protections = c.orch.get_protection_status("AAA", day(0), bar=0)["protections"]
    assert protections["holding_period"]["enabled"] is True
    for key in ("core_asset", "grace_period", "whipsaw_protection", "regime_override"):
        assert protections[key] == {"enabled": False}


@pytest.mark.parametrize(
    ("setup", "asset", "action", "system", "until"),
    [
        (lambda c: held(c, at=5), "AAA", "close", "holding_period", "bar 15"),
        (lambda c: held(c, "SPY"), "SPY", "decrease", "core_asset_immunity", "never"),
        (
            lambda c: (c.fill("BBB", 0, 0, 100), c.fill("BBB", 10, 100, 0)),
            "BBB",
            "open",
            "whipsaw_protection",
            "bar 15",
        ),
        (
            lambda c: (held(c, "XOM"), c.scores(12, {"XOM": 0.1})),
            "XOM",
            "close",
            "grace_period",
            "bar 17",
        ),
    ],
    ids=["holding", "core", "whipsaw", "grace"],
)
def test_explain_names_the_deciding_system_and_until_when(setup, asset, action, system, until):
    c = full()
    setup(c)
    text = c.orch.explain(asset, action, day(13), bar=13)
    assert f"denied by {system}" in text
    assert until in text
    assert asset in text


def test_explain_an_allowed_action_says_so():
    c = full()
    text = c.orch.explain("NEW", "open", day(0), bar=0)
    assert "Approved" in text and "denied" not in text


def test_explain_mentions_other_blocking_systems_and_lifted_ones():
    c = full()
    c.regime(0, "bull")
    held(c, "SPY")
    text = c.orch.explain("SPY", "close", day(1), bar=1)
    assert "denied by core_asset_immunity" in text
    assert "Also blocking: holding_period" in text
    held(c, "AAA", at=1)
    c.regime(2, "crisis")
    lifted = c.orch.explain("AAA", "close", day(2), bar=2)
    assert "Lifted by the regime override: holding_period" in lifted


def _script(c: Clock, ask_questions: bool) -> list[dict]:
    """A short history; with `ask_questions`, explain and status are called all along."""
    out = []

    def questions(at: int) -> None:
        if ask_questions:
            for asset in ("SPY", "AAA", "BBB", "XOM"):
                c.orch.get_protection_status(asset, day(at), bar=at)
                for action in ("open", "close", "increase", "decrease", "reverse"):
                    c.orch.explain(asset, action, day(at), bar=at)

    def ask(*args) -> None:
        questions(args[1])
        decision = c.ask(*args)
        out.append({k: v for k, v in decision.to_dict().items() if k != "decision_time_us"})

    c.regime(0, "bull")
    held(c, "SPY")
    held(c, "XOM")
    ask("SPY", 1, 100, 0)
    c.fill("BBB", 2, 0, 100)
    c.fill("BBB", 3, 100, 0)
    ask("BBB", 4, 0, 100)
    c.scores(5, {"XOM": 0.1, "AAA": 0.9})
    ask("XOM", 6, 100, 0)
    c.regime(7, "crisis")
    ask("XOM", 7, 100, 0)
    ask("BBB", 8, 0, 100)
    questions(9)
    ask("XOM", 12, 100, 0)
    out.append(c.orch.get_performance_metrics()["decisions_processed"])
    return out


def test_explain_and_status_do_not_change_state():
    assert _script(full(), ask_questions=True) == _script(full(), ask_questions=False)


# --- metrics and construction -----------------------------------------------------------------


def test_metrics_before_any_decision():
    metrics = full().orch.get_performance_metrics()
    assert metrics["decisions_processed"] == 0
    assert metrics["approval_rate"] == 0.0
    assert metrics["decision_time_us"] == {"mean": 0.0, "p50": 0.0, "p99": 0.0}


def test_latency_percentiles_cover_the_latest_decisions_and_restored_ones_count_as_zero():
    """The latency ring (filled as decisions come, not allocated up front) keeps the latest
    65,536 decision times; decisions restored from a state file were not timed and count as
    0 us, as in a ring allocated full of zeros."""
    from types import SimpleNamespace

    from bt_protection.orchestration.observers import _LATENCY_SAMPLES, Metrics

    def decision(us: float) -> SimpleNamespace:
        return SimpleNamespace(
            approved=True, partial=False, risk_exit=False, exempt=False,
            override_applied=False, blocking_systems=(), decision_time_us=us,
        )  # fmt: skip

    metrics = Metrics(())
    for i in range(_LATENCY_SAMPLES + 100):  # the first 100 (1 us) are overwritten
        metrics.count(decision(1.0 if i < 100 else 2.0))
    timing = metrics.report()["decision_time_us"]
    assert timing["p50"] == timing["p99"] == 2.0
    restored = Metrics(())
    restored.restore({**metrics.state(), "counts": {**metrics.counts, "decisions_processed": 3}})
    restored.count(decision(5.0))
    timing = restored.report()["decision_time_us"]
    assert (timing["p50"], timing["p99"]) == (0.0, 5.0)


def test_performance_metrics_keys_and_values():
    c = full()
    c.regime(0, "bull")
    held(c, "SPY")
    held(c)
    c.ask("AAA", 1, 100, 0)  # holding
    c.ask("SPY", 1, 100, 0)  # core + holding
    c.ask("NEW", 1, 0, 100)
    c.ask("AAA", 1, 100, 0, exempt=True)
    c.regime(2, "crisis")
    c.ask("AAA", 2, 100, 0)  # holding lifted
    metrics = c.orch.get_performance_metrics()
    assert set(metrics) >= {
        "decisions_processed",
        "approved",
        "denied",
        "approval_rate",
        "exempt",
        "overrides_applied",
        "errors",
        "blocks_by_system",
        "decision_time_us",
    }
    assert metrics["decisions_processed"] == 5
    assert (metrics["approved"], metrics["denied"]) == (3, 2)
    assert metrics["approval_rate"] == pytest.approx(0.6)
    assert metrics["exempt"] == 1
    assert metrics["overrides_applied"] == 1
    assert metrics["errors"] == 0
    assert metrics["blocks_by_system"]["core_asset_immunity"] == 1
    assert metrics["blocks_by_system"]["holding_period"] >= 2
    assert set(metrics["blocks_by_system"]) == set(ALL_SYSTEMS)
    timing = metrics["decision_time_us"]
    assert set(timing) == {"mean", "p50", "p99"}
    assert 0 < timing["p50"] <= timing["p99"]
    assert timing["mean"] > 0


def test_from_profile_accepts_a_mapping_a_profile_and_a_file(tmp_path):
    mapping = {
        "name": "m",
        "protections": {"holding_period": {"enabled": True, "min_hold": "3 bars"}},
    }
    orch = ProtectionOrchestrator.from_profile(mapping)
    assert isinstance(orch.profile, Profile)
    assert orch.profile.name == "m"
    assert orch.profile.enabled_systems == ("holding_period",)
    orch.on_fill("AAA", day(0), 0, 1, bar=0)
    assert not orch.can_execute_action(ProtectionRequest("AAA", day(1), 1, 0, bar=1)).approved
    assert ProtectionOrchestrator.from_profile(orch.profile).profile == orch.profile
    path = tmp_path / "p.yaml"
    path.write_text(
        'name: f\nprotections:\n  holding_period: {enabled: true, min_hold: "3 bars"}\n'
    )
    assert ProtectionOrchestrator.from_profile(path).profile.enabled_systems == ("holding_period",)


@pytest.mark.parametrize("name", ["off", "conservative", "balanced", "aggressive", "shadow"])
def test_shipped_profiles_drive_an_orchestrator(name):
    orch = ProtectionOrchestrator.from_profile(name)  # shipped: loads by name
    orch.on_regime(day(0), "bull", bar=0)
    orch.on_fill("AAA", day(0), 0, 10, bar=0)
    decision = orch.can_execute_action(ProtectionRequest("AAA", day(1), 10, 0, bar=1))
    assert [r.system for r in decision.results] == list(orch.profile.enabled_systems)


def test_unwritable_audit_path_fails_at_construction(tmp_path):
    with pytest.raises(OSError, match="cannot write the audit log"):
        ProtectionOrchestrator(profile(holding_period={}), audit=tmp_path)


def test_every_system_reads_the_one_position_ledger_and_saves_no_copy():
    c = full()
    held(c)
    c.fill("AAA", 1, 100, 40)
    for protection in c.orch._systems.all:
        assert dict(protection.positions) == {"AAA": 40.0} == c.orch.positions
        assert "positions" not in protection.state() and "_sizes" not in protection.state()
