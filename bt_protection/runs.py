"""Read run folders (written by `bt-protection run`) back as pandas objects."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from bt_protection.audit import read_audit
from bt_protection.errors import UserError
from bt_protection.protections.base import registry

_TEXT_COLUMNS = ("reason", "blocking_systems", "overridden_systems", "status", "protection")
_DROPPED = ("kind", "session_id", "metadata")


@dataclass(frozen=True, eq=False)  # eq=False: DataFrames have no single truth value
class Run:
    """One complete run folder: `summary` and `profile` as dicts, the CSVs and the audit's
    decision records as DataFrames (equity indexed by date), `path` the folder."""

    path: Path
    summary: dict[str, Any]
    profile: dict[str, Any]
    equity: pd.DataFrame
    trades: pd.DataFrame
    orders: pd.DataFrame
    decisions: pd.DataFrame

    @property
    def name(self) -> str:
        return self.path.name


def load_run(path: str | os.PathLike[str]) -> Run:
    """Load the run folder at `path`; UserError if it is missing, failed or incomplete."""
    folder = Path(path)
    status = _read_json(folder / "status.json", folder)
    if status.get("status") != "complete":
        raise UserError(f"run {folder} did not complete: {status.get('error', status)}.")
    return Run(
        path=folder,
        summary=_read_json(folder / "summary.json", folder),
        profile=yaml.safe_load((folder / "profile.yaml").read_text(encoding="utf-8")),
        equity=pd.read_csv(folder / "equity.csv", index_col="date", parse_dates=["date"]),
        trades=pd.read_csv(folder / "trades.csv", parse_dates=["opened", "closed"]),
        orders=_read_orders(folder / "orders.csv"),
        decisions=read_decisions(folder / "audit.jsonl"),
    )


def _read_json(file: Path, folder: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
        return data
    except FileNotFoundError:
        raise UserError(f"{folder} is not a complete run folder: {file.name} is missing.") from None


def _read_orders(file: Path) -> pd.DataFrame:
    orders = pd.read_csv(
        file, parse_dates=["created", "executed"], dtype=dict.fromkeys(_TEXT_COLUMNS, str)
    )
    orders[list(_TEXT_COLUMNS)] = orders[list(_TEXT_COLUMNS)].fillna("")
    return orders


def read_decisions(audit: str | os.PathLike[str]) -> pd.DataFrame:
    """The audit's decision records, one row each (wall-clock timings left out).

    `metadata.attempt` (the order's attempt number, matching orders.csv) becomes `attempt`;
    `time` is a datetime; `results`, `blocking_systems` and `overridden_systems` stay lists.
    """
    rows = []
    for record in read_audit(audit, drop_wall=True):
        if record["kind"] != "decision":
            continue
        attempt = (record.get("metadata") or {}).get("attempt")
        rows.append({k: v for k, v in record.items() if k not in _DROPPED} | {"attempt": attempt})
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["time"] = pd.to_datetime(frame["time"])
        frame["attempt"] = frame["attempt"].astype("Int64")
    return frame


# --------------------------------------------------------------------------- comparison table
#
# `compare_runs` is the library side of `bt-protection compare` (bt_protection.compare): one
# row per run, the columns below; docs/compare.md describes them.

SUMMARY_COLUMNS = (
    "total_return",
    "cagr",
    "volatility",
    "sharpe",
    "max_drawdown",
    "turnover",
    "trades",
    "commissions",
    "orders_attempted",
    "orders_approved",
    "orders_denied",
    "orders_partial",
    "value_clipped",
    "risk_exits",
)
ABLATION_MARK = "-without-"
DELTA_COLUMNS = ("total_return", "max_drawdown", "turnover", "commissions")
RunLike = Run | str | os.PathLike[str]


def named_runs(runs: Mapping[str, Run] | Iterable[RunLike]) -> dict[str, Run]:
    """Runs (or run folders, loaded) by name: the folder name, or `parent/name` for all of
    them when two folders share a name. A mapping is returned as a dict unchanged."""
    if isinstance(runs, Mapping):
        return dict(runs)
    loaded = [run if isinstance(run, Run) else load_run(run) for run in runs]
    names = [run.name for run in loaded]
    if len(set(names)) < len(names):
        names = [f"{run.path.parent.name}/{run.name}" for run in loaded]
    if len(set(names)) < len(names):
        raise UserError(f"runs are given twice or share a name: {', '.join(names)}.")
    return dict(zip(names, loaded, strict=True))


def compare_runs(
    paths: Mapping[str, Run] | Iterable[RunLike], *, allow_mixed_data: bool = False
) -> pd.DataFrame:
    """The comparison table: one row per run (index `run`, in the order given).

    Columns: the `SUMMARY_COLUMNS` of summary.json (same names, same values),
    `denied_<system>` per registered system (its `denials_by_system` count),
    `overrides_applied`; when a run named `<base>-without-<system>` sits beside `<base>`, also
    `protection` (the system switched off) and `delta_<metric>` = base minus that run for
    `DELTA_COLUMNS` (blank on other rows). Runs on different data (tickers or date range)
    raise UserError unless `allow_mixed_data`.
    """
    runs = named_runs(paths)
    if not allow_mixed_data:
        check_same_data(runs)
    systems = tuple(registry())
    rows = []
    for run in runs.values():
        summary = run.summary
        denials = summary.get("denials_by_system") or {}
        rows.append(
            {column: summary.get(column) for column in SUMMARY_COLUMNS}
            | {f"denied_{system}": denials.get(system, 0) for system in systems}
            | {"overrides_applied": summary.get("overrides_applied")}
        )
    table = pd.DataFrame(rows, index=pd.Index(list(runs), name="run"))
    table = table.apply(pd.to_numeric) if len(table) else table
    return _with_ablations(table, systems)


def _with_ablations(table: pd.DataFrame, systems: tuple[str, ...]) -> pd.DataFrame:
    """Add `protection` and `delta_*` columns if any row is an ablation of another row."""
    ablated: dict[str, tuple[str, str]] = {}
    for name in table.index:
        base, _, system = name.rpartition(ABLATION_MARK)
        if base in table.index and system in systems:
            ablated[name] = (base, system)
    if not ablated:
        return table
    names = list(ablated)
    bases = [base for base, _ in ablated.values()]
    table = table.copy()
    systems_off = pd.Series([system for _, system in ablated.values()], index=names)
    table["protection"] = systems_off.reindex(table.index).fillna("")
    for column in DELTA_COLUMNS:
        base = table.loc[bases, column].to_numpy(dtype=float)
        delta = pd.Series(base - table.loc[names, column].to_numpy(dtype=float), index=names)
        table[f"delta_{column}"] = delta.reindex(table.index)
    return table


def data_key(run: Run) -> tuple[tuple[str, ...], str, str]:
    """(tickers, start, end) from the run's fingerprint: what must match to compare runs."""
    fingerprint = run.summary["fingerprint"]
    return tuple(fingerprint["data"]), fingerprint["start"], fingerprint["end"]


def check_same_data(runs: Mapping[str, Run]) -> None:
    """UserError naming the runs whose data (tickers or date range) differ from the first's."""
    groups: dict[tuple[tuple[str, ...], str, str], list[str]] = {}
    for name, run in runs.items():
        groups.setdefault(data_key(run), []).append(name)
    if len(groups) < 2:
        return
    (first, names), *others = groups.items()
    parts = [
        f"{', '.join(other_names)} {'use' if len(other_names) > 1 else 'uses'} "
        f"{_describe_data(key)} ({_difference(first, key)})"
        for key, other_names in others
    ]
    raise UserError(
        f"runs on different data cannot share a table: {', '.join(names)} "
        f"{'use' if len(names) > 1 else 'uses'} {_describe_data(first)} but "
        f"{'; '.join(parts)}; set `allow_mixed_data` to compare them anyway."
    )


def _describe_data(key: tuple[tuple[str, ...], str, str]) -> str:
    tickers, start, end = key
    return f"{' '.join(tickers)} from {start} to {end}"


def _difference(a: tuple[tuple[str, ...], str, str], b: tuple[tuple[str, ...], str, str]) -> str:
    what = []
    if a[0] != b[0]:
        what.append("other tickers")
    if a[1:] != b[1:]:
        what.append("another date range")
    return " and ".join(what)
