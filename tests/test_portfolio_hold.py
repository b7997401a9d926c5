"""The quiet portfolio value (`hold_portfolio`, SPEC 13): a bar's value that moves nothing but
the value kept is taken without an event, and a run decides, records and trades exactly as
with an `on_portfolio` event at every bar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import day
from hypothesis import given, settings
from hypothesis import strategies as st

from bt_protection.audit import read_audit
from bt_protection.durations import ClockPoint, Duration
from bt_protection.orchestrator import ProtectionOrchestrator
from bt_protection.protections.drawdown_guard import DrawdownWatch, ResumeConfig
from bt_protection.runner import RunSpec, execute_run

VALUES = st.one_of(  # what `update` gets: finite numbers (on_portfolio refuses the others)
    st.floats(min_value=50.0, max_value=150.0),
    st.sampled_from([0.0, -5.0, 80.0, 100.0]),
    st.integers(min_value=50, max_value=150),
)


def _state(watch: DrawdownWatch) -> tuple[Any, ...]:
    trip = watch.trip
    return (
        watch.peak,
        repr(watch.value),
        None if trip is None else (trip.start, trip.peak, trip.trough),
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(VALUES, min_size=1, max_size=60))
def test_hold_takes_only_what_update_would_change_nothing_else_for(values: list[Any]) -> None:
    """Two watches see the same values: one through `update` only, one through `hold` first.
    Where `hold` takes a value, `update` would have said nothing and changed nothing but the
    value; the two watches stay equal at every step."""
    resume = ResumeConfig(after=Duration.parse("3 bars"), recover=0.5)
    eager, lazy = DrawdownWatch(0.2, resume), DrawdownWatch(0.2, resume)
    for bar, value in enumerate(values):
        now = ClockPoint(day(bar), bar)
        before = _state(eager)
        change = eager.update(now, value)
        if lazy.hold(value):
            assert change is None
            assert type(value) is float
            assert before[0] == _state(eager)[0] and before[2] == _state(eager)[2]
        else:
            assert lazy.update(now, value) == change
        assert _state(lazy) == _state(eager)
    for odd in (float("nan"), float("inf"), float("-inf")):  # left to on_portfolio, which refuses
        assert not lazy.hold(odd)


def test_the_orchestrator_holds_only_under_an_adapter_that_traces_each_bar(
    tmp_path: Path,
) -> None:
    """Without `trace_each_bar` (a direct caller) every value goes through `on_portfolio`;
    with it a quiet value is held, a new peak or a drawdown to the valve is not; a profile
    where a system follows the value (the drawdown guard) never holds. A held value flushes
    what the bars before wrote to the audit, as the new trace it replaces did."""
    safety = {"max_portfolio_drawdown": 0.1, "resume": {"after": "2 bars"}}
    audit = tmp_path / "audit.jsonl"
    orch = ProtectionOrchestrator(
        {"name": "t", "protections": {"regime_override": {}}, "exit_safety": safety}, audit
    )
    orch.on_portfolio(day(0), 100.0, bar=0)
    assert not orch.hold_portfolio(95.0)
    orch.trace_each_bar = True
    orch.on_regime(day(0), "bull", bar=0)
    orch.on_regime(day(1), "bear", bar=1)  # a regime_change record, in the file's buffer
    assert b"regime_change" not in audit.read_bytes()
    assert orch.hold_portfolio(95.0)
    assert b"regime_change" in audit.read_bytes()
    assert not orch.hold_portfolio(101.0)  # a new peak moves the watch
    assert not orch.hold_portfolio(90.0)  # a drawdown of 10% trips the valve
    guard = {"drawdown_guard": {"enabled": True, "max_drawdown": 0.1}}
    guarded = ProtectionOrchestrator({"name": "g", "protections": guard, "exit_safety": safety})
    guarded.trace_each_bar = True
    guarded.on_portfolio(day(0), 100.0, bar=0)
    assert not guarded.hold_portfolio(95.0)


def _run(tmp_path: Path, name: str) -> tuple[list[dict[str, Any]], bytes, bytes]:
    profile = {
        "name": "hold",
        "protections": {
            "regime_override": {"enabled": True, "window": "2 decisions", "cooldown": "5 bars"},
            "holding_period": {"enabled": True, "min_hold": "10 bars"},
            "grace_period": {"enabled": True, "duration": "3 bars"},
        },
        "exit_safety": {
            "max_portfolio_drawdown": 0.06,
            "resume": {"after": "5 bars", "recover": 0.5},
        },
    }
    spec = RunSpec("sma_crossover", profile, start="2018-01-01", end="2020-12-31")
    folder = execute_run(spec, tmp_path / name)
    records = [
        {k: v for k, v in r.items() if k not in ("session_id", "wall")}
        for r in read_audit(folder / "audit.jsonl")
    ]
    return records, (folder / "orders.csv").read_bytes(), (folder / "equity.csv").read_bytes()


def test_a_run_with_held_values_is_the_run_with_an_event_each_bar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sma_crossover on the sample with a tight drawdown valve (it trips and resumes several
    times) and a regime override: the audit (trace ids included), orders and equity are the
    same record for record whether quiet values are held or sent as events."""
    original = ProtectionOrchestrator.hold_portfolio
    held: list[bool] = []

    def counted(self: ProtectionOrchestrator, value: float) -> bool:
        taken = original(self, value)
        held.append(taken)
        return taken

    monkeypatch.setattr(ProtectionOrchestrator, "hold_portfolio", counted)
    fast = _run(tmp_path, "held")
    monkeypatch.setattr(ProtectionOrchestrator, "hold_portfolio", lambda self, value: False)
    eager = _run(tmp_path, "events")
    assert fast[0] == eager[0]
    assert fast[1] == eager[1] and fast[2] == eager[2]
    kinds = [r["kind"] for r in eager[0]]
    assert kinds.count("reducing_started") >= 2 and kinds.count("reducing_ended") >= 2
    assert kinds.count("regime_change") >= 2 and kinds.count("decision") > 20
    assert sum(held) > len(held) // 2  # most bars were held, and some were not
    assert not all(held)
