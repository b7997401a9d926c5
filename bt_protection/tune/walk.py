"""`walk_forward`: search protection parameters on train windows, judge them on test windows.

Every input is checked, and every candidate profile validated, before any trial runs. The
output folder is built in `<out>.partial/`, which also holds the trial store (`trials.sqlite`):
a tune killed midway resumes from it with the same inputs. At the end the folder is renamed to
`<out>`. Files, choices and formulas: docs/tune.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from bt_protection import __version__
from bt_protection.engine import Engine
from bt_protection.errors import UserError
from bt_protection.profile import Profile, load_profile
from bt_protection.regime_factors import FactorState
from bt_protection.runner import RunSpec, install_folder, plan_run
from bt_protection.strategies_registry import (
    resolve_strategy,
    strategy_name,
    strategy_reference,
    worker_reference,
)
from bt_protection.tune.folds import make_folds
from bt_protection.tune.result import WalkForward, write_outputs
from bt_protection.tune.search import Search, TuneSettings, choose, profile_of
from bt_protection.tune.space import check_candidates, load_space
from bt_protection.tune.store import STORE_NAME, TrialStore
from bt_protection.tune.timing import TimingTask, run_timing, timing_permutation
from bt_protection.tune.tpe import run_tpe
from bt_protection.tune.trials import Objective, Trial, run_trial

DEFAULT_BASE = "balanced"
SAMPLERS = ("grid", "random", "tpe")
FINGERPRINT = "fingerprint.json"
_log = logging.getLogger(__name__)


def default_out(strategy: Any) -> Path:
    """`runs/tune-<strategy>`."""
    return Path("runs") / f"tune-{strategy_name(strategy)}"


def walk_forward(
    strategy: Any,
    space: str | os.PathLike[str] | Mapping[str, Any],
    profile: str | os.PathLike[str] | Mapping[str, Any] | Profile | None = None,
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
    """Walk-forward tuning of `space` (a SPACE.yaml file or a mapping) around the base
    `profile` (default the shipped balanced profile); returns a `WalkForward` with the tables.

    `strategy`: a registered name, `package.module:Class`, `path/to/file.py:Class` or a class
    (one defined in a notebook cell runs in this process); `params`: its params.
    `jobs`: local worker processes (default one per CPU; 1 runs in this process);
    `scheduler`: a Dask scheduler address instead. `timing_shifts`: the circular shifts of
    the regime series in the timing test (0: no test; `bt_protection.tune.timing`). Raises
    UserError, writing nothing, for bad input.
    """
    settings = TuneSettings(
        train,
        test,
        step,
        anchored,
        warmup,
        _objective(objective),
        _sampler(sampler),
        trials,
        seed,
        timing_shifts,
    )
    if trials < 1:
        raise UserError(f"`trials` must be 1 or more, not {trials}.")
    if timing_shifts < 0:
        raise UserError(f"`timing_shifts` must be 0 (no timing test) or more, not {timing_shifts}.")
    out = Path(out) if out is not None else default_out(strategy)
    folder = out.resolve()
    partial = folder.with_name(folder.name + ".partial")
    spec = RunSpec(
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
    )
    search = _search(spec, space, profile, regime_data, settings, partial)
    _check_out(out)
    if worker_reference(search.strategy, scheduler) is None:  # e.g. a notebook cell's class
        jobs = 1
    with Engine(search.frames, jobs, scheduler) as engine:  # checks jobs, reaches the cluster
        partial.mkdir(parents=True, exist_ok=True)
        if not (partial / STORE_NAME).exists() and (folder / STORE_NAME).is_file():
            shutil.copyfile(folder / STORE_NAME, partial / STORE_NAME)  # a rerun reuses all
        store = TrialStore(partial / STORE_NAME)
        try:
            results, chosen, timing = _run_all(search, engine, store, progress)
        finally:
            store.close()
    walk = write_outputs(search, results, chosen, partial, timing)
    (partial / FINGERPRINT).write_text(
        json.dumps(_fingerprint(search), indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    install_folder(partial, folder)
    return replace(walk, path=out)


# --------------------------------------------------------------------------- checks


def _objective(name: str) -> Objective:
    try:
        return Objective(name)
    except ValueError:
        valid = ", ".join(o.value for o in Objective)
        raise UserError(f"unknown objective {name!r}; valid objectives: {valid}.") from None


def _sampler(name: str) -> str:
    if name not in SAMPLERS:
        raise UserError(f"unknown sampler {name!r}; valid samplers: {', '.join(SAMPLERS)}.")
    return name


def _search(
    spec: RunSpec,
    space_source: str | os.PathLike[str] | Mapping[str, Any],
    profile: str | os.PathLike[str] | Mapping[str, Any] | Profile | None,
    regime_data: str | None,
    settings: TuneSettings,
    partial: Path,
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
    plan = plan_run(replace(spec, profile=base.to_dict()), partial / "plan-check")
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


def _check_out(out: Path) -> None:
    """`out` must be absent, empty, or an earlier tune folder (which is then replaced)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"`out` {out} is a file; choose a folder for the tune.")
    try:
        kind = json.loads((out / FINGERPRINT).read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None
    if kind != "tune" and any(out.iterdir()):
        raise UserError(
            f"`out` {out} exists and is not a tune folder (no {FINGERPRINT} of a tune); "
            "choose another folder or remove it."
        )


def _fingerprint(search: Search) -> dict[str, Any]:
    """What the tune ran on: enough to tell two tunes apart and to redo one."""
    dates = next(iter(search.frames.values())).index
    settings = vars(search.settings) | {"objective": search.settings.objective.value}
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
    bar = tqdm(
        total=len({t.key for t in first}) + proposed + len(search.folds),
        desc="tune",
        unit="trial",
        file=sys.stderr,
        disable=None if progress else True,
    )

    def batch(trials: list[Trial]) -> dict[str, dict[str, Any]]:
        nonlocal reused
        reused += _run_batch(trials, engine, store, bar, results)
        return results

    timed: dict[str, dict[str, Any]] = {}

    def timing_batch(tasks: list[TimingTask]) -> dict[str, dict[str, Any]]:
        nonlocal reused
        bar.total += len(tasks)
        reused += _run_batch(tasks, engine, store, bar, timed, run_timing)
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
    trials: Sequence[Trial | TimingTask],
    engine: Engine,
    store: TrialStore,
    bar: tqdm,
    results: dict[str, dict[str, Any]],
    run: Callable[[Any, Any], dict[str, Any]] = run_trial,
) -> int:
    """Add the results of `trials` not yet in `results`: stored ones are reused, the others
    run and stored as they finish. Returns how many were reused."""
    unique = [t for t in {t.key: t for t in trials}.values() if t.key not in results]
    stored = store.load(t.key for t in unique)
    results |= stored
    bar.update(len(stored))
    pending = [t for t in unique if t.key not in stored]
    for trial, result in engine.map(run, pending, [f"trial-{t.key}" for t in pending]):
        results[trial.key] = store.put(trial.key, result)
        bar.update()
    return len(stored)
