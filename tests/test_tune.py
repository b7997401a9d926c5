"""`bt-protection tune`: folds, search, statistics, outputs, engines, resume and bad input.

One small tune (sma_crossover on AAPL and NVDA, 2018-2020, train 1y / test 6m, 4 candidates,
3 folds, 27 real backtests) is computed once per module in this process and the other runs
(another process count, a Dask cluster, a killed and resumed CLI run, truncated data) are
compared with it byte for byte.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import PROJECT_ROOT, SAMPLE_DATA

from bt_protection.audit import read_audit
from bt_protection.cli import main
from bt_protection.data import load_universe
from bt_protection.errors import UserError
from bt_protection.profile import load_profile
from bt_protection.shipped import PROFILES
from bt_protection.tune import WalkForward, walk_forward
from bt_protection.tune.folds import make_folds
from bt_protection.tune.search import TuneSettings, choose
from bt_protection.tune.space import check_candidates, load_space
from bt_protection.tune.stats import deflated_sharpe, paired_bootstrap
from bt_protection.tune.store import STORE_NAME, TrialStore
from bt_protection.tune.trials import Objective, trial_key
from bt_protection.tune.walk import _search

SPACE = {
    "protections.holding_period.min_hold": ["5 bars", "20 bars"],
    "protections.whipsaw_protection.enabled": [True, False],
}
TUNE = {
    "data": str(SAMPLE_DATA),
    "tickers": ["AAPL", "NVDA"],
    "start": "2018-01-01",
    "end": "2020-12-31",
    "train": "1y",
    "test": "6m",
    "warmup": 60,
    "progress": False,
    "timing_shifts": 2,  # the timing test runs, small (tests/test_tune_timing.py checks it)
}
CLI = [
    "tune", "--strategy", "sma_crossover", "--data", str(SAMPLE_DATA), "--tickers", "AAPL",
    "NVDA", "--start", "2018-01-01", "--end", "2020-12-31", "--train", "1y", "--test", "6m",
    "--warmup", "60", "--timing-shifts", "2",
]  # fmt: skip
IDENTICAL = ("folds.csv", "trials.csv", "verdict.json", "oos_equity.csv")


def space_file(folder: Path, text: str | None = None) -> Path:
    path = folder / "space.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(SPACE), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> WalkForward:
    folder = tmp_path_factory.mktemp("tune")
    return walk_forward("sma_crossover", space_file(folder), jobs=1, out=folder / "out", **TUNE)


def same_files(a: Path, b: Path) -> None:
    for name in IDENTICAL:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


# --------------------------------------------------------------------------- folds


def test_folds_do_not_overlap_and_follow_each_other() -> None:
    dates = pd.bdate_range("2015-01-01", "2020-12-31")
    for anchored in (False, True):
        folds = make_folds(dates, "2y", "6m", anchored=anchored, warmup=100)
        assert len(folds) == 7  # tests from 2017-05-21, six months each, to 2020-11-20
        for fold in folds:
            assert fold.train.last < fold.test.first
            assert fold.train.warmup == str(dates[dates.get_loc(fold.train.first) - 100].date())
        for before, after in zip(folds, folds[1:], strict=False):
            # test windows never overlap and follow each other without a gap
            assert dates.get_loc(after.test.first) == dates.get_loc(before.test.last) + 1
        starts = {f.train.first for f in folds}
        assert len(starts) == (1 if anchored else len(folds))


def test_a_test_window_is_the_same_without_the_data_after_it(
    tuned: WalkForward, tmp_path: Path
) -> None:
    """Cut the data at the end of fold 1's test window: folds 0 and 1, their trials and the
    out-of-sample equity up to that day are identical, so nothing after a window reached it."""
    end = tuned.folds.loc[1, "test_end"]
    short = walk_forward(
        "sma_crossover", space_file(tmp_path), jobs=1, out=tmp_path / "out",
        **(TUNE | {"end": end}),
    )  # fmt: skip
    assert len(short.folds) == 2
    pd.testing.assert_frame_equal(short.folds, tuned.folds.iloc[:2])
    pd.testing.assert_frame_equal(short.trials, tuned.trials[tuned.trials["fold"] < 2])
    early = tuned.oos_equity[tuned.oos_equity["date"] <= short.oos_equity["date"].max()]
    pd.testing.assert_frame_equal(short.oos_equity, early.reset_index(drop=True))


# --------------------------------------------------------------------------- search


def test_the_picker_takes_the_best_train_objective_on_a_constructed_case(
    tmp_path: Path,
) -> None:
    """Results are made up: fold 0's best is c2, fold 1 ties c1 and c3 (the lower index wins)
    with c0 failed, fold 2 has no defined objective at all (the base profile is used)."""
    settings = TuneSettings(train="1y", test="6m", warmup=60)
    search = _search(_spec(), space_file(tmp_path), None, settings)
    sharpes = {0: [0.1, 0.5, 0.9, 0.2], 1: [None, 0.7, 0.3, 0.7], 2: [None] * 4}
    results = {}
    for fold in search.folds:
        for i, profile in enumerate(search.profiles):
            value = sharpes[fold.index][i]
            key = trial_key(search.identity, fold.train, profile.hash, "train")
            failed = fold.index == 1 and i == 0
            results[key] = {
                "metrics": None if failed else {"sharpe": value},
                "error": "ValueError: boom" if failed else None,
            }
    assert choose(search, results) == {0: 2, 1: 1, 2: None}


def _spec():  # type: ignore[no-untyped-def]
    from bt_protection.runner import RunSpec

    return RunSpec(
        "sma_crossover", "", data=SAMPLE_DATA, tickers=("AAPL", "NVDA"), start="2018-01-01",
        end="2020-12-31",
    )  # fmt: skip


def test_grid_runs_every_candidate_and_each_fold_chooses_its_best(tuned: WalkForward) -> None:
    trials = tuned.trials
    assert len(trials) == 3 * 4 and set(trials["candidate"]) == {"c0", "c1", "c2", "c3"}
    assert (trials["error"].fillna("") == "").all()
    for fold, group in trials.groupby("fold"):
        best = group.sort_values(["objective", "candidate"], ascending=[False, True]).iloc[0]
        assert best["chosen"] and group["chosen"].sum() == 1
        row = tuned.folds.set_index("fold").loc[fold]
        assert row["chosen"] == best["candidate"]
        assert row["train_tuned_sharpe"] == pytest.approx(best["sharpe"])


def test_a_trial_that_raises_is_recorded_and_left_out(tmp_path: Path) -> None:
    """Candidate c1 watches a regime feed the data does not have: its backtests raise, its
    rows in trials.csv carry the error, and every fold chooses c0."""
    space = {"regime.data": ["NVDA", "XXX"]}
    walk = walk_forward("sma_crossover", space, jobs=1, out=tmp_path / "out", **TUNE)
    failed = walk.trials[walk.trials["candidate"] == "c1"]
    assert len(failed) == 3
    assert set(failed["error"]) == {
        "UserError: regime data 'XXX' is not a feed of this run; feeds: AAPL, NVDA."
    }
    assert failed["objective"].isna().all() and not failed["chosen"].any()
    assert list(walk.folds["chosen"]) == ["c0"] * 3
    assert walk.verdict["failed_trials"] == 3


TPE_SPACE = {
    "protections.holding_period.min_hold": {"bars": [5, 40], "step": 5},
    "protections.whipsaw_protection.enabled": [True, False],
    "protections.grace_period.enabled": [True, False],
}


def test_tpe_proposes_the_same_candidates_on_one_process_and_two(tmp_path: Path) -> None:
    """32 candidates, 6 proposals per fold in rounds of 4 and 2: the files do not depend on
    the worker count; each fold tried at most 6 distinct candidates of the grid and chose the
    best of those."""
    pytest.importorskip("optuna")
    runs = [
        walk_forward(
            "sma_crossover",
            TPE_SPACE,
            sampler="tpe",
            trials=6,
            jobs=jobs,
            out=tmp_path / f"jobs{jobs}",
            **TUNE,
        )  # fmt: skip
        for jobs in (1, 2)
    ]
    same_files(runs[0].path, runs[1].path)
    trials = runs[0].trials
    per_fold = trials.groupby("fold")["candidate"]
    assert (per_fold.nunique() <= 6).all() and (per_fold.nunique() >= 3).all()
    assert trials["candidate"].str[1:].astype(int).between(0, 31).all()
    for _, group in trials.groupby("fold"):
        assert group.loc[group["objective"].idxmax(), "chosen"]
    assert runs[0].verdict["candidates"] == 32 and runs[0].verdict["sampler"] == "tpe"


def test_tpe_without_optuna_is_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(UserError, match=r"`sampler` tpe needs Optuna; install it with pip"):
        walk_forward(
            "sma_crossover", TPE_SPACE, sampler="tpe", jobs=1, out=tmp_path / "out", **TUNE
        )
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- statistics


def test_bootstrap_of_a_constant_difference_is_that_difference() -> None:
    rng = np.random.default_rng(1)
    b = rng.normal(0, 0.01, 500)
    mean = lambda x: x.mean(axis=-1)  # noqa: E731
    result = paired_bootstrap(b + 0.001, b, mean, seed=3)
    assert result.ci == pytest.approx((0.001, 0.001))
    assert result.p_positive == 1.0
    same = paired_bootstrap(b, b, seed=3)  # Sharpe of identical arms: exactly 0
    assert (same.estimate, same.ci, same.p_positive) == (0.0, (0.0, 0.0), 0.0)


def test_bootstrap_of_iid_returns_matches_the_normal_answer() -> None:
    """For independent days the bootstrap of a mean difference must give the textbook
    interval: mean ± 1.645 s/√n, and P(diff > 0) = Φ(mean / (s/√n))."""
    rng = np.random.default_rng(7)
    n = 2000
    a, b = rng.normal(0.0004, 0.01, n), rng.normal(0.0, 0.01, n)
    d = a - b
    se = d.std(ddof=1) / math.sqrt(n)
    result = paired_bootstrap(a, b, lambda x: x.mean(axis=-1), seed=11, resamples=4000)
    half = (result.ci[1] - result.ci[0]) / 2
    assert half == pytest.approx(1.645 * se, rel=0.15)
    assert result.estimate == pytest.approx(d.mean())
    from statistics import NormalDist

    assert result.p_positive == pytest.approx(NormalDist().cdf(d.mean() / se), abs=0.05)


def test_deflated_sharpe_is_the_probabilistic_sharpe_for_one_trial_and_falls_with_more() -> None:
    rng = np.random.default_rng(5)
    r = rng.normal(0.001, 0.01, 750)
    one = deflated_sharpe(r, 1, 0.0)
    sr = r.mean() / r.std(ddof=1)
    centred = r - r.mean()
    skew = (centred**3).mean() / r.std() ** 3
    kurt = (centred**4).mean() / r.std() ** 4
    from statistics import NormalDist

    psr = NormalDist().cdf(
        sr * math.sqrt(len(r) - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2)
    )
    assert one["deflated_sharpe"] == pytest.approx(psr)
    values = [deflated_sharpe(r, n, 0.05**2)["deflated_sharpe"] for n in (2, 10, 100)]
    assert values[0] > values[1] > values[2]


# --------------------------------------------------------------------------- outputs


def test_output_folder_files(tuned: WalkForward) -> None:
    folder = tuned.path
    names = {p.name for p in folder.iterdir()}
    assert names == {
        "folds.csv", "trials.csv", "oos_equity.csv", "verdict.json", "report.md", "tune.png",
        "recommended.yaml", "fingerprint.json", STORE_NAME,
    }  # fmt: skip
    assert not folder.with_name(folder.name + ".partial").exists()
    verdict = json.loads((folder / "verdict.json").read_text())
    assert verdict["verdict"].startswith("over 3 folds tuned protection beat off")
    assert set(verdict["arms"]) == {"tuned", "base", "off"}
    assert 0 <= verdict["bootstrap"]["tuned_vs_off"]["p_positive"] <= 1
    recommended = load_profile(folder / "recommended.yaml")
    values = verdict["recommended"]["values"]
    assert (
        recommended.protections["holding_period"].min_hold.text
        == values["protections.holding_period.min_hold"]
    )
    # the stitched curve: every arm on the same test days, starting at the cash
    wide = tuned.equity()
    assert wide.notna().all().all() and (wide.iloc[0] == 100_000).all()
    days = load_universe(SAMPLE_DATA, ["AAPL", "NVDA"])["AAPL"].index
    windows = [
        days[(days >= r.test_start) & (days <= r.test_end)] for r in tuned.folds.itertuples()
    ]
    assert list(wide.index) == [d.strftime("%Y-%m-%d") for w in windows for d in w]
    assert (folder / "tune.png").read_bytes()[:4] == b"\x89PNG"
    assert verdict["verdict"] in (folder / "report.md").read_text()


def test_off_arm_never_denies_and_tuned_arm_is_a_candidate(
    tuned: WalkForward, tmp_path: Path
) -> None:
    """The off arm's stored results, found by their trial keys: none denied an order (the
    candidates, which protect, did deny some)."""
    assert set(tuned.folds["chosen"]) <= {"c0", "c1", "c2", "c3"}
    settings = TuneSettings(train="1y", test="6m", warmup=60)
    search = _search(_spec(), space_file(tmp_path), None, settings)
    keys = [
        trial_key(search.identity, window, search.off.hash, phase)
        for fold in search.folds
        for phase, window in (("train", fold.train), ("test", fold.test))
    ]
    store = TrialStore(tuned.path / STORE_NAME)
    try:
        off = store.load(keys)
    finally:
        store.close()
    assert len(off) == 2 * len(search.folds), "every off run of the tune is in its store"
    assert any(result["metrics"]["trades"] > 0 for result in off.values())
    assert [result["metrics"]["orders_denied"] for result in off.values()] == [0] * len(off)
    assert (tuned.trials["orders_denied"] > 0).any()
    verdict = tuned.verdict
    assert verdict["candidates"] == 4 and verdict["train_trials"] == 12


# --------------------------------------------------------------------------- engines


def test_two_processes_give_the_same_bytes(tuned: WalkForward, tmp_path: Path) -> None:
    other = walk_forward(
        "sma_crossover", space_file(tmp_path), jobs=2, out=tmp_path / "out", **TUNE
    )
    same_files(tuned.path, other.path)


@pytest.fixture(scope="module")
def cluster():  # type: ignore[no-untyped-def]
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as local:
        yield local


def test_dask_cluster_gives_the_same_bytes_even_when_a_worker_is_killed(
    tuned: WalkForward, cluster, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """A worker process is killed (SIGKILL) after the first result is stored: the scheduler
    runs its trials elsewhere and the files are those of the one-process tune."""
    out = tmp_path / "out"
    store = tmp_path / "out.partial" / STORE_NAME
    done: dict[str, object] = {}

    def tune() -> None:
        try:
            done["walk"] = walk_forward(
                "sma_crossover", space_file(tmp_path), scheduler=cluster.scheduler_address,
                out=out, **TUNE,
            )  # fmt: skip
        except BaseException as error:  # reported by the assertion below
            done["error"] = error

    thread = threading.Thread(target=tune)
    thread.start()
    stored = 0
    while thread.is_alive() and stored == 0:
        time.sleep(0.02)
        stored = _stored(store)
    assert thread.is_alive(), "the tune ended before a worker could be killed"
    victim = next(iter(cluster.workers.values()))
    os.kill(victim.process.process.pid, signal.SIGKILL)
    thread.join(timeout=120)
    assert "error" not in done, done.get("error")
    assert stored < 27
    same_files(tuned.path, out)


def test_compare_on_the_dask_cluster_writes_what_local_processes_write(
    cluster, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from bt_protection.compare import run_comparison

    profiles = [PROFILES / f"{name}.yaml" for name in ("off", "balanced")]
    common = {"data": SAMPLE_DATA, "start": "2019-01-01", "end": "2019-12-31", "progress": False}
    local = run_comparison("sma_crossover", profiles, jobs=1, out=tmp_path / "a", **common)
    remote = run_comparison(
        "sma_crossover", profiles, scheduler=cluster.scheduler_address, out=tmp_path / "b",
        ablate=False, **common,
    )  # fmt: skip
    assert (local.path / "comparison.csv").read_bytes() == (
        remote.path / "comparison.csv"
    ).read_bytes()
    for name in ("off", "balanced"):
        for file in ("orders.csv", "equity.csv", "summary.json"):
            assert (local.path / name / file).read_bytes() == (
                remote.path / name / file
            ).read_bytes()
        # the audit a Dask worker wrote in a folder of its own came back whole
        audits = [
            list(read_audit(c.path / name / "audit.jsonl", drop_wall=True)) for c in (local, remote)
        ]
        assert audits[0] == audits[1] and audits[0][0]["kind"] == "header"


def test_jobs_run_on_the_frames_sent_to_the_workers_not_on_files(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The job names a data folder that does not exist: every executor still runs it, on the
    price frames the engine sent, and gives what this process gives."""
    from bt_protection.engine import Engine, Execution, Task
    from bt_protection.job import RunSpec

    frames = load_universe(SAMPLE_DATA, ["AAPL", "NVDA"], "2019-01-01", "2019-12-31")
    spec = RunSpec("sma_crossover", load_profile("balanced").to_dict(), data=tmp_path / "gone")
    tasks = [Task("job-a", spec, tmp_path / "a.jsonl"), Task("job-b", spec)]
    runs = {}
    for name, execution in (
        ("here", Execution(jobs=1)),
        ("pool", Execution(jobs=2)),
        ("dask", Execution(scheduler=cluster.scheduler_address)),
    ):
        with Engine(frames, execution, spec.strategy) as engine:
            runs[name] = {task.key: result for task, result in engine.run(tasks)}
    here = runs["here"]["job-a"]
    assert here.error is None and here.summary is not None and here.summary["orders_attempted"] > 0
    for name in ("pool", "dask"):
        for key in ("job-a", "job-b"):
            result = runs[name][key]
            assert result.error is None, (name, result.error)
            assert result.summary == here.summary
            assert result.orders is not None and result.orders.equals(here.orders)
    assert runs["dask"]["job-a"].audit is not None  # written on the worker, sent back
    assert runs["dask"]["job-b"].audit is None  # a job without an audit writes none


def _stored(store: Path) -> int:
    if not store.exists():
        return 0
    try:
        with sqlite3.connect(store) as db:
            return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:  # created but no table yet
        return 0


def test_unreachable_scheduler_is_one_sentence_within_ten_seconds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    code = main([*CLI, "--space", str(space_file(tmp_path)), "--scheduler",
                 "tcp://127.0.0.1:9", "--out", str(tmp_path / "out")])  # fmt: skip
    err = capsys.readouterr().err
    assert time.monotonic() - started < 10
    assert code == 2
    assert err.startswith("bt-protection tune: error: no Dask scheduler answered at ")
    assert err.count("\n") == 1 and "start one with `dask scheduler`" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]


# --------------------------------------------------------------------------- resume


def test_a_killed_tune_resumes_and_reuses_every_finished_trial(
    tuned: WalkForward, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "bt_protection", *CLI, "--space", str(space_file(tmp_path)),
            "--jobs", "1", "--out", str(out)]  # fmt: skip
    env = os.environ | {"PYTHONPATH": str(PROJECT_ROOT)}
    first = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    store = tmp_path / "out.partial" / STORE_NAME
    deadline = time.monotonic() + 60
    while _stored(store) < 5 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    kept = _stored(store)
    assert 5 <= kept < 27 and not out.exists()
    second = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert second.returncode == 0, second.stderr
    reused = int(second.stderr.split("tune: reused ")[1].split(" ")[0])
    assert reused == kept
    same_files(tuned.path, out)


# --------------------------------------------------------------------------- bad input


BAD_SPACES = {
    "not-a-key": (
        "protections.holding_period.min_hld: ['5 bars']\n",
        "{s}:1: 'protections.holding_period.min_hld' is not a profile key path; did you mean "
        "'protections.holding_period.min_hold'? Valid paths look like "
        "protections.holding_period.min_hold (docs/tune.md).",
    ),
    "empty-list": (
        "mode: [enforce]\nprotections.holding_period.min_hold: []\n",
        "{s}:2: protections.holding_period.min_hold: the list of candidates is empty; give at "
        "least one value.",
    ),
    "empty-range": (
        "protections.whipsaw_protection.max_cycles: {int: [4, 1]}\n",
        "{s}:1: protections.whipsaw_protection.max_cycles: int: [4, 1] holds no values; LOW "
        "must not exceed HIGH.",
    ),
    "bad-candidate": (
        "protections.holding_period.min_hold: [20]\n",
        "{s}:1: protections.holding_period.min_hold: candidate 20 is not a valid profile "
        'value: 20 is a bare number; durations carry a unit: write "10 bars" (trading '
        'sessions) or "14 days" (calendar time).',
    ),
}


@pytest.mark.parametrize("case", list(BAD_SPACES), ids=list(BAD_SPACES))
def test_bad_space_is_one_sentence_and_writes_nothing(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, message = BAD_SPACES[case]
    space = space_file(tmp_path, text)
    code = main([*CLI, "--space", str(space), "--out", str(tmp_path / "out")])
    assert code == 2
    assert capsys.readouterr().err == f"bt-protection tune: error: {message.format(s=space)}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]


BAD_OPTIONS = {
    "windows-too-long": (
        ["--train", "5y"],
        "--train 5y and --test 6m leave 0 folds in the data (2018-01-02 to 2020-12-31, the "
        "first 60 trading days kept for warm-up); walk-forward needs at least 2: use shorter "
        "windows, a shorter --warmup or more data.",
    ),
    "one-fold": (
        ["--train", "2y", "--test", "6m"],
        "--train 2y and --test 6m leave 1 fold in the data (2018-01-02 to 2020-12-31, the "
        "first 60 trading days kept for warm-up); walk-forward needs at least 2: use shorter "
        "windows, a shorter --warmup or more data.",
    ),
    "unknown-objective": (
        ["--objective", "sortino"],
        "unknown objective 'sortino'; valid objectives: sharpe, calmar, cagr, "
        "return_over_turnover.",
    ),
    "unknown-regime-data": (
        ["--regime-data", "SPY"],
        "--regime-data SPY is not among the data's tickers (AAPL, NVDA).",
    ),
    "bad-window": (
        ["--test", "6 months"],
        "--test '6 months' is not a window length; write a whole number and a unit such as 3y "
        "(years), 6m (months), 8w (weeks) or 90d (days).",
    ),
}


@pytest.mark.parametrize("case", list(BAD_OPTIONS), ids=list(BAD_OPTIONS))
def test_bad_option_is_one_sentence_and_writes_nothing(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra, message = BAD_OPTIONS[case]
    space = space_file(tmp_path)
    code = main([*CLI, "--space", str(space), "--out", str(tmp_path / "out"), *extra])
    assert code == 2
    assert capsys.readouterr().err == f"bt-protection tune: error: {message}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]


def test_out_holding_something_else_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code = main([*CLI, "--space", str(space_file(tmp_path)), "--out", str(out)])
    assert code == 2
    assert capsys.readouterr().err == (
        f"bt-protection tune: error: --out {out} exists and is not a tune folder (no "
        "fingerprint.json of a tune); choose another folder or remove it.\n"
    )
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert not (tmp_path / "out.partial").exists()


def test_the_shipped_example_space_is_valid() -> None:
    space = load_space(PROFILES / "spaces" / "example.yaml")
    base = load_profile(PROFILES / "balanced.yaml")
    assert space.size == 4 and len(check_candidates(space, base, space.grid())) == 4


def test_objectives_are_those_of_the_issue() -> None:
    assert [o.value for o in Objective] == ["sharpe", "calmar", "cagr", "return_over_turnover"]
    with pytest.raises(UserError, match="unknown sampler 'optuna'"):
        walk_forward("sma_crossover", SPACE, sampler="optuna", **TUNE)


def test_a_plain_strategy_from_a_file_with_params_tunes_on_two_processes(tmp_path: Path) -> None:
    from test_own_strategy import TREND

    file = tmp_path / "elsewhere" / "trend_file.py"
    file.parent.mkdir()
    file.write_text(TREND, encoding="utf-8")
    settings = {**TUNE, "tickers": ["AAPL"], "end": "2020-03-31", "train": "9m", "test": "3m"}
    walk = walk_forward(
        f"{file}:Trend",
        {"protections.holding_period.min_hold": ["5 bars", "40 bars"]},
        params={"period": 20, "weight": 0.5},
        jobs=2,
        out=tmp_path / "out",
        **settings,
    )
    fingerprint = json.loads((tmp_path / "out" / "fingerprint.json").read_text())
    assert fingerprint["strategy"] == "trend_file.py:Trend"
    assert fingerprint["strategy_params"] == {"period": 20, "weight": 0.5}
    assert (walk.trials["error"].fillna("") == "").all(), "every trial ran in the workers"
    off = walk.equity().loc[:, "off"]
    assert off.nunique() > 1, "the strategy traded in the test windows"
