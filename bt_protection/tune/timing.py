"""The timing permutation test of a tune's verdict: does the regime's real timing matter?

Each fold's tuned profile is run on its test window twice over: once as it is, recording the
market state the protections follow at every bar (the regime code and the volatility ratio),
then once per shift with that state circularly shifted within the test window (warm-up bars
keep theirs), so the protections see the same regimes for as long, at the wrong times. The
recording and the shifted series are a field of each job (`RunSpec.regime_replay`,
bt_protection.integration.replay), so they reach any worker with it. The statistic is the
Sharpe ratio of the tuned arm's stitched out-of-sample curve (the `tuned` row of
verdict.json's `arms`); the p-value is (1 + shifts at least as good) / (1 + shifts).

Shift `k` of `n` moves a window of `b` test bars by `max(1, round(k * b / (n + 1)))` bars:
evenly spread over the window, deterministic, no seed. Every backtest runs on the tune's
engine (local processes or Dask) and its result goes to the trial store, so a resumed tune
reuses it. docs/tune.md describes it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from bt_protection.integration.replay import RegimeReplay, State
from bt_protection.metrics import performance
from bt_protection.tune.search import Search, profile_of
from bt_protection.tune.trials import Trial, trial_key

Batch = Callable[[list[Trial]], dict[str, dict[str, Any]]]


def shift_offsets(bars: int, shifts: int) -> list[int]:
    """The offsets of `shifts` shifts of a window of `bars` test bars (see the module)."""
    return [max(1, round(k * bars / (shifts + 1))) % max(bars, 1) for k in range(1, shifts + 1)]


def shifted(states: Sequence[State], first: int, offset: int) -> tuple[State, ...]:
    """`states` with the part from `first` on rotated by `offset` bars: the state at test bar
    `i` is the real one of bar `i - offset` (wrapping around the window)."""
    test = list(states[first:])
    if not test:
        return tuple(states)
    offset %= len(test)
    return (*states[:first], *test[-offset:], *test[:-offset]) if offset else tuple(states)


def replayed(trial: Trial, key: str, replay: RegimeReplay) -> Trial:
    """`trial` as a backtest of the test under `key`: its job records or replays (`replay`)."""
    return replace(trial, key=key, spec=replace(trial.spec, regime_replay=replay))


def timing_permutation(
    search: Search, chosen: dict[int, int | None], results: dict[str, Any], batch: Batch
) -> dict[str, Any]:
    """verdict.json's `timing_permutation`: run the recordings, then every shift of every fold
    through `batch` (which runs trials on the engine and the store), and compare."""
    shifts = search.settings.timing_shifts
    trials, recordings = {}, {}
    for fold in search.folds:
        profile = profile_of(search, chosen[fold.index])
        trials[fold.index] = trial = search.trial(fold, "test", "tuned", profile)
        key = trial_key(search.identity, fold.test, profile.hash, "timing-record")
        recordings[fold.index] = replayed(trial, key, RegimeReplay())
    recorded = batch(list(recordings.values()))
    tasks: dict[int, list[Trial]] = {}
    for fold in search.folds:
        record = recorded[recordings[fold.index].key]
        states = tuple((int(c), v) for c, v in record.get("states") or ())
        first = int(record.get("first") or 0)
        offsets = shift_offsets(len(states) - first, shifts) if states else []
        tasks[fold.index] = [
            replayed(
                trials[fold.index],
                trial_key(
                    search.identity, fold.test, recordings[fold.index].key, f"shift-{offset}"
                ),
                RegimeReplay(shifted(states, first, offset)),
            )
            for offset in offsets
        ]
    shifted_results = batch([t for fold_tasks in tasks.values() for t in fold_tasks])
    actual = _stitched_sharpe([results[trials[f.index].key] for f in search.folds], search)
    statistics: list[float | None] = []
    for k in range(shifts):
        runs = [
            shifted_results[tasks[f.index][k].key]
            if tasks[f.index]
            else recorded[recordings[f.index].key]  # no regime followed: nothing shifted
            for f in search.folds
        ]
        statistics.append(_stitched_sharpe(runs, search))
    return _summary(actual, statistics, shifts, all(not t for t in tasks.values()))


def _stitched_sharpe(runs: list[dict[str, Any]], search: Search) -> float | None:
    """The Sharpe ratio of the test windows' curves chained as in oos_equity.csv."""
    if any(run["equity"] is None for run in runs):
        return None
    level = search.broker[0]
    values: list[float] = []
    for run in runs:
        series = run["equity"]
        scale = level / series[0][1]
        values.extend(value * scale for _, value in series)
        level = series[-1][1] * scale
    curve = pd.DataFrame({"value": values})
    nothing = pd.DataFrame(columns=["filled", "price", "commission"])
    sharpe = performance(curve, nothing, pd.DataFrame()).get("sharpe")
    return None if sharpe is None or not np.isfinite(sharpe) else float(sharpe)


def _summary(
    actual: float | None, statistics: list[float | None], shifts: int, no_regime: bool
) -> dict[str, Any]:
    known = [s for s in statistics if s is not None]
    at_least = sum(1 for s in known if actual is not None and s >= actual)
    p_value = (1 + at_least) / (1 + len(known)) if actual is not None and known else None
    summary: dict[str, Any] = {
        "shifts": shifts,
        "statistic": "sharpe of the tuned arm's stitched out-of-sample curve",
        "actual": actual,
        "shifted": statistics,
        "shifted_mean": float(np.mean(known)) if known else None,
        "at_least_as_good": at_least,
        "p_value": p_value,
    }
    summary["sentence"] = timing_sentence(summary, no_regime)
    return summary


def timing_sentence(summary: dict[str, Any], no_regime: bool = False) -> str:
    """`real regime timing gave the tuned arm a Sharpe of 0.41 out of sample; 7 of 20
    circular shifts of the regime series did at least as well (mean 0.35): p = 0.38, timing
    not shown to matter`."""
    shifts = summary["shifts"]
    if no_regime:
        return (
            f"the tuned profiles follow no regime, so the {shifts} circular shifts of the "
            "regime series changed nothing: timing cannot be judged"
        )
    actual, p_value = summary["actual"], summary["p_value"]
    if actual is None or p_value is None:
        return "the timing permutation test is undefined: a Sharpe ratio could not be computed"
    verdict = (
        "real timing beat shifted timing (p < 0.05)"
        if p_value < 0.05
        else "timing not shown to matter"
    )
    return (
        f"real regime timing gave the tuned arm a Sharpe of {actual:.2f} out of sample; "
        f"{summary['at_least_as_good']} of {shifts} circular shifts of the regime series did "
        f"at least as well (mean {summary['shifted_mean']:.2f}): p = {p_value:.2f}, {verdict}"
    )
