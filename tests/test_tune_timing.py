"""`tune` over regime factor lists and values by regime, and the verdict's timing permutation
test: real walk-forward tunes on data/etf17 through 2008 (SPY, QQQ, JNK, TLT), local processes."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import SAMPLE_DATA

from bt_protection.errors import UserError
from bt_protection.integration.replay import RegimeReplay
from bt_protection.job import RunSpec, run_job
from bt_protection.tune import WalkForward, walk_forward
from bt_protection.tune.search import TuneSettings
from bt_protection.tune.timing import replayed, shift_offsets, shifted
from bt_protection.tune.trials import trial_result
from bt_protection.tune.walk import _search

ETF = Path(__file__).resolve().parents[1] / "data" / "etf17"
CREDIT = {"credit": {"risky": "JNK", "safe": "TLT"}}
SPACE = {
    "regime.factors": [
        ["trend", "volatility", "drawdown"],
        ["trend", "volatility", "drawdown", "breadth", CREDIT],
    ],
    "protections.holding_period.min_hold.crisis": ["5 bars", "10 bars"],
}
TICKERS = ("SPY", "QQQ", "JNK", "TLT")
WINDOW = {
    "data": str(ETF),
    "tickers": list(TICKERS),
    "start": "2007-12-01",
    "end": "2010-06-30",
}
TUNE = {**WINDOW, "regime_data": "SPY", "train": "1y", "test": "6m", "warmup": 60}
SHIFTS = 3


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> WalkForward:
    out = tmp_path_factory.mktemp("timing") / "out"
    return walk_forward(
        "sma_crossover", SPACE, jobs=2, out=out, progress=False, timing_shifts=SHIFTS, **TUNE
    )


def test_tune_searches_factor_lists_and_values_by_regime(tuned: WalkForward) -> None:
    trials = tuned.trials
    assert set(trials["regime.factors"]) == {json.dumps(v) for v in SPACE["regime.factors"]}
    assert set(trials["protections.holding_period.min_hold.crisis"]) == {"5 bars", "10 bars"}
    # the credit and breadth list changes what is denied in a fold: the search is real
    by_list = trials.groupby(["fold", "regime.factors"])["orders_denied"].first().unstack()
    assert (by_list.iloc[:, 0] != by_list.iloc[:, 1]).any()
    hold = tuned.recommended.to_dict()["protections"]["holding_period"]["min_hold"]
    assert hold["crisis"] in ("5 bars", "10 bars") and hold["default"] == "20 bars"


def test_timing_permutation_in_the_verdict_and_the_report(tuned: WalkForward) -> None:
    timing = tuned.verdict["timing_permutation"]
    assert timing["shifts"] == SHIFTS and len(timing["shifted"]) == SHIFTS
    assert timing["actual"] == tuned.verdict["arms"]["tuned"]["sharpe"]
    at_least = sum(s >= timing["actual"] for s in timing["shifted"])
    assert timing["at_least_as_good"] == at_least
    assert timing["p_value"] == pytest.approx((1 + at_least) / (1 + SHIFTS))
    assert set(timing["shifted"]) != {timing["actual"]}, "shifted timing changed the outcome"
    report = (tuned.path / "report.md").read_text()
    assert "## Timing permutation test" in report
    assert f"{at_least} of {SHIFTS} circular shifts of the regime series" in report


def test_a_rerun_with_one_process_reuses_every_result_and_gives_the_same_bytes(
    tuned: WalkForward,
) -> None:
    before = (tuned.path / "verdict.json").read_bytes()
    again = walk_forward(
        "sma_crossover",
        SPACE,
        jobs=1,
        out=tuned.path,
        progress=False,
        timing_shifts=SHIFTS,
        **TUNE,
    )
    assert (again.path / "verdict.json").read_bytes() == before


def test_a_replay_without_shift_is_the_real_run_and_a_shift_changes_it() -> None:
    """The recording and the replays are jobs: the states travel in the RunSpec (pickled, as
    to a worker process) and run_job applies them."""
    settings = TuneSettings(train="1y", test="6m", warmup=60, timing_shifts=SHIFTS)
    job = RunSpec("sma_crossover", "", regime_data="SPY", **{**WINDOW, "tickers": TICKERS})
    search = _search(job, SPACE, None, settings)
    trial = search.trial(search.folds[0], "test", "tuned", search.profiles[2])

    def run(replay: RegimeReplay | None) -> dict[str, Any]:
        spec = pickle.loads(pickle.dumps(replace(trial.spec, regime_replay=replay)))
        return trial_result(trial, run_job(spec, search.frames))

    record = run(RegimeReplay())
    states = tuple((int(c), v) for c, v in record["states"])
    first = record["first"]
    assert 0 < first < len(states) and len({c for c, _ in states[first:]}) >= 2
    assert record["equity"] == run(None)["equity"]
    assert run(RegimeReplay(states))["equity"] == record["equity"]
    moved = [
        run(RegimeReplay(shifted(states, first, k))) for k in shift_offsets(len(states) - first, 2)
    ]
    assert any(m["equity"] != record["equity"] for m in moved)
    shift = replayed(trial, "shift", RegimeReplay(states))
    assert shift.key == "shift" and shift.task.spec.regime_replay == RegimeReplay(states)
    assert "states" not in run(None) and "states" not in moved[0]


def test_shift_offsets_spread_over_the_window_and_rotate_the_test_bars() -> None:
    offsets = shift_offsets(126, 20)
    assert offsets == shift_offsets(126, 20) and len(set(offsets)) == 20
    assert offsets[0] == 6 and offsets[-1] == 120 and all(0 < o < 126 for o in offsets)
    states = tuple((k, float(k)) for k in range(6))
    assert shifted(states, 2, 1) == (
        states[0],
        states[1],
        states[5],
        states[2],
        states[3],
        states[4],
    )
    assert shifted(states, 2, 4) == states


def test_a_profile_without_regime_says_timing_cannot_be_judged(tmp_path: Path) -> None:
    walk = walk_forward(
        "sma_crossover",
        {"protections.holding_period.min_hold": ["5 bars", "10 bars"]},
        {"name": "hold", "protections": {"holding_period": {"min_hold": "5 bars"}}},
        data=str(SAMPLE_DATA),
        tickers=["AAPL"],
        start="2018-01-01",
        end="2019-12-31",
        train="6m",
        test="6m",
        warmup=60,
        jobs=1,
        out=tmp_path / "out",
        progress=False,
        timing_shifts=SHIFTS,
    )
    timing = walk.verdict["timing_permutation"]
    assert timing["p_value"] == 1.0
    assert "follow no regime" in timing["sentence"]


def test_a_credit_feed_not_in_the_data_is_refused_before_any_backtest(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"credit reads feed JNK, which is not in the run"):
        walk_forward(
            "sma_crossover",
            {"regime.factors": [["trend", CREDIT]]},
            data=str(SAMPLE_DATA),
            tickers=["AAPL", "NVDA"],
            out=tmp_path / "out",
            progress=False,
        )
    with pytest.raises(UserError, match="`timing_shifts` must be 0"):
        walk_forward("sma_crossover", SPACE, out=tmp_path / "out", timing_shifts=-1, **TUNE)
    assert not any(tmp_path.iterdir())
