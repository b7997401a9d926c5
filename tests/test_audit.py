"""The JSONL audit log (docs/runs.md, `audit.jsonl`): header, record fields, determinism,
crash safety, flushing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers import Clock, day, profile

from bt_protection import __version__
from bt_protection.audit import AuditLog, AuditWriteError, read_audit, session_id_for
from bt_protection.orchestrator import ProtectionOrchestrator
from bt_protection.profile import Profile

FINGERPRINT = {
    "package_version": __version__,
    "profile": "t",
    "profile_hash": "0123456789abcdef",
    "data": ["AAA", "SPY"],
    "start": "2024-01-01",
    "end": "2024-02-01",
}

PROFILE_BLOCKS = {
    "core_asset_immunity": {"assets": ["SPY"]},
    "regime_override": {
        "window": "3 bars",
        "cooldown": "10 bars",
        "can_override": {"critical": ["holding_period"]},
    },
    "grace_period": {"trigger": "score", "threshold": 0.5, "duration": "3 bars"},
    "holding_period": {"min_hold": "5 bars"},
    "whipsaw_protection": {"max_cycles": 2, "window": "20 days", "min_reentry": "2 bars"},
}


def the_profile() -> Profile:
    return profile(**PROFILE_BLOCKS)


class Crash(Exception):
    pass


def run(path: Path, crash_after: int | None = None) -> list[dict[str, Any]]:
    """A 10-bar history with every kind of event; returns the decisions made (as dicts).

    With `crash_after`, the run raises once that many decisions were made, and the audit is
    closed in a `finally`, as a strategy's `stop()` or a process exit would.
    """
    audit = AuditLog(path, FINGERPRINT)
    c = Clock(ProtectionOrchestrator(the_profile(), audit), bars=True)
    made: list[dict[str, Any]] = []

    def ask(*args: Any, **kwargs: Any) -> None:
        made.append(c.ask(*args, **kwargs).to_dict())
        if crash_after is not None and len(made) >= crash_after:
            raise Crash("strategy failed")

    try:
        for bar in range(10):
            c.regime(bar, "crisis" if bar in (6, 7) else "bull")
            if bar == 0:
                c.fill("SPY", 0, 0, 100)
                c.fill("AAA", 0, 0, 100)
            if bar == 2:
                c.scores(2, {"AAA": 0.1, "SPY": 0.9})
            ask("AAA", bar, 100, 0)
            ask("SPY", bar, 100, 50)
            ask("BBB", bar, 0, 10, reason="entry", metadata={"id": bar})
            if bar == 8:
                ask("SPY", bar, 100, 0, exempt=True)  # core would block
    finally:
        audit.close()
    return made


def test_header_comes_first_with_fingerprint_and_session_id(tmp_path):
    path = tmp_path / "audit.jsonl"
    run(path)
    header = next(read_audit(path))
    assert header["kind"] == "header"
    assert header["seq"] == 0
    assert header["session_id"] == session_id_for(FINGERPRINT)
    for key, value in FINGERPRINT.items():
        assert header[key] == value


def test_session_id_is_deterministic_and_depends_on_the_fingerprint():
    assert session_id_for(FINGERPRINT) == session_id_for(dict(reversed(FINGERPRINT.items())))
    assert session_id_for(FINGERPRINT) != session_id_for({**FINGERPRINT, "profile": "u"})


def test_orchestrator_audit_path_writes_a_header_with_the_profile_fingerprint(tmp_path):
    path = tmp_path / "sub" / "audit.jsonl"
    orch = ProtectionOrchestrator(the_profile(), audit=path)
    orch.close()
    header = next(read_audit(path))
    assert header["kind"] == "header"
    assert header["profile_hash"] == the_profile().hash
    assert header["package_version"] == __version__
    assert header["session_id"]


def test_every_record_has_the_common_fields_and_consecutive_seq(tmp_path):
    path = tmp_path / "audit.jsonl"
    run(path)
    records = list(read_audit(path))
    assert [r["seq"] for r in records] == list(range(len(records)))
    session = records[0]["session_id"]
    for record in records[1:]:
        assert {"seq", "kind", "session_id", "trace_id", "time", "bar"} <= set(record), record
        assert record["session_id"] == session
        assert record["trace_id"]
        assert record["time"].startswith("2024-01-")
        assert isinstance(record["bar"], int)
    kinds = {r["kind"] for r in records}
    assert {
        "header",
        "decision",
        "fill",
        "scores",
        "regime_change",
        "override_window_opened",
        "grace_started",
    } <= kinds


def test_records_follow_the_backtest_clock(tmp_path):
    path = tmp_path / "audit.jsonl"
    run(path)
    records = list(read_audit(path))[1:]
    bars = [r["bar"] for r in records]
    assert bars == sorted(bars)
    for record in records:
        assert record["time"][:10] == day(record["bar"]).date().isoformat()
        assert record["trace_id"].startswith(record["time"][:10])


def test_decision_records_carry_results_and_the_request(tmp_path):
    path = tmp_path / "audit.jsonl"
    made = run(path)
    decisions = [r for r in read_audit(path) if r["kind"] == "decision"]
    assert len(decisions) == len(made)
    for record, decision in zip(decisions, made, strict=True):
        assert record["asset"] == decision["asset"]
        assert record["action"] == decision["action"]
        assert record["approved"] == decision["approved"]
        assert record["reason"] == decision["reason"]
        assert record["blocking_systems"] == decision["blocking_systems"]
        assert record["trace_id"] == decision["trace_id"]
        assert [r["system"] for r in record["results"]] == [
            r["system"] for r in decision["results"]
        ]
        for logged, result in zip(record["results"], decision["results"], strict=True):
            assert (logged["allowed"], logged["reason"]) == (result["allowed"], result["reason"])
    entry = next(r for r in decisions if r["asset"] == "BBB")
    assert entry["request_reason"] == "entry" and entry["metadata"] == {"id": 0}
    exempt = [r for r in decisions if r["exempt"]]
    assert len(exempt) == 1 and exempt[0]["approved"] and exempt[0]["would_block"]


def _keys(value: Any) -> set[str]:
    """Every key in a record, at any depth, skipping what is under `wall`."""
    if isinstance(value, dict):
        found = set()
        for key, item in value.items():
            if key == "wall":
                continue
            found |= {key} | _keys(item)
        return found
    if isinstance(value, list):
        return set().union(*(_keys(v) for v in value)) if value else set()
    return set()


def test_decision_time_sits_only_under_wall(tmp_path):
    path = tmp_path / "audit.jsonl"
    run(path)
    for record in read_audit(path):
        assert "decision_time_us" not in _keys(record)
        if record["kind"] == "decision":
            assert record["wall"]["decision_time_us"] > 0
        else:
            assert "wall" not in record


def test_two_identical_runs_give_identical_files_without_wall(tmp_path):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    run(first)
    run(second)
    a = list(read_audit(first, drop_wall=True))
    b = list(read_audit(second, drop_wall=True))
    assert a == b
    assert [orjson.dumps(r) for r in a] == [orjson.dumps(r) for r in b]


def test_crash_midway_leaves_a_valid_file_with_every_earlier_decision(tmp_path):
    path = tmp_path / "audit.jsonl"
    with pytest.raises(Crash):
        run(path, crash_after=14)
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.splitlines()
    records = [json.loads(line) for line in lines]  # every line is valid JSON
    assert records[0]["kind"] == "header"
    decisions = [r for r in records if r["kind"] == "decision"]
    assert len(decisions) == 14
    full = tmp_path / "full.jsonl"
    run(full)
    expected = [r for r in read_audit(full, drop_wall=True) if r["kind"] == "decision"][:14]
    assert [{k: v for k, v in r.items() if k != "wall"} for r in decisions] == expected


def test_records_are_flushed_when_the_clock_moves_to_a_new_bar(tmp_path):
    path = tmp_path / "audit.jsonl"
    c = Clock(ProtectionOrchestrator(the_profile(), AuditLog(path, FINGERPRINT)), bars=True)
    c.fill("AAA", 0, 0, 100)
    c.ask("AAA", 1, 100, 0)
    c.ask("BBB", 1, 0, 100)
    c.regime(2, "bull")  # the clock moves on: bar 1 is complete
    on_disk = list(read_audit(path))  # read while the run is still going
    decisions = [r for r in on_disk if r["kind"] == "decision"]
    assert [(r["asset"], r["bar"]) for r in decisions] == [("AAA", 1), ("BBB", 1)]
    assert any(r["kind"] == "fill" and r["bar"] == 0 for r in on_disk)
    c.ask("CCC", 3, 0, 100)
    c.ask("DDD", 4, 0, 100)
    assert ("CCC", 3) in [(r.get("asset"), r.get("bar")) for r in read_audit(path)]
    c.orch.close()
    assert [r.get("asset") for r in read_audit(path) if r["kind"] == "decision"] == [
        "AAA",
        "BBB",
        "CCC",
        "DDD",
    ]


def test_close_is_idempotent_and_flushes_the_last_bar(tmp_path):
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path)
    audit.record("note", day(0), 0, "t", {"x": 1})
    audit.close()
    audit.close()
    assert audit.closed
    assert [r["kind"] for r in read_audit(path)] == ["header", "note"]


@pytest.mark.parametrize("where", ["directory", "under-a-file"])
def test_unwritable_audit_path_raises_a_clear_error_at_construction(tmp_path, where):
    if where == "directory":
        path = tmp_path
    else:
        blocker = tmp_path / "file.txt"
        blocker.write_text("not a folder")
        path = blocker / "audit.jsonl"
    with pytest.raises(AuditWriteError, match="cannot write the audit log") as info:
        AuditLog(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, OSError)
    with pytest.raises(AuditWriteError):
        ProtectionOrchestrator(the_profile(), audit=path)


def test_read_audit_skips_a_truncated_last_line(tmp_path):
    path = tmp_path / "audit.jsonl"
    AuditLog(path, FINGERPRINT).close()
    with open(path, "ab") as handle:
        handle.write(b'{"seq": 1, "kind": "decis')
    assert [r["kind"] for r in read_audit(path)] == ["header"]


def test_closing_the_orchestrator_records_the_run_end_with_its_range_and_counts(tmp_path):
    path = tmp_path / "audit.jsonl"
    orch = ProtectionOrchestrator(the_profile(), AuditLog(path, FINGERPRINT))
    c = Clock(orch, bars=True)
    c.regime(0, "bull")
    c.fill("SPY", 0, 0, 100)
    c.ask("SPY", 3, 100, 0)  # core: denied
    c.ask("AAA", 4, 0, 10)
    orch.close()
    orch.close()  # a second close adds nothing
    records = list(read_audit(path))
    end = records[-1]
    assert [r["kind"] for r in records].count("run_end") == 1
    assert end["kind"] == "run_end"
    assert (end["first"], end["last"]) == (day(0).isoformat(), day(4).isoformat())
    assert (end["decisions"], end["approved"], end["denied"], end["errors"]) == (2, 1, 1, 0)


def test_a_constant_result_carries_its_audit_json_and_a_changed_copy_does_not(tmp_path):
    from dataclasses import replace

    from bt_protection.audit import dumps
    from bt_protection.protections.grace_period import GracePeriod

    grace = GracePeriod(profile().protections["grace_period"])
    constant = grace.constant("Not in grace.")
    assert constant.audit_json is not None and "audit_json" not in repr(constant)
    assert constant == grace.allow("Not in grace.")  # the cache is not part of the value
    changed = replace(constant, reason="Another reason.")  # what `annotate` does
    assert changed.audit_json is None
    assert orjson.loads(dumps({"r": changed}))["r"]["reason"] == "Another reason."
    assert orjson.loads(dumps({"r": constant})) == {
        "r": {"system": "grace_period", "allowed": True, "reason": "Not in grace.", "details": {}}
    }
