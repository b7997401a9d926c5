"""Faults injected into real runs, and profile safety.

- a protection that raises (in a check or in an event hook) during a real backtrader run: the run
  goes on under `on_error`, and the error is in the decision, the audit, the metrics and
  summary.json;
- an audit file that cannot be opened (refused before the first bar) or whose writes start to
  fail midway (the run stops at the first failed write with a sentence naming the file; the
  audit keeps every whole record written before);
- a strategy that raises midway, from every place user code runs (next, notify_order, the
  notify_protection hook, a timer): `<out>.failed/` with status.json, and every decision of
  every order attempted before the crash in its audit;
- a `compare` worker killed with SIGKILL: the other runs are kept, the killed one is marked
  failed and is not a complete run folder;
- `extends` that leaves the folder tree of the profile the user named is refused.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import backtrader as bt
import pandas as pd
import pytest
import yaml
from conftest import SAMPLE_DATA

from bt_protection.audit import AuditLog, AuditWriteError, read_audit
from bt_protection.cli import main
from bt_protection.data import load_universe
from bt_protection.errors import ProfileError, UserError
from bt_protection.integration.feeds import add_feeds
from bt_protection.integration.mixin import ProtectionMixin
from bt_protection.models import ProtectionDecision
from bt_protection.profile import load_profile
from bt_protection.protections.base import registry
from bt_protection.runner import RunFailed, RunSpec, execute_run
from bt_protection.runs import load_run
from bt_protection.shipped import PROFILES

START, END = "2019-01-01", "2019-12-31"


def sample_spec(strategy: str | type, profile: Path, **kwargs: Any) -> RunSpec:
    return RunSpec(strategy, str(profile), data=str(SAMPLE_DATA), start=START, end=END, **kwargs)


def balanced_with(tmp_path: Path, **changes: Any) -> Path:
    """The shipped balanced profile with top-level `changes`, written to tmp_path/profile.yaml."""
    settings = yaml.safe_load((PROFILES / "balanced.yaml").read_text(encoding="utf-8"))
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump({**settings, **changes}), encoding="utf-8")
    return path


def whole_records(audit: Path) -> list[dict[str, Any]]:
    """Every line of the audit as a record: no line is cut, seq counts from 0 without gaps."""
    lines = audit.read_bytes().splitlines(keepends=True)
    records = list(read_audit(audit, drop_wall=True))
    assert len(records) == len(lines), "the audit ends with a cut line"
    assert [r["seq"] for r in records] == list(range(len(records)))
    return records


def decisions_of(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["kind"] == "decision"]


# --------------------------------------------------------------------------- a protection raises

# (system, method, on_error): checks raise inside a decision, hooks inside an event
PROTECTION_FAULTS = [
    ("holding_period", "check", "deny"),
    ("holding_period", "check", "approve"),
    ("whipsaw_protection", "check", "deny"),
    ("core_asset_immunity", "check", "approve"),
    ("holding_period", "on_fill", "deny"),
    ("whipsaw_protection", "on_fill", "approve"),
    ("grace_period", "after_decision", "deny"),
    ("regime_override", "on_regime", "deny"),
    ("core_asset_immunity", "on_scores", "deny"),
]


def inject(
    monkeypatch: pytest.MonkeyPatch, system: str, method: str, every: int = 3
) -> Counter[str]:
    """Make `system.method` raise RuntimeError on every `every`-th call; counts calls/raises."""
    cls = registry()[system]
    original: Callable[..., Any] = getattr(cls, method)
    calls: Counter[str] = Counter()

    def faulty(self: Any, *args: Any) -> Any:
        calls["calls"] += 1
        if calls["calls"] % every == 0:
            calls["raised"] += 1
            raise RuntimeError(f"injected fault {calls['raised']}")
        return original(self, *args)

    monkeypatch.setattr(cls, method, faulty)
    return calls


@pytest.mark.parametrize(("system", "method", "on_error"), PROTECTION_FAULTS)
def test_a_protection_that_raises_does_not_stop_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, system: str, method: str, on_error: str
) -> None:
    profile = balanced_with(tmp_path, on_error=on_error)
    calls = inject(monkeypatch, system, method)
    strategy = "momentum_rotation" if method == "on_scores" else "sma_crossover"
    out = execute_run(sample_spec(strategy, profile), tmp_path / "run")

    # the run went on to the end
    assert json.loads((out / "status.json").read_text()) == {"status": "complete"}
    assert calls["raised"] > 0
    equity = pd.read_csv(out / "equity.csv")
    assert equity["date"].iloc[-1] == END
    # every fault is an error record, counted in summary.json, named with its system
    records = whole_records(out / "audit.jsonl")
    errors = [r for r in records if r["kind"] == "error"]
    summary = json.loads((out / "summary.json").read_text())
    assert len(errors) == calls["raised"] == summary["errors"]
    for record in errors:
        assert record["error"].startswith(f"{system} raised RuntimeError: injected fault ")
        if method not in ("check", "after_decision"):
            assert record["hook"] == method
    decisions = decisions_of(records)
    orders = pd.read_csv(out / "orders.csv", keep_default_na=False)
    assert list(orders["attempt"]) == [d["metadata"]["attempt"] for d in decisions]
    if method != "check":
        assert not any(d["error"] for d in decisions)  # events fail outside decisions
        return
    # a failing check decides as on_error says, and says so in the decision
    failed = [d for d in decisions if d["error"]]
    assert len(failed) == calls["raised"]
    label = dict(zip(orders["attempt"], orders["protection"], strict=True))
    status = dict(zip(orders["attempt"], orders["status"], strict=True))
    for decision in failed:
        attempt = decision["metadata"]["attempt"]
        result = next(r for r in decision["results"] if r["system"] == system)
        assert result["reason"].startswith(f"{system} raised RuntimeError: injected fault ")
        assert result["reason"].endswith(
            "lets the order pass." if on_error == "approve" else "keeps the position."
        )
        assert result["allowed"] is (on_error == "approve")
        lifted = system in decision["overridden_systems"]
        if on_error == "approve" or lifted or decision["exempt"]:
            assert system not in decision["blocking_systems"]
        else:
            assert system in decision["blocking_systems"] and not decision["approved"]
            assert (label[attempt], status[attempt]) == ("denied", "Rejected")
    # decisions after the first fault still happened
    assert max(d["metadata"]["attempt"] for d in decisions) > failed[0]["metadata"]["attempt"]


# --------------------------------------------------------------------------- unwritable audit


class Counting(ProtectionMixin, bt.Strategy):
    """Buys and sells AAPL every 10 bars; counts the bars it saw."""

    bars = 0

    def next(self) -> None:
        type(self).bars += 1
        if len(self) % 10 == 0 and not self.position:
            self.buy(size=1)
        elif len(self) % 10 == 0:
            self.close()


def _read_only_folder(tmp_path: Path) -> Path:
    """A folder where no file can be created: chmod 555, or /sys when we are root (root ignores
    permissions; sysfs refuses new files to everyone)."""
    if os.geteuid() == 0:
        return Path("/sys")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


UNWRITABLE = {
    "a folder": (lambda tmp: tmp, "Is a directory"),
    "under a file": (
        lambda tmp: tmp / "file.txt" / "audit.jsonl",
        "{tmp}/file.txt is a file, not a folder",
    ),
    "name too long": (lambda tmp: tmp / ("a" * 300 + ".jsonl"), "File name too long"),
    "read-only folder": (lambda tmp: _read_only_folder(tmp) / "audit.jsonl", "Permission denied"),
}


@pytest.mark.parametrize("via", ["audit_path", "profile audit.path"])
@pytest.mark.parametrize("case", UNWRITABLE, ids=list(UNWRITABLE))
def test_an_audit_that_cannot_be_opened_stops_before_the_first_bar(
    tmp_path: Path, case: str, via: str
) -> None:
    (tmp_path / "file.txt").write_text("not a folder")
    where, reason = UNWRITABLE[case]
    path = where(tmp_path)
    profile: dict[str, Any] = {"name": "hold", "protections": {"holding_period": {}}}
    cerebro = bt.Cerebro(stdstats=False)
    add_feeds(cerebro, load_universe(SAMPLE_DATA, ["AAPL"], START, END))
    if via == "audit_path":
        cerebro.addstrategy(Counting, protection=profile, audit_path=str(path))
    else:
        cerebro.addstrategy(Counting, protection={**profile, "audit": {"path": str(path)}})
    Counting.bars = 0
    with pytest.raises(AuditWriteError) as caught:
        cerebro.run()
    reason = reason.format(tmp=tmp_path)
    assert str(caught.value) == f"cannot write the audit log {path}: {reason}."
    assert isinstance(caught.value, UserError)  # the CLI prints it as one sentence
    assert Counting.bars == 0


class FullDisk:
    """Stands in for the audit's file: the first `good` flushes reach the real file, then every
    flush fails as a full disk does; what was not flushed never reaches the file."""

    def __init__(self, real: Any, good: int) -> None:
        self.real, self.good, self.flushes, self.written = real, good, 0, 0
        self.buffer: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.buffer.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        self.flushes += 1
        if self.flushes > self.good:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.written += self.real.write(b"".join(self.buffer))
        self.buffer.clear()
        self.real.flush()

    def close(self) -> None:
        self.real.close()


# the audit flushes at each new trace and after each decision; a bar whose portfolio value is
# held (no event) flushes only what earlier bars wrote: the first decision reaches the file at
# the 9th flush (bar 124)
GOOD_FLUSHES = (1, 5, 60)


@pytest.mark.parametrize("good_flushes", GOOD_FLUSHES)
def test_an_audit_write_that_fails_midway_stops_the_run_with_a_sentence(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    good_flushes: int,
) -> None:
    """`good_flushes` counts the header's: 1 fails at the first flush after the header."""
    disks: list[FullDisk] = []
    opened = AuditLog.__init__

    def init(self: AuditLog, *args: Any, **kwargs: Any) -> None:
        opened(self, *args, **kwargs)  # the header reaches the real file
        disks.append(FullDisk(self._file, good_flushes - 1))
        self._file = disks[-1]  # type: ignore[assignment]

    monkeypatch.setattr(AuditLog, "__init__", init)
    out = tmp_path / "run"
    argv = ["run", "--strategy", "sma_crossover", "--profile", str(PROFILES / "balanced.yaml")]
    code = main(
        [*argv, "--data", str(SAMPLE_DATA), "--start", START, "--end", END, "--out", str(out)]
    )
    err = capsys.readouterr().err
    audit = tmp_path / "run.partial" / "audit.jsonl"
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(
        f"bt-protection run: error: run {out} failed: AuditWriteError: cannot write the audit "
        f"log {audit} after record "
    )
    assert ": No space left on device." in err
    # stopped at the first failed write: one failing flush, then the one closing the log
    assert disks[0].flushes == (good_flushes - 1) + 2
    failed = tmp_path / "run.failed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.failed"]
    status = json.loads((failed / "status.json").read_text())
    assert status["status"] == "failed" and status["error"].startswith("AuditWriteError: ")
    # what reached the disk is whole and in order: the header, then what the good flushes gave
    audit = failed / "audit.jsonl"
    records = whole_records(audit)
    assert records[0]["kind"] == "header"
    header = len(audit.read_bytes().splitlines(keepends=True)[0])
    assert audit.stat().st_size == header + disks[0].written
    attempts = [d["metadata"]["attempt"] for d in decisions_of(records)]
    assert attempts == list(range(1, len(attempts) + 1))
    assert (len(attempts) > 0) is (good_flushes == GOOD_FLUSHES[-1])


# --------------------------------------------------------------------------- a strategy raises


CRASH_BAR = 120
SITES = ("next", "notify_order", "notify_protection", "notify_timer")
ENGINES = (True, False)  # runonce: backtrader's vectorised and bar-by-bar loops


class Crashy(ProtectionMixin, bt.Strategy):
    """Rebalances every 4 bars (and from a timer each session); raises at CRASH_BAR from `site`
    after placing that bar's orders. Logs every decision it is told about, in order."""

    site = "next"
    log: list[ProtectionDecision] = []  # a subclass per test gets its own

    def __init__(self) -> None:
        self.add_timer(when=bt.timer.SESSION_START)

    def crash(self, site: str) -> None:
        if site == self.site and len(self) >= CRASH_BAR:
            raise RuntimeError(f"crash in {site}")

    def trade(self) -> None:
        for i, data in enumerate(self.datas):
            weight = 0.3 if (len(self) // 4 + i) % 2 else 0.0
            self.order_target_percent(data, target=weight)

    def notify_timer(self, timer: Any, when: Any, *args: Any, **kwargs: Any) -> None:
        if len(self) % 4 == 2:
            self.buy(self.datas[-1], size=1)
        if len(self) >= CRASH_BAR:
            self.buy(self.datas[0], size=2)
            self.crash("notify_timer")

    def notify_protection(self, decision: ProtectionDecision) -> None:
        type(self).log.append(decision)
        if len(self) >= CRASH_BAR and len(type(self).log) > 2:
            self.crash("notify_protection")

    def notify_order(self, order: Any) -> None:
        if order.status == order.Completed:
            self.crash("notify_order")

    def next(self) -> None:
        if len(self) % 4 == 0 or len(self) >= CRASH_BAR:
            self.trade()
        self.crash("next")


@pytest.mark.parametrize("runonce", ENGINES, ids=["runonce", "runnext"])
@pytest.mark.parametrize("site", SITES)
def test_a_strategy_crash_keeps_every_decision_made_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, site: str, runonce: bool
) -> None:
    crashy = type("Crashy", (Crashy,), {"site": site, "log": []})
    profile = balanced_with(tmp_path)
    out = tmp_path / "run"
    with pytest.raises(RunFailed) as caught:
        execute_run(sample_spec(crashy, profile, runonce=runonce), out)
    assert f"failed: RuntimeError: crash in {site}" in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["profile.yaml", "run.failed"]
    failed = tmp_path / "run.failed"
    assert json.loads((failed / "status.json").read_text()) == {
        "status": "failed",
        "error": f"RuntimeError: crash in {site}",
    }
    assert not (failed / "summary.json").exists()
    with pytest.raises(UserError, match="did not complete: RuntimeError: crash in"):
        load_run(failed)

    records = whole_records(failed / "audit.jsonl")
    decisions = decisions_of(records)
    # every decision the strategy was told about is in the audit, in order, and nothing else
    assert len(crashy.log) > 20
    assert [d["metadata"]["attempt"] for d in decisions] == list(range(1, len(crashy.log) + 1))
    for record, decision in zip(decisions, crashy.log, strict=True):
        assert (record["asset"], record["action"], record["approved"]) == (
            decision.asset,
            decision.action.value,
            decision.approved,
        )
        assert record["trace_id"] == decision.trace_id
    if site != "notify_order":  # that one raises as the bar opens, before its orders
        assert decisions[-1]["bar"] >= CRASH_BAR - 1  # the crash bar's own orders are there
    if site != "notify_timer":  # timers run outside the bar loop the mixin watches
        assert records[-1]["kind"] == "run_failed"
        assert records[-1]["error"] == f"RuntimeError: crash in {site}"


# --------------------------------------------------------------------------- a killed worker

KILLER = textwrap.dedent(
    """
    import os
    import signal
    import sys

    from bt_protection.strategies import SmaCrossover


    class KillsItself(SmaCrossover):
        \"\"\"sma_crossover that SIGKILLs its own process at bar 100 under $BT_KILL_PROFILE.\"\"\"

        def next(self):
            wanted = os.environ.get("BT_KILL_PROFILE")
            if wanted == self.protection.profile.name and len(self) >= 100:
                os.kill(os.getpid(), signal.SIGKILL)
            super().next()


    if __name__ == "__main__":
        from bt_protection.cli import main

        sys.exit(main(sys.argv[1:]))
    """
)
KILL_PROFILES = ("off", "balanced", "aggressive")


def compare_killing(
    tmp_path: Path, jobs: int, kill: str | None
) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "killer.py"
    script.write_text(KILLER, encoding="utf-8")
    env = {**os.environ, "BT_KILL_PROFILE": kill or ""}
    profiles = [str(PROFILES / f"{name}.yaml") for name in KILL_PROFILES]
    strategy = f"{script}:KillsItself"
    argv = ["compare", "--strategy", strategy, "--profiles", *profiles, "--jobs", str(jobs)]
    window = ["--data", str(SAMPLE_DATA), "--start", START, "--end", END]
    return subprocess.run(
        [sys.executable, str(script), *argv, *window, "--out", str(tmp_path / "cmp")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )


def test_a_killed_compare_worker_fails_alone(tmp_path: Path) -> None:
    done = compare_killing(tmp_path, jobs=2, kill="balanced")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "1 of 3 runs failed: balanced." in done.stderr
    out = tmp_path / "cmp"
    manifest = json.loads((out / "comparison.json").read_text())
    assert [r["status"] for r in manifest["runs"]] == ["complete", "failed", "complete"]
    assert list(pd.read_csv(out / "comparison.csv")["run"]) == ["off", "aggressive"]
    for name in ("off", "aggressive"):
        assert load_run(out / name).summary["profile"] == name
    with pytest.raises(UserError):  # the killed run is not mistaken for a complete one
        load_run(out / "balanced")


def test_a_killed_compare_process_leaves_the_earlier_comparison_alone(tmp_path: Path) -> None:
    """--jobs 1 runs in the compare process itself: killing it must not touch `--out`, and
    nothing it leaves behind looks complete."""
    first = compare_killing(tmp_path, jobs=1, kill=None)
    assert first.returncode == 0, first.stderr
    out = tmp_path / "cmp"
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    killed = compare_killing(tmp_path, jobs=1, kill="balanced")
    assert killed.returncode == -signal.SIGKILL
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    partial = tmp_path / "cmp.partial"
    assert (partial / "off" / "status.json").is_file()  # finished before the kill
    assert not (partial / "balanced").exists()  # the killed run never became a run folder
    assert not (partial / "balanced.partial" / "status.json").exists()
    # the next comparison starts clean
    again = compare_killing(tmp_path, jobs=1, kill=None)
    assert again.returncode == 0 and not partial.exists()


# --------------------------------------------------------------------------- extends stays home


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def refused(source: Any) -> str:
    with pytest.raises(ProfileError) as caught:
        load_profile(source)
    return str(caught.value)


def test_extends_may_not_climb_out_of_the_named_profiles_folder(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", "on_error: approve\n")
    child = write(
        tmp_path / "team", "child.yaml", "name: child\nmode: shadow\nextends: ../base.yaml\n"
    )
    assert refused(child) == (
        f"{child}:3: extends: {tmp_path / 'base.yaml'} lies outside {tmp_path / 'team'}; "
        "extends may only name files in that folder or its subfolders."
    )


def test_absolute_and_symlinked_extends_outside_are_refused(tmp_path: Path) -> None:
    outside = write(tmp_path / "elsewhere", "base.yaml", "on_error: approve\n")
    home = tmp_path / "home"
    absolute = write(home, "abs.yaml", f"extends: {outside}\n")
    assert f"abs.yaml:1: extends: {outside} lies outside {home};" in refused(absolute)
    (home / "link.yaml").symlink_to(outside)  # inside by name, outside once resolved
    linked = write(home, "linked.yaml", "extends: link.yaml\n")
    assert f"linked.yaml:1: extends: {home / 'link.yaml'} lies outside {home};" in refused(linked)
    etc = write(home, "etc.yaml", "extends: /etc/passwd\n")
    assert "extends: /etc/passwd lies outside" in refused(etc)  # refused before it is read


def test_extends_of_the_whole_chain_stay_under_the_first_profiles_folder(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", "on_error: approve\n")
    write(tmp_path / "shared", "mid.yaml", "extends: ../base.yaml\nmode: shadow\n")
    top = write(tmp_path, "top.yaml", "name: top\nextends: shared/mid.yaml\n")
    profile = load_profile(top)  # mid climbs back to base, still under top's folder: allowed
    assert (profile.name, profile.mode.value, profile.on_error.value) == (
        "top",
        "shadow",
        "approve",
    )
    # named directly, mid's own folder is the limit, and base lies above it
    mid = tmp_path / "shared" / "mid.yaml"
    assert refused(mid).startswith(f"{mid}:1: extends: {tmp_path / 'base.yaml'} lies outside ")
    # a file deep in the chain that leaves the first folder is named with its line
    write(tmp_path / "shared", "far.yaml", "mode: shadow\n\nextends: ../../base.yaml\n")
    top2 = write(tmp_path, "top2.yaml", "extends: shared/far.yaml\n")
    far = tmp_path / "shared" / "far.yaml"
    assert refused(top2).startswith(f"{far}:3: extends: {tmp_path.parent / 'base.yaml'} lies ")
    assert f"lies outside {tmp_path};" in refused(top2)


def test_a_mapping_extends_only_below_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "base.yaml", "on_error: approve\n")
    write(tmp_path / "work" / "profiles", "inner.yaml", "mode: shadow\n")
    monkeypatch.chdir(tmp_path / "work")
    assert load_profile({"extends": "profiles/inner.yaml"}).mode.value == "shadow"
    message = refused({"extends": "../base.yaml"})
    assert message == (
        f"<mapping>: extends: ../base.yaml lies outside {tmp_path / 'work'}; "
        "extends may only name files in that folder or its subfolders."
    )


def test_the_shipped_shadow_profile_still_extends_balanced() -> None:
    shadow = load_profile(PROFILES / "shadow.yaml")
    balanced = load_profile(PROFILES / "balanced.yaml")
    assert shadow.mode.value == "shadow"
    assert shadow.enabled_systems == balanced.enabled_systems


def test_validate_reports_an_extends_outside_as_an_invalid_profile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, "base.yaml", "on_error: approve\n")
    child = write(tmp_path / "team", "child.yaml", "extends: ../base.yaml\n")
    assert main(["validate", str(child)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"{child}:1: extends: ") and "lies outside" in out
