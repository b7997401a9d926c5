"""What a run or comparison report shows, read from the folders `run` and `compare` write:
the runs, the comparison table, every denial with its reason and the asset's moves after it,
costs.csv when present, and notes on what could not be known."""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bt_protection.attribution import DENIAL_COLUMNS, HORIZONS, attribute, closes
from bt_protection.audit import read_audit
from bt_protection.data import load_universe
from bt_protection.errors import UserError
from bt_protection.job import RunSpec
from bt_protection.runner import data_folder
from bt_protection.runs import Run, compare_runs, load_run

MOVE_COLUMNS = tuple(f"fwd_{h}" for h in HORIZONS)
RISK_EXIT = "risk_exit"  # the decision field and orders.csv `protection` of exit-safety exits


@dataclass(frozen=True, eq=False)  # eq=False: DataFrames have no single truth value
class Evidence:
    """The runs by name (table order), comparison.csv's table (index `run`), attribution.csv's
    rows, costs.csv (empty without `--costs`) and notes (sentences) on what is missing."""

    runs: dict[str, Run]
    table: pd.DataFrame
    attribution: pd.DataFrame
    costs: pd.DataFrame
    notes: tuple[str, ...] = ()


def comparison_evidence(folder: Path) -> Evidence:
    """A comparison folder's complete runs (not its `--costs` runs) and its tables."""
    manifest = json.loads((folder / "comparison.json").read_text(encoding="utf-8"))
    names = [
        record["name"]
        for record in manifest.get("runs", [])
        if record.get("status") == "complete" and record.get("cost_bps") is None
    ]
    if not names:
        raise UserError(f"{folder} holds no complete run to report on.")
    runs = {name: load_run(folder / name) for name in names}
    table_file = folder / "comparison.csv"
    if table_file.is_file():
        table = pd.read_csv(table_file, index_col="run")
    else:
        table = compare_runs(runs, allow_mixed_data=True)
    costs_file = folder / "costs.csv"
    costs = pd.read_csv(costs_file) if costs_file.is_file() else pd.DataFrame()
    attribution_file = folder / "attribution.csv"
    if attribution_file.is_file():
        return Evidence(runs, table, _complete(pd.read_csv(attribution_file)), costs)
    note = "attribution.csv is missing, so the moves after each denial are not known."
    return Evidence(runs, table, _unpriced(runs), costs, (note,))


def run_evidence(folder: Path, data: str | os.PathLike[str] | None = None) -> Evidence:
    """One run folder. The moves after its denials come from the comparison it sits in
    (its attribution.csv), else from the prices in `data` (default: the sample data)."""
    run = load_run(folder)
    runs = {run.name: run}
    table = compare_runs(runs)
    parent = folder.resolve().parent / "attribution.csv"
    if parent.is_file():
        rows = pd.read_csv(parent)
        mine = rows[rows["run"] == run.name]
        expected = run.summary.get("orders_denied", 0) + run.summary.get("orders_partial", 0)
        if len(mine) == expected:
            return Evidence(runs, table, _complete(mine.reset_index(drop=True)), pd.DataFrame())
    fingerprint = run.summary["fingerprint"]
    try:
        source = data_folder(RunSpec("", {}, data=data))
        frames = load_universe(
            source, fingerprint["data"], fingerprint["start"], fingerprint["end"]
        )
        found = attribute(runs, closes(frames))
    except (UserError, ValueError, OSError) as error:
        note = (
            f"The moves after each denial are blank: the prices of {', '.join(fingerprint['data'])}"
            f" could not be read ({str(error).rstrip('.')}); name the folder of the run's prices"
            " to fill them in."
        )
        return Evidence(runs, table, _unpriced(runs), pd.DataFrame(), (note,))
    return Evidence(runs, table, found, pd.DataFrame())


def _complete(rows: pd.DataFrame) -> pd.DataFrame:
    """attribution.csv rows with every column the report reads (older files lack some)."""
    for column in (*DENIAL_COLUMNS, *MOVE_COLUMNS, "blocked_value"):
        if column not in rows:
            rows[column] = "" if column == "reason" else np.nan
    rows["reason"] = rows["reason"].fillna("")
    rows["blocking_systems"] = rows["blocking_systems"].fillna("")
    return rows


def _unpriced(runs: dict[str, Run]) -> pd.DataFrame:
    """The denials of `runs` with unknown moves: attribution on prices that are all NaN."""
    dates = sorted({t for run in runs.values() for t in run.decisions.get("time", [])})
    assets = sorted({a for run in runs.values() for a in run.decisions.get("asset", [])})
    blank = pd.DataFrame(np.nan, index=pd.DatetimeIndex(dates), columns=assets)
    return attribute(runs, blank)


# --------------------------------------------------------------------------- derived tables


def curves(runs: dict[str, Run], max_points: int = 700) -> pd.DataFrame:
    """date, profile, value, drawdown of every run; weekly (last value, deepest drawdown)
    when a run has more than `max_points` days."""
    frames = []
    for name, run in runs.items():
        value = run.equity["value"].astype(float)
        frame = pd.DataFrame({"value": value, "drawdown": value / value.cummax() - 1})
        if len(frame) > max_points:
            frame = frame.resample("W-FRI").agg({"value": "last", "drawdown": "min"}).dropna()
        frame.index = pd.DatetimeIndex(frame.index).strftime("%Y-%m-%d")
        frames.append(frame.rename_axis("date").reset_index().assign(profile=name))
    return pd.concat(frames, ignore_index=True)[["date", "profile", "value", "drawdown"]]


def regimes(runs: dict[str, Run]) -> tuple[pd.DataFrame, str | None]:
    """Regime periods (start, end, regime) from the audit of the first run that recorded a
    regime change, and that run's name (None when none did)."""
    for name, run in runs.items():
        changes = [
            r for r in read_audit(run.path / "audit.jsonl") if r.get("kind") == "regime_change"
        ]
        if not changes:
            continue
        dates = pd.DatetimeIndex(run.equity.index).strftime("%Y-%m-%d")
        rows = []
        start, regime = dates[0], changes[0]["from"]
        for change in changes:
            day = str(change["time"])[:10]
            if day > start:
                rows.append({"start": start, "end": day, "regime": regime})
            start, regime = day, change["to"]
        rows.append({"start": start, "end": dates[-1], "regime": regime})
        return pd.DataFrame(rows), name
    return pd.DataFrame(columns=["start", "end", "regime"]), None


def outcome_counts(runs: dict[str, Run]) -> pd.DataFrame:
    """profile, regime, outcome, count: each decision's outcome is `approved`, `exempt`,
    `partial`, `risk_exit` or the blocking system."""
    frames = []
    for name, run in runs.items():
        decisions = run.decisions
        if decisions.empty:
            continue
        frames.append(
            pd.DataFrame(
                {
                    "profile": name,
                    "regime": decisions.get("regime", pd.Series("", index=decisions.index))
                    .fillna("")
                    .replace("", "unknown"),
                    "outcome": [_outcome(row) for row in decisions.to_dict("records")],
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=["profile", "regime", "outcome", "count"])
    every = pd.concat(frames, ignore_index=True)
    return (
        every.groupby(["profile", "regime", "outcome"], sort=False).size().reset_index(name="count")
    )


def _outcome(decision: Mapping[Hashable, Any]) -> str:
    if is_risk_exit(decision):
        return RISK_EXIT
    if decision.get("partial") is True:
        return "partial"
    if decision.get("approved"):
        return "exempt" if decision.get("exempt") else "approved"
    systems = decision.get("blocking_systems") or []
    return str(systems[0]) if systems else "denied"


def is_risk_exit(decision: Mapping[Hashable, Any]) -> bool:
    """Whether a decision record is an exit-safety exit (a `risk_exit` field, or action)."""
    return bool(decision.get(RISK_EXIT)) or decision.get("action") == RISK_EXIT


def special_events(runs: dict[str, Run]) -> pd.DataFrame:
    """Partial approvals and risk exits of every run: profile, date, asset, kind, action,
    reason (from the audit; risk exits also from orders.csv when the audit has none)."""
    rows = []
    for name, run in runs.items():
        seen_risk = False
        for decision in run.decisions.to_dict("records") if not run.decisions.empty else []:
            kind = (
                RISK_EXIT
                if is_risk_exit(decision)
                else ("partial approval" if decision.get("partial") is True else None)
            )
            if kind is None:
                continue
            seen_risk |= kind == RISK_EXIT
            rows.append(_event(name, decision["time"], decision, kind))
        if not seen_risk and "protection" in run.orders:
            for order in run.orders[run.orders["protection"] == RISK_EXIT].to_dict("records"):
                rows.append(_event(name, order["created"], order, RISK_EXIT))
    columns = ["profile", "date", "asset", "kind", "action", "reason"]
    return pd.DataFrame(rows, columns=columns)


def _event(name: str, time: Any, record: Mapping[Hashable, Any], kind: str) -> dict[str, Any]:
    return {
        "profile": name,
        "date": pd.Timestamp(time).strftime("%Y-%m-%d"),
        "asset": record.get("asset", ""),
        "kind": kind,
        "action": record.get("action", ""),
        "reason": record.get("reason", ""),
    }


def risk_exit_count(run: Run) -> int | None:
    """summary.json's `risk_exits` (a number, or counts by system); None when absent."""
    value = run.summary.get("risk_exits")
    if value is None:
        return None
    if isinstance(value, dict):
        return int(sum(v for v in value.values() if isinstance(v, int | float)))
    return int(value)


def fingerprints(runs: dict[str, Run]) -> pd.DataFrame:
    """One row per run: its fingerprint's fields as text (as written, not rounded)."""
    rows = []
    for name, run in runs.items():
        fingerprint = run.summary.get("fingerprint", {})
        row: dict[str, Any] = {"run": name}
        for key, value in fingerprint.items():
            if isinstance(value, list):
                value = " ".join(map(str, value))
            elif isinstance(value, dict):
                value = ", ".join(f"{k}={v}" for k, v in value.items())
            row[key] = str(value)
        rows.append(row)
    return pd.DataFrame(rows)
