"""`execute_tune` (a `TuneSpec`; `walk_forward` takes the same as keywords): search
protection parameters on train windows, judge them on test windows.

Every input is checked, and every candidate profile validated, before any trial runs. Each
trial is a job (`RunSpec`) the `Engine` runs on the price data loaded once. The output folder
is built in `<out>.partial/` (bt_protection.outfolder), which also holds the trial store
(`trials.sqlite`): a tune killed midway resumes from it with the same inputs. At the end the
folder is installed as `<out>`. Files, choices and formulas: docs/tune.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from bt_protection import __version__
from bt_protection.engine import Engine, Execution, progress_bar
from bt_protection.errors import UserError
from bt_protection.job import RunSpec
from bt_protection.outfolder import Kind, OutputFolder, data_qualifier, default_out
from bt_protection.profile import Profile, load_profile
from bt_protection.regime_factors import FactorState
from bt_protection.runner import plan_run
from bt_protection.strategies_registry import resolve_strategy, strategy_reference
from bt_protection.tune.folds import make_folds
from bt_protection.tune.result import WalkForward, write_outputs
from bt_protection.tune.search import Search, TuneSettings, choose, profile_of
from bt_protection.tune.space import check_candidates, load_space
from bt_protection.tune.store import STORE_NAME, TrialStore
from bt_protection.tune.timing import timing_permutation
from bt_protection.tune.tpe import run_tpe
from bt_protection.tune.trials import Trial, trial_result

DEFAULT_BASE = "balanced"
FINGERPRINT = "fingerprint.json"
_log = logging.getLogger(__name__)

SpaceSource = str | os.PathLike[str] | Mapping[str, Any]
ProfileSource = str | os.PathLike[str] | Mapping[str, Any] | Profile


@dataclass(frozen=True, eq=False)  # eq=False: a space or profile may be a mapping
class TuneSpec:
    """What `execute_tune` runs: `job` (the strategy, its params, data, tickers, dates, broker
    and `regime_data`; its `profile` is not used) tuned over `space` (a SPACE.yaml file, a
    shipped space's name or a mapping) around the base `profile` (None: the shipped balanced
    profile), walking forward as `settings` say. `out` None: `runs/tune-<strategy>[-<data
    folder>]`. `execution`: where the trials run (`jobs` None: one per CPU)."""

    job: RunSpec
    space: SpaceSource
    profile: ProfileSource | None = None
    settings: TuneSettings = TuneSettings()
    out: Path | None = None
    execution: Execution = Execution()


def walk_forward(
    strategy: Any,
    space: SpaceSource,
    profile: ProfileSource | None = None,
    *,
    data: str | os.PathLike[str] | None = None,
    tickers: Sequence[str] | None = None,
    regime_data: str | None = None,
    start: str | None = None,
    end: str | None = None,
    cash: float = RunSpec.cash,
    commission: float = RunSpec.commission,
    slippage: float = RunSpec.slippage,
    train: str = TuneSettings.train,
    test: str = TuneSettings.test,
    step: str | None = None,
    anchored: bool = False,
    warmup: int = TuneSettings.warmup,
    objective: str = "sharpe",
    sampler: str = "grid",
    trials: int = TuneSettings.trials,
    seed: int = 0,
    timing_shifts: int = TuneSettings.timing_shifts,
    jobs: int | None = None,
    scheduler: str | None = None,
    out: str | os.PathLike[str] | None = None,
    progress: bool = True,
    params: Mapping[str, Any] | None = None,
) -> WalkForward:
    """`execute_tune` with its settings as keywords (for notebooks): see `TuneSpec`,
    `TuneSettings` and `RunSpec` for each. A strategy class defined in a notebook cell runs in
    this process. Raises UserError, writing nothing, for bad input."""
    settings = TuneSettings(
        train, test, step, anchored, warmup, objective, sampler, trials, seed, timing_shifts
    )
    job = RunSpec(
        strategy,
        "",
        params=params or (),
        data=data,
        tickers=tuple(tickers) if tickers else None,
        start=start,
        end=end,
        cash=cash,
        commission=commission,
        slippage=slippage,
        regime_data=regime_data,
    )
    execution = Execution(jobs, scheduler, progress)
    return execute_tune(
        TuneSpec(job, space, profile, settings, None if out is None else Path(out), execution)
    )


def execute_tune(spec: TuneSpec) -> WalkForward:
    """Walk-forward tuning as `spec` says; returns a `WalkForward` with the tables. Raises
    UserError, writing nothing, for bad input."""
    job = spec.job
    out = spec.out or default_out(Kind.TUNE, job.strategy, data_qualifier(job.data))
    target = OutputFolder(out, Kind.TUNE)
    search = _search(job, spec.space, spec.profile, spec.settings)
    target.check()
    with Engine(search.frames, spec.execution, search.strategy) as engine:  # reach the cluster
        partial = target.begin(resume=True)  # a tune killed midway resumes from its store
        installed = target.out / STORE_NAME
        if not (partial / STORE_NAME).exists() and installed.is_file():
            shutil.copyfile(installed, partial / STORE_NAME)  # a rerun reuses all
        store = TrialStore(partial / STORE_NAME)
        try:
            results, chosen, timing = _run_all(search, engine, store, spec.execution.progress)
        finally:
            store.close()
    walk = write_outputs(search, results, chosen, partial, timing)
    (partial / FINGERPRINT).write_text(
        json.dumps(_fingerprint(search), indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    target.install()
    return replace(walk, path=out)


# --------------------------------------------------------------------------- checks


def _search(
    spec: RunSpec,
    space_source: SpaceSource,
    profile: ProfileSource | None,
    settings: TuneSettings,
) -> Search:
    """Load and check every input: space, candidates, profiles, data and folds."""
    if not space_source:
        raise UserError(
            "no search space given; pass `space`, a space file or a shipped space's name "
            "(docs/tune.md)."
        )
    base = load_profile(DEFAULT_BASE if profile is None else profile)
    off = load_profile({"name": "off", "description": "No protection (the tune's baseline)."})
    space = load_space(space_source)
    if settings.sampler == "random":
        candidates = space.sample(settings.trials, settings.seed)
    else:  # grid runs them all; tpe proposes among them
        candidates = space.grid()
    regime_data = spec.regime_data
    plan = plan_run(replace(spec, profile=base.to_dict(), regime_data=None))
    if regime_data is not None:
        if regime_data not in plan.frames:
            raise UserError(
                f"`regime_data` {regime_data} is not among the data's tickers "
                f"({', '.join(plan.frames)})."
            )
        base, off = (_with_regime(p, regime_data) for p in (base, off))
    profiles = check_candidates(space, base, candidates)
    _check_factors([base, *profiles], list(plan.frames))
    folds = make_folds(
        pd.DatetimeIndex(next(iter(plan.frames.values())).index),
        settings.train,
        settings.test,
        settings.step,
        anchored=settings.anchored,
        warmup=settings.warmup,
    )
    identity = {
        "strategy": plan.fingerprint["strategy"],
        "strategy_params": plan.fingerprint["strategy_params"],
        "data": sorted(plan.frames),
        "data_hash": _data_hash(plan.frames),
        "broker": [spec.cash, spec.commission, spec.slippage],
        "package_version": __version__,
    }
    return Search(
        strategy_reference(spec.strategy) or spec.strategy,
        resolve_strategy(spec.strategy),
        tuple(sorted(dict(spec.params).items())),
        base,
        off,
        space,
        candidates,
        profiles,
        folds,
        plan.frames,
        identity,
        settings,
        (spec.cash, spec.commission, spec.slippage),
    )


def _check_factors(profiles: list[Profile], tickers: list[str]) -> None:
    """Refuse, before any backtest, a regime factor the data cannot feed (a credit feed that
    is not a ticker, correlation on one ticker): every trial would fail at its start."""
    for profile in profiles:
        try:
            FactorState(profile.regime.factors, tickers)
        except ValueError as error:
            raise UserError(f"profile {profile.name}: {error}") from None


def _with_regime(profile: Profile, ticker: str) -> Profile:
    settings = profile.to_dict()
    settings["regime"]["data"] = ticker
    return load_profile(settings)


def _data_hash(frames: dict[str, pd.DataFrame]) -> str:
    digest = hashlib.sha256()
    for name in sorted(frames):
        digest.update(name.encode())
        digest.update(pd.util.hash_pandas_object(frames[name]).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def _fingerprint(search: Search) -> dict[str, Any]:
    """What the tune ran on: enough to tell two tunes apart and to redo one."""
    dates = next(iter(search.frames.values())).index
    settings = vars(search.settings) | {"objective": search.settings.goal.value}
    return {
        "kind": "tune",
        **search.identity,
        "start": dates[0].date().isoformat(),
        "end": dates[-1].date().isoformat(),
        "base_profile": search.base.name,
        "base_profile_hash": search.base.hash,
        "space": {key: list(values) for key, values in search.space.values.items()},
        "candidates": len(search.candidates),
        "folds": len(search.folds),
        **settings,
    }


# --------------------------------------------------------------------------- running


def _run_all(
    search: Search, engine: Engine, store: TrialStore, progress: bool
) -> tuple[dict[str, dict[str, Any]], dict[int, int | None], dict[str, Any] | None]:
    """Every trial's result: base and off on each train and test window and the candidates
    on each train window (grid and random: one batch; tpe: in rounds), then each fold's chosen
    candidate on its test window; then the timing test (None with no shifts)."""
    settings = search.settings
    first: list[Trial] = []
    for fold in search.folds:
        if settings.sampler != "tpe":
            for i, profile in enumerate(search.profiles):
                first.append(search.trial(fold, "train", f"c{i}", profile))
        for phase in ("train", "test"):
            first.append(search.trial(fold, phase, "base", search.base))
            first.append(search.trial(fold, phase, "off", search.off))
    proposed = len(search.folds) * settings.trials if settings.sampler == "tpe" else 0
    results: dict[str, dict[str, Any]] = {}
    reused = 0
    total = len({t.key for t in first}) + proposed + len(search.folds)
    bar = progress_bar("tune", "trial", total, progress)

    def batch(trials: list[Trial]) -> dict[str, dict[str, Any]]:
        nonlocal reused
        reused += _run_batch(trials, engine, store, bar, results)
        return results

    timed: dict[str, dict[str, Any]] = {}

    def timing_batch(trials: list[Trial]) -> dict[str, dict[str, Any]]:
        nonlocal reused
        bar.total += len(trials)
        reused += _run_batch(trials, engine, store, bar, timed)
        return timed

    with bar:
        batch(first)
        if settings.sampler == "tpe":
            run_tpe(search, batch)
        chosen = choose(search, results)
        batch(
            [
                search.trial(fold, "test", "tuned", profile_of(search, chosen[fold.index]))
                for fold in search.folds
            ]
        )
        bar.total = bar.n  # proposals that repeated earlier ones ran once
        timing = None
        if settings.timing_shifts:
            timing = timing_permutation(search, chosen, results, timing_batch)
    if reused:  # the CLI shows it; a notebook sees it where it sends this logger's records
        _log.info("reused %d of %d trial results stored in %s.", reused, bar.n, store.path)
    return results, chosen, timing


def _run_batch(
    trials: list[Trial],
    engine: Engine,
    store: TrialStore,
    bar: tqdm,
    results: dict[str, dict[str, Any]],
) -> int:
    """Add the results of `trials` not yet in `results`: stored ones are reused, the others
    run and stored as they finish. Returns how many were reused."""
    unique = [t for t in {t.key: t for t in trials}.values() if t.key not in results]
    stored = store.load(t.key for t in unique)
    results |= stored
    bar.update(len(stored))
    pending = [t for t in unique if t.key not in stored]
    trials_by_key = {trial.task.key: trial for trial in pending}
    for task, result in engine.run([trial.task for trial in pending]):
        trial = trials_by_key[task.key]
        results[trial.key] = store.put(trial.key, trial_result(trial, result))
        bar.update()
    return len(stored)
