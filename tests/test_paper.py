"""`bt-protection paper` (SPEC 14, issue 19): killed with SIGKILL at seeded random moments and
resumed until done, a paper run writes the orders.csv of an uninterrupted run byte for byte and
its audit apart from `wall` and the records a restart adds; files that do not fit are refused.

Each run is a real process (forked from the test, so it skips the imports) that a crash drill
(`BT_PROTECTION_PAPER_KILL`) kills with a real SIGKILL: between bars (after a save), between a
decision and its fill (before the broker has the order), and inside a save's transaction.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import shutil
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from bt_protection.audit import read_audit
from bt_protection.cli import main
from bt_protection.integration.paper import KILL_VARIABLE
from bt_protection.shipped import SAMPLE_DATA
from bt_protection.state import read_state

START, END = "2015-07-01", "2016-06-30"  # short: each resume runs the backfill again


def paper_argv(strategy: str, profile: str, state: Path, out: Path, *extra: str) -> list[str]:
    return [
        "paper",
        "--strategy",
        strategy,
        "--profile",
        profile,
        "--data",
        str(SAMPLE_DATA),
        "--start",
        START,
        "--end",
        END,
        "--state",
        str(state),
        "--out",
        str(out),
        *extra,
    ]


def _child(argv: list[str], kill: str | None) -> None:
    if kill is None:
        os.environ.pop(KILL_VARIABLE, None)
    else:
        os.environ[KILL_VARIABLE] = kill
    os._exit(main(argv))


def run_process(argv: list[str], kill: str | None = None) -> int:
    """Run the CLI in a new process; its exit code (-9 when SIGKILL ended it)."""
    process = multiprocessing.get_context("fork").Process(target=_child, args=(argv, kill))
    process.start()
    process.join(timeout=300)
    assert process.exitcode is not None, "the paper process hung"
    return process.exitcode


def audit_without_restarts(path: Path) -> list[dict[str, Any]]:
    """The audit's records without `wall`, `session_id` and the records a restart adds."""
    records = []
    for record in read_audit(path, drop_wall=True):
        if record.get("restart"):
            continue
        record.pop("session_id", None)
        records.append(record)
    return records


def kill_plan(seed: int) -> list[str]:
    """Five kill points: each kind once, two more at random; counts drawn small enough that
    every session dies before the data ends."""
    rng = random.Random(seed)
    kinds = ["bar", "order", "save", rng.choice(["bar", "order", "save"]), "save"]
    rng.shuffle(kinds)
    limits = {"bar": 40, "order": 4, "save": 40}
    return [f"{kind}:{rng.randint(1, limits[kind])}" for kind in kinds]


def uninterrupted(tmp: Path, strategy: str, profile: str) -> Path:
    out = tmp / "whole"
    assert run_process(paper_argv(strategy, profile, tmp / "whole.db", out)) == 0
    return out


@pytest.mark.parametrize(
    ("strategy", "profile", "seed"),
    [
        ("sma_crossover", "balanced", 1),
        ("sma_crossover", "portfolio_guard", 2),
        ("momentum_rotation", "balanced", 3),
        ("momentum_rotation", "portfolio_guard", 4),
    ],
)
def test_killed_and_resumed_equals_an_uninterrupted_run(
    tmp_path: Path, strategy: str, profile: str, seed: int
) -> None:
    whole = uninterrupted(tmp_path, strategy, profile)
    orders = (whole / "orders.csv").read_text()
    assert orders.count("\n") > 10, "too few orders for the test to prove anything"
    state, out = tmp_path / "cut.db", tmp_path / "cut"
    argv = paper_argv(strategy, profile, state, out)
    codes = [run_process(argv, kill) for kill in kill_plan(seed)]
    assert codes == [-signal.SIGKILL] * 5  # each session died where the drill said
    assert run_process(argv) == 0  # resumed until done
    assert (out / "orders.csv").read_text() == orders
    assert audit_without_restarts(out / "audit.jsonl") == audit_without_restarts(
        whole / "audit.jsonl"
    )
    restarts = [r for r in read_audit(out / "audit.jsonl") if r["kind"] == "restart"]
    assert 1 <= len(restarts) <= 5  # a kill before the first save leaves nothing to resume


def test_stopped_at_until_then_resumed_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    whole = uninterrupted(tmp_path, "sma_crossover", "balanced")
    state, out = tmp_path / "cut.db", tmp_path / "cut"
    argv = paper_argv("sma_crossover", "balanced", state, out)
    assert run_process([*argv, "--until", "2015-10-03"]) == 0  # a Saturday: stops on the 2nd
    assert read_state(state)[1]["bar"][0].date().isoformat() == "2015-10-02"
    assert run_process([*argv, "--until", "2015-10-03"]) == 0  # nothing new to run
    assert run_process(argv) == 0
    assert (out / "orders.csv").read_text() == (whole / "orders.csv").read_text()
    assert audit_without_restarts(out / "audit.jsonl") == audit_without_restarts(
        whole / "audit.jsonl"
    )


def test_a_paper_run_decides_as_the_backtest(tmp_path: Path) -> None:
    # the live feed, the paper broker and the saves change nothing the strategy does
    argv = paper_argv("momentum_rotation", "portfolio_guard", tmp_path / "s.db", tmp_path / "p")
    assert main(argv) == 0
    run = ["run", *argv[1 : argv.index("--state")], "--out", str(tmp_path / "run")]
    assert main(run) == 0
    paper = (tmp_path / "p" / "orders.csv").read_text()
    assert paper.count("\n") > 10
    assert paper == (tmp_path / "run" / "orders.csv").read_text()


@pytest.fixture
def started(tmp_path: Path) -> tuple[Path, Path]:
    """A paper run stopped after its first months: (state file, out folder)."""
    state, out = tmp_path / "state.db", tmp_path / "out"
    argv = paper_argv("sma_crossover", "balanced", state, out, "--until", "2015-08-31")
    assert main(argv) == 0
    return state, out


def _refused(
    capsys: pytest.CaptureFixture[str], argv: list[str], sentence: str, kept: list[Path]
) -> None:
    before = {p: p.read_bytes() for p in kept}
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert sentence in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in kept} == before  # nothing overwritten


def test_another_profile_is_refused_and_nothing_written(
    started: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    state, out = started
    argv = paper_argv("sma_crossover", "conservative", state, out)
    kept = [state, out / "orders.csv", out / "audit.jsonl"]
    _refused(capsys, argv, "was written under profile hash", kept)


def test_other_assets_are_refused_and_nothing_written(
    started: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state, out = started
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    for ticker in ("AAPL", "NVDA"):
        shutil.copy(SAMPLE_DATA / f"{ticker}.csv", fewer)
    argv = paper_argv("sma_crossover", "balanced", state, out)
    argv[argv.index("--data") + 1] = str(fewer)
    _refused(capsys, argv, "not AAPL, NVDA", [state, out / "orders.csv", out / "audit.jsonl"])


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_or_truncated_state_file_is_refused_and_kept(
    started: tuple[Path, Path], capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    state, out = started
    whole = state.read_bytes()
    state.write_bytes(b"no database" * 300 if damage == "garbage" else whole[: len(whole) // 3])
    argv = paper_argv("sma_crossover", "balanced", state, out)
    _refused(capsys, argv, "is corrupt or truncated", [state, out / "audit.jsonl"])


def test_a_state_file_of_no_paper_run_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bt_protection.profile import load_profile
    from bt_protection.state import StateFile
    from bt_protection.state_rows import StateRows

    state = tmp_path / "live.db"
    store = StateFile.open(
        state, load_profile("balanced"), ["AAPL", "AMZN", "GOOG", "META", "NFLX", "NVDA"]
    )
    store.save(StateRows({"orchestrator": {}, "bar": None, "attempts": 0}))
    store.close()
    argv = paper_argv("sma_crossover", "balanced", state, tmp_path / "out")
    _refused(capsys, argv, "no paper broker: it was not written by bt-protection paper", [state])


@pytest.mark.parametrize(
    ("extra", "sentence"),
    [
        (["--param", "fast=10"], "was started with strategy_params"),
        (["--cash", "50000"], "was started with cash 100000.0, not 50000.0"),
    ],
)
def test_a_resume_on_other_inputs_is_refused(
    started: tuple[Path, Path], capsys: pytest.CaptureFixture[str], extra: list[str], sentence: str
) -> None:
    state, out = started
    argv = paper_argv("sma_crossover", "balanced", state, out, *extra)
    _refused(capsys, argv, sentence, [state, out / "orders.csv", out / "audit.jsonl"])


def test_a_lost_audit_log_is_refused(
    started: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    state, out = started
    (out / "audit.jsonl").unlink()
    argv = paper_argv("sma_crossover", "balanced", state, out)
    _refused(capsys, argv, "which is gone; resume with the same --out", [state])


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_state_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        argv = paper_argv("sma_crossover", "balanced", folder / "state.db", tmp_path / "out")
        _refused(capsys, argv, "cannot be opened or written", [])
    finally:
        folder.chmod(0o700)


def test_the_broker_is_saved_in_the_same_transaction_as_the_state(
    started: tuple[Path, Path],
) -> None:
    state, _ = started
    with sqlite3.connect(state) as db:
        broker = db.execute("SELECT value FROM records WHERE key = 'paper.broker'").fetchone()
    saved = read_state(state)[1]
    assert saved is not None and broker is not None
    import json

    record = json.loads(broker[0])
    assert record["time"] == saved["bar"][0].isoformat() and record["bar"] == saved["bar"][1]
