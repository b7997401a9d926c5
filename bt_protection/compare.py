"""Compare one strategy under several profiles: run each, then tabulate, plot and attribute.

`execute_comparison` (a `CompareSpec`) is what `bt-protection compare` calls; `run_comparison`
takes the same settings as keywords. Every input is checked before any run starts (nothing is
written for bad input). The price data is loaded once and the runs go to one `Engine` (this
process, worker processes or a Dask cluster). The comparison is built in `<out>.partial/`: one
run folder per profile (opened and closed as `run` does, bt_protection.runner), ablated
profiles under `profiles/`, then the tables, the plot and `comparison.json`; the folder is
installed as `<out>` at the end. A run that fails is reported on stderr and kept as
`<name>.failed/`; the others finish. Files and columns: docs/compare.md.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
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
from bt_protection.engine import Engine, Execution, Task, progress_bar
from bt_protection.errors import UserError
from bt_protection.job import RunSpec
from bt_protection.outfolder import (
    Kind,
    OutputFolder,
    data_qualifier,
    default_out,
    read_json,
    write_json,
)
from bt_protection.plots import plot_comparison
from bt_protection.profile import Profile, load_profile
from bt_protection.runner import CSV_FLOAT, close_run, open_run, plan_run
from bt_protection.runs import ABLATION_MARK, Run, compare_runs, load_run
from bt_protection.shipped import PROFILES, shipped_file
from bt_protection.strategies_registry import StrategySource

DEFAULT_STRATEGY = "momentum_rotation"
DEFAULT_PROFILES = ("off", "conservative", "balanced", "aggressive", "portfolio_guard")
PROFILES_FOLDER = "profiles"
# what makes two comparisons the same one
IDENTITY = ("strategy", "strategy_params", "data", "start", "end")
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
class CompareSpec:
    """What `execute_comparison` runs: `job` (the strategy, its params, data, dates, broker
    and `regime_data` every run shares; its `profile` is not used) under each of `profiles`
    (files or shipped names; None: the five shipped `DEFAULT_PROFILES`); with `ablate`, also
    each profile with one enabled protection switched off; with `costs` (basis points per
    trade), each profile at each cost, for costs.csv and the break-even columns
    (bt_protection.costs). `out` None: `runs/compare-<strategy>[-<data folder>]`.
    `execution`: where the runs run (`jobs` None: one per run, at most one per CPU)."""

    job: RunSpec
    profiles: tuple[str | os.PathLike[str], ...] | None = None
    ablate: bool = False
    costs: tuple[float, ...] | None = None
    allow_mixed_data: bool = False
    out: Path | None = None
    execution: Execution = Execution()


@dataclass(frozen=True)
class _Entry:
    """One run of the comparison: its folder name, the file its profile came from (for
    messages), its job, its loaded profile and, for an ablation, (the run it ablates, the
    system switched off); for a `--costs` run, its cost in bps."""

    name: str
    source: Path
    spec: RunSpec
    profile: Profile
    ablation: tuple[str, str] | None = None
    cost_bps: float | None = None


def default_profiles() -> list[Path]:
    """The shipped profiles of `DEFAULT_PROFILES` (off, conservative, balanced, aggressive and
    portfolio_guard), as files."""
    return [PROFILES / f"{name}.yaml" for name in DEFAULT_PROFILES]


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
    """`execute_comparison` with its settings as keywords (for notebooks): see `CompareSpec`
    and `RunSpec` for each. A class that only this process has (defined in a notebook cell, a
    script's `__main__` or a function) runs in this process whatever `jobs` says
    (docs/extending.md). Raises UserError, with nothing written, for bad input."""
    execution = Execution(jobs, scheduler, progress)
    job = RunSpec(
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
    return execute_comparison(
        CompareSpec(
            job,
            None if profiles is None else tuple(profiles),
            ablate,
            None if costs is None else tuple(costs),
            allow_mixed_data,
            None if out is None else Path(out),
            execution,
        )
    )


def execute_comparison(spec: CompareSpec) -> Comparison:
    """Run `spec.job` under each profile into the comparison folder and write the comparison
    files there. Raises UserError, with nothing written, for bad input."""
    costs = spec.costs
    if costs is not None and (not costs or min(costs) < 0):
        raise UserError(f"`costs` must be one or more basis points of 0 or more, not {costs}.")
    job = spec.job
    out = spec.out or default_out(Kind.COMPARE, job.strategy, data_qualifier(job.data))
    target = OutputFolder(out, Kind.COMPARE)
    loaded = _load_profiles(default_profiles() if spec.profiles is None else spec.profiles)
    plan = plan_run(replace(job, profile=loaded[0][0]))
    identity = {key: plan.fingerprint[key] for key in IDENTITY}
    entries = _entries(job, loaded, spec.ablate)
    if costs is not None:
        check_baseline([profile.name for _, profile in loaded])
        entries += _cost_entries(job, loaded, costs)
    _check_out(target, identity)
    execution = spec.execution
    workers = min(execution.jobs or os.cpu_count() or 1, len(entries))
    with Engine(plan.frames, replace(execution, jobs=workers), job.strategy) as engine:
        partial = target.begin()  # the cluster, if any, was reached first
        if spec.ablate:
            _write_ablated(entries, partial / PROFILES_FOLDER)
        failed = _execute(engine, entries, partial, out, execution.progress)
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
        partial, compared, plan.frames, spec.allow_mixed_data, priced
    )
    write_json(partial / "comparison.json", _manifest(identity, job, entries, runs, failed))
    target.install()
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


def _entries(job: RunSpec, loaded: list[tuple[Path, Profile]], ablate: bool) -> list[_Entry]:
    """The runs in table order: each profile, then its ablations; names must be unique. Each
    job carries its profile as a mapping: workers read no profile file."""
    entries = []
    for path, profile in loaded:
        entries.append(_entry(profile.name, path, job, profile))
        for system in profile.enabled_systems if ablate else ():
            ablated = ablated_profile(profile, system)
            source = Path(PROFILES_FOLDER) / f"{ablated.name}.yaml"
            entries.append(_entry(ablated.name, source, job, ablated, (profile.name, system)))
    seen: dict[str, _Entry] = {}
    for entry in entries:
        _check_name(entry.name, entry.source)
        if entry.name in seen:
            raise UserError(
                f"two runs would be named {entry.name!r} ({seen[entry.name].source} and "
                f"{entry.source}); run folders are named after the profile's `name:`, "
                "so give each profile its own name."
            )
        seen[entry.name] = entry
    return entries


def _entry(
    name: str,
    source: Path,
    job: RunSpec,
    profile: Profile,
    ablation: tuple[str, str] | None = None,
    cost_bps: float | None = None,
) -> _Entry:
    if cost_bps is not None:
        job = replace(job, commission=cost_fraction(cost_bps), slippage=0.0)
    spec = replace(job, profile=profile.to_dict())
    return _Entry(name, source, spec, profile, ablation, cost_bps)


def _check_name(name: str, profile: str | os.PathLike[str]) -> None:
    if not name or name.startswith(".") or "/" in name or "\\" in name or name == PROFILES_FOLDER:
        raise UserError(
            f"{profile}: profile name {name!r} cannot name a run folder; use letters, digits, "
            f"'-' or '_' (and not {PROFILES_FOLDER!r})."
        )


def _check_out(target: OutputFolder, identity: dict[str, Any]) -> None:
    """`out` must be absent, empty, or hold the same comparison (which is then replaced)."""
    target.check()
    old = read_json(target.out / "comparison.json")
    if old is None:
        return
    # a comparison made before strategy params existed had none
    previous = {key: old.get(key) for key in IDENTITY} | {
        "strategy_params": old.get("strategy_params") or {}
    }
    if previous != identity:
        raise UserError(
            f"`out` {target.out} already holds another comparison ({_describe(previous)}), not "
            f"{_describe(identity)}; choose another folder or remove it."
        )


def _describe(identity: dict[str, Any]) -> str:
    data = " ".join(identity["data"] or ())
    params = identity.get("strategy_params")
    given = f" with params {params}" if params else ""
    return f"{identity['strategy']}{given} on {data} from {identity['start']} to {identity['end']}"


def _cost_entries(
    job: RunSpec, loaded: list[tuple[Path, Profile]], costs: Sequence[float]
) -> list[_Entry]:
    """Each profile at each cost: that many bps of traded value, no commission or slippage."""
    return [
        _entry(run_name(profile.name, bps), path, job, profile, cost_bps=bps)
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
    """The profile file of each ablation entry, in `folder` (what was run, for the reader)."""
    folder.mkdir()
    for entry in entries:
        if entry.ablation is not None:
            text = yaml.safe_dump(entry.profile.to_dict(), sort_keys=False)
            (folder / entry.source.name).write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------- running


def _execute(
    engine: Engine, entries: list[_Entry], folder: Path, out: Path, progress: bool
) -> dict[str, str]:
    """Run every entry on the engine, each into its run folder under `folder`, with a
    progress bar; returns the failed runs' errors by name, in table order."""
    by_key: dict[str, _Entry] = {}
    tasks = []
    for entry in entries:
        task = Task(
            f"run-{entry.name}-{entry.profile.hash}",
            replace(entry.spec, strategy=engine.strategy),
            open_run(OutputFolder(folder / entry.name, Kind.RUN), entry.profile),
        )
        by_key[task.key] = entry
        tasks.append(task)
    failed: dict[str, str] = {}
    with progress_bar("compare", "run", len(entries), progress) as bar:
        for task, result in engine.run(tasks):
            entry = by_key[task.key]
            error = close_run(OutputFolder(folder / entry.name, Kind.RUN), result)
            if error is not None:
                failed[entry.name] = error
                kept = f" (kept as {out / entry.name}.failed/)"
                tqdm.write(f"run {entry.name} failed{kept}: {error}", file=sys.stderr)
            bar.update()
    return {e.name: failed[e.name] for e in entries if e.name in failed}


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
    job: RunSpec,
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
    settings = {"cash": job.cash, "commission": job.commission, "slippage": job.slippage}
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
