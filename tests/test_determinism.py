"""The same inputs give the same bytes: across processes, engine modes and compare's workers.

- `bt-protection run` twice, as two processes with different hash seeds and time zones:
  byte-identical run folders, and identical audits once `wall` is removed;
- `momentum_rotation` (rebalancer, scores, regime) in the four runonce/preload modes
  (test_runner.py does `sma_crossover`);
- `bt-protection compare --ablate` with `--jobs 1` and `--jobs 2`: every file of the two
  comparison folders, and a run inside a comparison equals the same run made by `run`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import SAMPLE_DATA
from helpers import RUN_FILES

from bt_protection.audit import read_audit
from bt_protection.cli import main
from bt_protection.runner import RunSpec, execute_run
from bt_protection.shipped import PROFILES

START, END = "2018-01-01", "2019-12-31"
# (PYTHONHASHSEED, TZ) of the two processes: set and dict order, and local time, must not matter
PROCESSES = (("0", "UTC"), ("4242", "Asia/Kolkata"))


def audit_without_wall(folder: Path) -> list[dict[str, Any]]:
    return list(read_audit(folder / "audit.jsonl", drop_wall=True))


def assert_same_run(first: Path, other: Path) -> None:
    for name in RUN_FILES:
        assert (other / name).read_bytes() == (first / name).read_bytes(), f"{other}/{name}"
    assert audit_without_wall(other) == audit_without_wall(first)


def run_process(out: Path, strategy: str, hashseed: str, tz: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hashseed, "TZ": tz}
    argv = ["--strategy", strategy, "--profile", str(PROFILES / "balanced.yaml")]
    window = ["--data", str(SAMPLE_DATA), "--start", START, "--end", END]
    done = subprocess.run(
        [sys.executable, "-m", "bt_protection", "run", *argv, *window, "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.replace(str(out), "<out>")


PROCESS_STRATEGIES = ("momentum_rotation", "sma_crossover")


@pytest.mark.parametrize("strategy", PROCESS_STRATEGIES)
def test_two_processes_write_the_same_run(tmp_path: Path, strategy: str) -> None:
    outs = [tmp_path / f"p{i}" for i in range(len(PROCESSES))]
    printed = [run_process(out, strategy, *env) for out, env in zip(outs, PROCESSES, strict=True)]
    assert printed[0] == printed[1] and printed[0].startswith("<out>: total return ")
    assert_same_run(outs[0], outs[1])
    records = audit_without_wall(outs[0])
    assert sum(r["kind"] == "decision" for r in records) > 10  # a run with decisions
    # the wall clock is the only difference, and it sits under `wall` only
    walls = [r for r in read_audit(outs[1] / "audit.jsonl") if "wall" in r]
    assert walls and all(set(r["wall"]) == {"decision_time_us"} for r in walls)


MODES = [(True, False), (False, True), (False, False)]


def test_momentum_rotation_is_the_same_in_every_engine_mode(tmp_path: Path) -> None:
    def spec(runonce: bool, preload: bool) -> RunSpec:
        return RunSpec(
            "momentum_rotation",
            str(PROFILES / "balanced.yaml"),
            data=str(SAMPLE_DATA),
            start=START,
            end=END,
            runonce=runonce,
            preload=preload,
        )

    first = execute_run(spec(True, True), tmp_path / "once-pre")
    assert len(audit_without_wall(first)) > 10
    for runonce, preload in MODES:
        other = execute_run(spec(runonce, preload), tmp_path / f"{runonce}-{preload}")
        assert_same_run(first, other)


COMPARE_PROFILES = ("off", "balanced")
COMPARE_RUNS = 1 + 1 + 5  # off, balanced, and balanced without each of its 5 systems


def compare(out: Path, jobs: int) -> None:
    profiles = [str(PROFILES / f"{name}.yaml") for name in COMPARE_PROFILES]
    argv = ["compare", "--strategy", "sma_crossover", "--profiles", *profiles, "--ablate"]
    window = ["--data", str(SAMPLE_DATA), "--start", START, "--end", END]
    assert main([*argv, *window, "--jobs", str(jobs), "--out", str(out)]) == 0


def test_compare_jobs_1_and_jobs_2_write_the_same_files(tmp_path: Path) -> None:
    one, two = tmp_path / "jobs1", tmp_path / "jobs2"
    compare(one, 1)
    compare(two, 2)
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    runs = {f.parent for f in files if f.name == "summary.json"}
    assert len(runs) == COMPARE_RUNS
    for name in files:
        if name.name == "audit.jsonl":
            assert audit_without_wall(two / name.parent) == audit_without_wall(one / name.parent)
        else:
            assert (two / name).read_bytes() == (one / name).read_bytes(), name
    # a run inside a comparison is the run `bt-protection run` makes
    alone = execute_run(
        RunSpec(
            "sma_crossover",
            str(PROFILES / "balanced.yaml"),
            data=str(SAMPLE_DATA),
            start=START,
            end=END,
        ),
        tmp_path / "alone",
    )
    assert_same_run(alone, one / "balanced")
