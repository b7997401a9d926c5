"""Compare one strategy under several profiles: run each, then tabulate, plot and attribute.

`run_comparison` is what `bt-protection compare` calls. Every input is checked before any run
starts (nothing is written for bad input). The comparison is built in `<out>.partial/`: one run
folder per profile (written by `execute_run`, in parallel worker processes), ablated profiles
under `profiles/`, then the tables, the plot and `comparison.json`; the folder is renamed to
`<out>` at the end. A run that fails is reported on stderr and kept as `<name>.failed/`; the
others finish. Files and columns: docs/compare.md.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pandas.api.types import is_integer_dtype, is_numeric_dtype
from tqdm import tqdm

from bt_protection import __version__
from bt_protection.attribution import attribute, closes, summarize
from bt_protection.costs import breakeven, check_baseline, cost_fraction, cost_table, run_name
from bt_protection.engine import Engine, pool_context
from bt_protection.errors import UserError
from bt_protection.plots import plot_comparison
from bt_protection.profile import Profile, load_profile
from bt_protection.runner import (
    CSV_FLOAT,
    RunSpec,
    data_folder,
    execute_run,
    install_folder,
    keep_failed,
    plan_run,
    write_json,
)
from bt_protection.runs import ABLATION_MARK, Run, compare_runs, load_run
from bt_protection.shipped import PROFILES, shipped_file
from bt_protection.strategies_registry import (
    StrategySource,
    strategy_name,
    worker_reference,
)

DEFAULT_STRATEGY = "momentum_rotation"
DEFAULT_PROFILES = ("off", "conservative", "balanced", "aggressive", "portfolio_guard")
PROFILES_FOLDER = "profiles"
# what makes two comparisons the same one
IDENTITY = ("strategy", "strategy_params", "data", "start", "end")
# Imported once by the forkserver, so its workers start with them. This module is among them:
# each worker re-runs the main script, which usually imports it (with pandas and matplotlib).
WORKER_PRELOAD = (__name__, "bt_protection.integration.rebalancer")
PERCENT_COLUMNS = (
    "total_return",
    "cagr",
    "volatility",
    "max_drawdown",
    "delta_total_return",
    "delta_max_drawdown",
)
OUTPUT_FILES = (
    "comparison.csv",
    "comparison.md",
    "comparison.png",
    "attribution.csv",
    "attribution_summary.csv",
    "comparison.json",
    "costs.csv",
)


@dataclass(frozen=True, eq=False)  # eq=False: DataFrames have no single truth value
class Comparison:
    """A finished comparison: its folder, the table (comparison.csv), the complete runs by
    name, the attribution tables, the failed runs' errors by name, and costs.csv (empty
    without `costs`)."""

    path: Path
    table: pd.DataFrame
    runs: dict[str, Run]
    attribution: pd.DataFrame
    attribution_summary: pd.DataFrame
    failed: dict[str, str]
    costs: pd.DataFrame = field(default_factory=pd.DataFrame)


@dataclass(frozen=True)
class _Entry:
    """One run of the comparison: its folder name, spec, loaded profile and, for an ablation,
    (the run it ablates, the system switched off); for a `--costs` run, its cost in bps."""

    name: str
    spec: RunSpec
    profile: Profile
    ablation: tuple[str, str] | None = None
    cost_bps: float | None = None


def default_profiles() -> list[Path]:
    """The shipped profiles of `DEFAULT_PROFILES` (off, conservative, balanced, aggressive and
    portfolio_guard), as files."""
    return [PROFILES / f"{name}.yaml" for name in DEFAULT_PROFILES]


def default_out(strategy: StrategySource, data: str | os.PathLike[str] | None = None) -> Path:
    """`runs/compare-<strategy>` (a strategy given as a class or spec: its class name), with
    `-<data folder name>` when `data` names a folder, so comparisons on other data do not
    meet in one folder."""
    suffix = f"-{Path(data).resolve().name}" if data is not None else ""
    return Path("runs") / f"compare-{strategy_name(strategy)}{suffix}"


def run_comparison(
    strategy: StrategySource = DEFAULT_STRATEGY,
    profiles: Sequence[str | os.PathLike[str]] | None = None,
    *,
    params: Mapping[str, Any] | None = None,
    data: str | os.PathLike[str] | None = None,
    regime_data: str | None = None,
    start: str | None = None,
    end: str | None = None,
    cash: float = RunSpec.cash,
    commission: float = RunSpec.commission,
    slippage: float = RunSpec.slippage,
    ablate: bool = False,
    jobs: int | None = None,
    scheduler: str | None = None,
    out: str | os.PathLike[str] | None = None,
    allow_mixed_data: bool = False,
    costs: Sequence[float] | None = None,
    progress: bool = True,
) -> Comparison:
    """Run `strategy` under each profile (and, with `ablate`, under each profile with one
    enabled protection switched off) into `out` and write the comparison files there.

    `strategy`: a registered name, `package.module:Class`, `path/to/file.py:Class` or a
    `bt.Strategy` subclass; `params`: its params. `profiles`: files or shipped names (None:
    the five shipped `DEFAULT_PROFILES`). `regime_data`: the ticker every run's regime
    indicator watches (`RunSpec.regime_data`). `jobs`: worker processes (default: one per
    run, at most one per CPU; 1 runs in this process). A class that only this process has
    (defined in a notebook cell, a script's `__main__` or a function) runs in this process
    whatever `jobs` says (docs/extending.md). `scheduler`: a Dask scheduler address to run the
    runs on instead (its workers read the data folder at the same path). `costs`: basis
    points per trade; each profile also runs at each of them (under `costs/`, in the same
    pool), for costs.csv and the break-even columns (bt_protection.costs). Raises UserError,
    with nothing written, for bad input.
    """
    if jobs is not None and jobs < 1:
        raise UserError(f"`jobs` must be 1 or more, not {jobs}.")
    if costs is not None and (not costs or min(costs) < 0):
        raise UserError(f"`costs` must be one or more basis points of 0 or more, not {costs}.")
    out = Path(out) if out is not None else default_out(strategy, data)
    folder = out.resolve()  # `--out .` has no name to put `.partial` after
    partial = folder.with_name(folder.name + ".partial")
    loaded = _load_profiles(default_profiles() if profiles is None else profiles)
    base = RunSpec(
        strategy,
        "",
        data=data,
        start=start,
        end=end,
        cash=cash,
        commission=commission,
        slippage=slippage,
        regime_data=regime_data,
        params=params or (),
    )
    plan = plan_run(replace(base, profile=loaded[0][0]), partial / loaded[0][1].name)
    base = replace(base, data=data_folder(base).resolve())  # workers may have another cwd
    identity = {key: plan.fingerprint[key] for key in IDENTITY}
    entries = _entries(base, loaded, ablate, partial / PROFILES_FOLDER)
    if costs is not None:
        check_baseline([profile.name for _, profile in loaded])
        entries += _cost_entries(base, loaded, costs)
    _check_out(out, identity)
    workers = min(jobs or os.cpu_count() or 1, len(entries))
    reference = worker_reference(strategy, scheduler)
    if reference is None:
        workers = 1  # another process cannot import the class: run here
    else:
        entries = [replace(e, spec=replace(e.spec, strategy=reference)) for e in entries]

    shutil.rmtree(partial, ignore_errors=True)
    if scheduler is not None:
        with Engine(None, scheduler=scheduler) as engine:  # reach the cluster before writing
            partial.mkdir(parents=True)
            if ablate:
                _write_ablated(entries, partial / PROFILES_FOLDER)
            failed = _execute_on(engine, entries, partial, out, progress)
    else:
        partial.mkdir(parents=True)
        if ablate:
            _write_ablated(entries, partial / PROFILES_FOLDER)
        failed = _execute(entries, partial, out, workers, progress)
    runs = {e.name: load_run(partial / e.name) for e in entries if e.name not in failed}
    priced = pd.DataFrame()
    if costs is not None:
        priced = cost_table(
            {
                (e.profile.name, e.cost_bps): runs[e.name].summary
                for e in entries
                if e.cost_bps is not None and e.name in runs
            }
        )
    compared = {e.name: runs[e.name] for e in entries if e.cost_bps is None and e.name in runs}
    table, found, summary = _write_outputs(
        partial, compared, plan.frames, allow_mixed_data, priced
    )
    write_json(partial / "comparison.json", _manifest(identity, base, entries, runs, failed))
    install_folder(partial, folder)
    moved = {name: replace(run, path=out / name) for name, run in compared.items()}
    return Comparison(out, table, moved, found, summary, failed, priced)


# --------------------------------------------------------------------------- checks


def _load_profiles(paths: Sequence[str | os.PathLike[str]]) -> list[tuple[Path, Profile]]:
    if not paths:
        raise UserError("no profiles given; pass at least one profile file to compare.")
    return [
        (Path(shipped_file(path, PROFILES, "profile")).resolve(), load_profile(path))
        for path in paths
    ]


def _entries(
    base: RunSpec, loaded: list[tuple[Path, Profile]], ablate: bool, ablated_folder: Path
) -> list[_Entry]:
    """The runs in table order: each profile, then its ablations; names must be unique."""
    entries = []
    for path, profile in loaded:
        entries.append(_Entry(profile.name, replace(base, profile=path), profile))
        for system in profile.enabled_systems if ablate else ():
            ablated = ablated_profile(profile, system)
            spec = replace(base, profile=ablated_folder / f"{ablated.name}.yaml")
            entries.append(_Entry(ablated.name, spec, ablated, (profile.name, system)))
    seen: dict[str, _Entry] = {}
    for entry in entries:
        _check_name(entry.name, entry.spec.profile)  # type: ignore[arg-type]  # a file here
        if entry.name in seen:
            raise UserError(
                f"two runs would be named {entry.name!r} ({seen[entry.name].spec.profile} and "
                f"{entry.spec.profile}); run folders are named after the profile's `name:`, "
                "so give each profile its own name."
            )
        seen[entry.name] = entry
    return entries


def _check_name(name: str, profile: str | os.PathLike[str]) -> None:
    if not name or name.startswith(".") or "/" in name or "\\" in name or name == PROFILES_FOLDER:
        raise UserError(
            f"{profile}: profile name {name!r} cannot name a run folder; use letters, digits, "
            f"'-' or '_' (and not {PROFILES_FOLDER!r})."
        )


def _check_out(out: Path, identity: dict[str, Any]) -> None:
    """`out` must be absent, empty, or hold the same comparison (which is then replaced)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"`out` {out} is a file; choose a folder for the comparison.")
    manifest = out / "comparison.json"
    try:
        old = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = None
    if not isinstance(old, dict):
        if any(out.iterdir()):
            raise UserError(
                f"`out` {out} exists and is not a comparison folder (no readable "
                "comparison.json); choose another folder or remove it."
            )
        return
    # a comparison made before strategy params existed had none
    previous = {key: old.get(key) for key in IDENTITY} | {
        "strategy_params": old.get("strategy_params") or {}
    }
    if previous != identity:
        raise UserError(
            f"`out` {out} already holds another comparison ({_describe(previous)}), not "
            f"{_describe(identity)}; choose another folder or remove it."
        )


def _describe(identity: dict[str, Any]) -> str:
    data = " ".join(identity["data"] or ())
    params = identity.get("strategy_params")
    given = f" with params {params}" if params else ""
    return f"{identity['strategy']}{given} on {data} from {identity['start']} to {identity['end']}"


def _cost_entries(
    base: RunSpec, loaded: list[tuple[Path, Profile]], costs: Sequence[float]
) -> list[_Entry]:
    """Each profile at each cost: that many bps of traded value, no commission or slippage."""
    return [
        _Entry(
            run_name(profile.name, bps),
            replace(base, profile=path, commission=cost_fraction(bps), slippage=0.0),
            profile,
            cost_bps=bps,
        )
        for path, profile in loaded
        for bps in costs
    ]


# --------------------------------------------------------------------------- ablation


def ablated_profile(profile: Profile, system: str) -> Profile:
    """`profile` with `system` switched off, named `<profile>-without-<system>`."""
    settings = profile.to_dict()
    settings["name"] = f"{profile.name}{ABLATION_MARK}{system}"
    settings["description"] = f"{profile.name} with {system} switched off (ablation)."
    settings["protections"][system]["enabled"] = False
    return load_profile(settings)


def _write_ablated(entries: list[_Entry], folder: Path) -> None:
    """The profile file of each ablation entry, in `folder`, where its spec reads it."""
    folder.mkdir()
    for entry in entries:
        if entry.ablation is not None:
            text = yaml.safe_dump(entry.profile.to_dict(), sort_keys=False)
            Path(entry.spec.profile).write_text(text, encoding="utf-8")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- running


def _attempt(entry: _Entry, folder: Path) -> BaseException | None:
    """Run `entry` in this process; the exception if it failed."""
    try:
        execute_run(entry.spec, folder / entry.name)
    except Exception as error:  # a failing run is reported, the comparison goes on
        return error
    return None


def _bar(total: int, progress: bool) -> tqdm:
    """The progress bar over the runs, on stderr (shown when stderr is a terminal)."""
    return tqdm(
        total=total,
        desc="compare",
        unit="run",
        file=sys.stderr,
        disable=None if progress else True,
    )


def _execute(
    entries: list[_Entry], folder: Path, out: Path, workers: int, progress: bool
) -> dict[str, str]:
    """Run every entry into `folder` (in this process when `workers` is 1) with a progress
    bar; returns the failed runs' errors by name, in table order."""
    failed: dict[str, str] = {}
    bar = _bar(len(entries), progress)

    def finished(entry: _Entry, error: BaseException | None) -> None:
        if error is not None:
            kept = folder / f"{entry.name}.failed"
            failed[entry.name] = _failure(kept, error)
            where = f" (kept as {out / kept.name}/)" if kept.is_dir() else ""
            tqdm.write(f"run {entry.name} failed{where}: {failed[entry.name]}", file=sys.stderr)
        bar.update()

    with bar:
        if workers == 1:
            for entry in entries:
                finished(entry, _attempt(entry, folder))
        else:
            context = pool_context(WORKER_PRELOAD)
            lost: list[_Entry] = []
            with ProcessPoolExecutor(workers, mp_context=context) as pool:
                futures = {pool.submit(execute_run, e.spec, folder / e.name): e for e in entries}
                for future in as_completed(futures):
                    error = future.exception()
                    if isinstance(error, BrokenProcessPool):
                        lost.append(futures[future])  # a worker died and the pool with it
                    else:
                        finished(futures[future], error)
            for entry in lost:  # each alone in a fresh worker: only the run that dies fails
                with ProcessPoolExecutor(1, mp_context=context) as pool:
                    error = pool.submit(execute_run, entry.spec, folder / entry.name).exception()
                if isinstance(error, BrokenProcessPool):
                    error = _died(folder / entry.name)
                finished(entry, error)
    return {e.name: failed[e.name] for e in entries if e.name in failed}


def run_packed(spec: RunSpec, _shared: Any = None) -> tuple[Exception | None, dict[str, bytes]]:
    """Run `spec` in a temporary folder of the machine this runs on; the error (None if the
    run completed) and the files of its run folder (or failed folder) by relative path."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        error: Exception | None = None
        try:
            execute_run(spec, out)
        except Exception as caught:  # a failing run is reported, the comparison goes on
            error, out = caught, out.with_name("run.failed")
        files = {str(f.relative_to(out)): f.read_bytes() for f in out.rglob("*") if f.is_file()}
    return error, files


def _execute_on(
    engine: Engine, entries: list[_Entry], folder: Path, out: Path, progress: bool
) -> dict[str, str]:
    """Run every entry on the engine's Dask cluster; each run's files come back and are
    written under `folder`. Returns the failed runs' errors by name, in table order."""
    failed: dict[str, str] = {}
    specs = [replace(e.spec, profile=e.profile.to_dict()) for e in entries]  # no local paths
    keys = [f"run-{e.name}-{e.profile.hash}" for e in entries]
    by_spec = {id(spec): entry for spec, entry in zip(specs, entries, strict=True)}
    bar = _bar(len(entries), progress)
    with bar:
        for spec, (error, files) in engine.map(run_packed, specs, keys):
            entry = by_spec[id(spec)]
            target = folder / (entry.name if error is None else f"{entry.name}.failed")
            for name, data in files.items():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                (target / name).write_bytes(data)
            if error is not None:
                failed[entry.name] = _failure(target, error)
                tqdm.write(f"run {entry.name} failed: {failed[entry.name]}", file=sys.stderr)
            bar.update()
    return {e.name: failed[e.name] for e in entries if e.name in failed}


def _died(run: Path) -> ChildProcessError:
    """The error of a run whose worker process died (a signal, the out-of-memory killer); what
    it wrote is kept as `<run>.failed/` with a status.json that says so."""
    error = ChildProcessError("its worker process died (killed by a signal or out of memory)")
    partial = run.with_name(run.name + ".partial")
    if partial.is_dir():
        keep_failed(partial, run, error)
    return error


def _failure(kept: Path, error: BaseException) -> str:
    """The error as the failed run's status.json names it, else the exception's text."""
    try:
        return str(json.loads((kept / "status.json").read_text(encoding="utf-8"))["error"])
    except (OSError, ValueError, KeyError):
        return f"{type(error).__name__}: {error}"


# --------------------------------------------------------------------------- outputs


def _write_outputs(
    folder: Path,
    runs: dict[str, Run],
    frames: dict[str, pd.DataFrame],
    allow_mixed_data: bool,
    costs: pd.DataFrame,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """comparison.csv/.md/.png and the attribution files (none when no run completed); with
    `costs` (costs.csv, not empty), also costs.csv and the break-even columns."""
    table = compare_runs(runs, allow_mixed_data=allow_mixed_data)
    if not costs.empty:
        table = table.join(breakeven(costs))
    found = attribute(runs, closes(frames))
    summary = summarize(found)
    if not runs:
        return table, found, summary
    csv: dict[str, Any] = {"float_format": CSV_FLOAT, "lineterminator": "\n"}
    table.to_csv(folder / "comparison.csv", **csv)
    if not costs.empty:
        costs.to_csv(folder / "costs.csv", index=False, **csv)
    (folder / "comparison.md").write_text(markdown_table(table), encoding="utf-8")
    plot_comparison(runs, folder / "comparison.png")
    found.to_csv(folder / "attribution.csv", index=False, **csv)
    summary.to_csv(folder / "attribution_summary.csv", index=False, **csv)
    return table, found, summary


def _manifest(
    identity: dict[str, Any],
    base: RunSpec,
    entries: list[_Entry],
    runs: dict[str, Run],
    failed: dict[str, str],
) -> dict[str, Any]:
    """comparison.json: what was compared, on which data, and each run's fingerprint."""
    records = []
    for entry in entries:
        record: dict[str, Any] = {
            "name": entry.name,
            "profile_hash": entry.profile.hash,
            "ablation": None,
        }
        if entry.ablation is not None:
            record["ablation"] = {"of": entry.ablation[0], "protection": entry.ablation[1]}
        if entry.cost_bps is not None:
            record["cost_bps"] = entry.cost_bps
        if entry.name in runs:
            record |= {"status": "complete", "fingerprint": runs[entry.name].summary["fingerprint"]}
        else:
            record |= {"status": "failed", "error": failed[entry.name]}
        records.append(record)
    settings = {"cash": base.cash, "commission": base.commission, "slippage": base.slippage}
    return {**identity, "package_version": __version__, **settings, "runs": records}


def markdown_table(table: pd.DataFrame) -> str:
    """The table as GitHub markdown: returns and drawdowns in %, counts as integers, other
    numbers to 2 decimals, blanks for missing values."""
    numeric = [is_numeric_dtype(table[column]) for column in table.columns]
    cells = [_cells(table[column]) for column in table.columns]
    lines = [
        "| " + " | ".join([str(table.index.name or ""), *table.columns]) + " |",
        "|:---|" + "|".join("---:" if number else ":---" for number in numeric) + "|",
    ]
    for i, name in enumerate(table.index):
        lines.append("| " + " | ".join([str(name), *(column[i] for column in cells)]) + " |")
    return "\n".join(lines) + "\n"


def _cells(column: pd.Series) -> list[str]:
    if not is_numeric_dtype(column):
        return column.fillna("").astype(str).tolist()
    if column.name in PERCENT_COLUMNS:
        form = "{:.1%}"
    elif is_integer_dtype(column):
        form = "{:d}"
    else:
        form = "{:,.2f}"
    return ["" if pd.isna(value) else form.format(value) for value in column]
