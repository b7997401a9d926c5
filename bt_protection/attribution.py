"""What the denials were worth: the asset's return after each denied order.

For a denial at the decision bar t, the forward return over h bars is close[t+h] / close[t] - 1
on the run's own data (adjusted closes, as the run saw them), NaN when t+h is beyond it. A
denial was "right" over h bars when the asset moved against the blocked trade: up after a
blocked sell (an exit kept the position), down after a blocked buy (an entry was kept out).
A partial approval counts as a denial of its clipped part (`partial` is true on its row).
`blocked_value` is the blocked shares times close[t]; what a denial saved over h bars is that
value times the forward return, with the sign of "right" (positive: blocking paid).
The method and the columns are in docs/compare.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from bt_protection.protections.base import registry
from bt_protection.runs import Run

HORIZONS = (5, 20, 60)
DENIAL_COLUMNS = (
    "run",
    "date",
    "asset",
    "action",
    "side",
    "system",
    "blocking_systems",
    "partial",
    "reason",
)


def closes(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The `close` column of each loaded frame (`load_universe` output), one column per asset."""
    return pd.DataFrame({asset: frame["close"] for asset, frame in frames.items()})


def forward_returns(
    prices: pd.DataFrame, dates: pd.Series, assets: pd.Series, horizons: Sequence[int] = HORIZONS
) -> pd.DataFrame:
    """`fwd_<h>` for each (date, asset) pair: prices[t+h] / prices[t] - 1, NaN past the end.

    `prices` is indexed by date with one column per asset; every date must be in its index.
    """
    rows, cols = _cells(prices, dates, assets)
    values = prices.to_numpy(dtype=float)
    out = {}
    for h in horizons:
        ahead = rows + h
        inside = ahead < len(values)
        later = np.where(inside, values[np.minimum(ahead, len(values) - 1), cols], np.nan)
        out[f"fwd_{h}"] = later / values[rows, cols] - 1
    return pd.DataFrame(out, index=dates.index)


def _cells(
    prices: pd.DataFrame, dates: pd.Series, assets: pd.Series
) -> tuple[np.ndarray, np.ndarray]:
    """Row and column positions of each (date, asset) pair in `prices`."""
    rows = prices.index.get_indexer(pd.DatetimeIndex(dates))
    if (rows < 0).any():
        missing = pd.DatetimeIndex(dates)[rows < 0][0].date()
        raise ValueError(f"decision date {missing} is not in the price data.")
    cols = prices.columns.get_indexer(pd.Index(assets))
    if (cols < 0).any():
        raise ValueError(f"asset {list(assets)[int(np.argmax(cols < 0))]} is not in the data.")
    return rows, cols


def denials(name: str, run: Run) -> pd.DataFrame:
    """One row per denied or partly approved decision of `run` (`DENIAL_COLUMNS`), in
    decision order.

    `side` is the blocked trade's side (`sell` when the target was below the position),
    `system` the highest-priority blocking system, `blocking_systems` all of them (`;`),
    `partial` whether part of the order went through (the row is about the clipped rest),
    `reason` the decision's sentence; `blocked_shares` (not in `DENIAL_COLUMNS`) the shares
    held back.
    """
    decisions = run.decisions
    if decisions.empty:
        return pd.DataFrame(columns=[*DENIAL_COLUMNS, "blocked_shares"])
    partial = decisions.get("partial", pd.Series(False, index=decisions.index)).astype(bool)
    denied = decisions[~decisions["approved"].astype(bool) | partial]
    return pd.DataFrame(
        {
            "run": name,
            "date": denied["time"],
            "asset": denied["asset"],
            "action": denied["action"],
            "side": np.where(denied["target_size"] < denied["current_size"], "sell", "buy"),
            "system": denied["blocking_systems"].map(lambda names: names[0] if names else ""),
            "blocking_systems": denied["blocking_systems"].map(";".join),
            "partial": partial[denied.index],
            "reason": denied["reason"],
            "blocked_shares": (denied["target_size"] - denied["approved_target"]).abs(),
        }
    ).reset_index(drop=True)


def attribute(
    runs: Mapping[str, Run], prices: pd.DataFrame, horizons: Sequence[int] = HORIZONS
) -> pd.DataFrame:
    """attribution.csv: every denial of every run with its forward returns (`fwd_<h>`) and
    `blocked_value`."""
    frames = [denials(name, run) for name, run in runs.items()]
    empty = pd.DataFrame(columns=[*DENIAL_COLUMNS, "blocked_shares"])
    table = pd.concat(frames, ignore_index=True) if frames else empty
    returns = forward_returns(prices, table["date"], table["asset"], horizons)
    rows, cols = _cells(prices, table["date"], table["asset"])
    price = prices.to_numpy(dtype=float)[rows, cols]
    shares = table.pop("blocked_shares").to_numpy(dtype=float)
    table = pd.concat([table, returns], axis=1)
    table["blocked_value"] = shares * price
    table["date"] = pd.DatetimeIndex(table["date"]).strftime("%Y-%m-%d")
    return table


def summarize(attribution: pd.DataFrame, horizons: Sequence[int] = HORIZONS) -> pd.DataFrame:
    """attribution_summary.csv: per run and blocking system (a denial counts for each system
    that blocked it): `count`, `mean_fwd_<h>` and `right_<h>` (share of denials with a known
    forward return where the asset moved against the blocked trade) and `saved_<h>` (the sum
    of blocked_value times the forward return, signed so that a right denial saved; NaN
    without a `blocked_value` column)."""
    rows = attribution.assign(system=attribution["blocking_systems"].str.split(";"))
    rows = rows.explode("system")
    sign = np.where(rows["side"] == "sell", 1.0, -1.0)
    value = rows.get("blocked_value", pd.Series(np.nan, index=rows.index)).astype(float)
    for h in horizons:
        fwd = rows[f"fwd_{h}"].astype(float)
        right = np.where(rows["side"] == "sell", fwd > 0, fwd < 0)
        rows[f"right_{h}"] = np.where(fwd.isna(), np.nan, right)
        rows[f"saved_{h}"] = value * fwd * sign
    order = {system: rank for rank, system in enumerate(registry())}
    run_order = {run: rank for rank, run in enumerate(dict.fromkeys(attribution["run"]))}
    grouped = rows.groupby(["run", "system"], sort=False)
    summary = grouped.agg(
        count=("asset", "size"),
        **{f"mean_fwd_{h}": (f"fwd_{h}", "mean") for h in horizons},
        **{f"right_{h}": (f"right_{h}", "mean") for h in horizons},
        **{f"saved_{h}": (f"saved_{h}", _total) for h in horizons},
    ).reset_index()
    rank = summary["run"].map(run_order) * (len(order) + 1)
    rank += summary["system"].map(order).fillna(len(order))
    return summary.iloc[np.argsort(rank.to_numpy(), kind="stable")].reset_index(drop=True)


def _total(values: pd.Series) -> float:
    """The sum, NaN when no value is known."""
    return float(values.sum(min_count=1))
