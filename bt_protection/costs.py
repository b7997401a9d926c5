"""Break-even trading cost: each profile's figures at several costs per trade, and the cost at
which its Sharpe ratio reaches the baseline's (`compare --costs`, docs/compare.md).

A cost of c basis points charges c / 10,000 of each fill's traded value and replaces the
commission and slippage of the comparison. `sharpe_vs_off` is the profile's Sharpe minus the
baseline's at the same cost; the break-even is where it crosses zero, linearly interpolated
between the two neighbouring costs where its sign changes (the first such pair).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from bt_protection.errors import UserError

BASELINE = "off"
COSTS_FOLDER = "costs"
COST_COLUMNS = (
    "profile",
    "cost_bps",
    "total_return",
    "sharpe",
    "max_drawdown",
    "turnover",
    "sharpe_vs_off",
    "return_vs_off",
)
BREAKEVEN_COLUMNS = ("breakeven_cost_bps", "breakeven_note")


def parse_costs(text: str) -> tuple[float, ...]:
    """`0,10,25,50` as sorted distinct basis points; UserError for a negative, non-numeric or
    empty item."""
    items = [item.strip() for item in text.split(",")]
    values = []
    for item in items:
        try:
            value = float(item)
        except ValueError:
            raise UserError(
                f"`costs` {text!r}: {item!r} is not a number; give basis points per trade "
                "separated by commas, e.g. 0,10,25,50."
            ) from None
        if not math.isfinite(value) or value < 0:
            raise UserError(
                f"`costs` {text!r}: {item} is not a cost; each must be 0 or more basis points."
            )
        values.append(value)
    return tuple(sorted(set(values)))


def cost_fraction(bps: float) -> float:
    """Basis points as the fraction of traded value the broker charges."""
    return bps / 10_000


def run_name(profile: str, bps: float) -> str:
    """The folder, under `costs/`, of `profile` run at `bps`."""
    return f"{COSTS_FOLDER}/{profile}-{bps:g}bps"


def cost_table(summaries: Mapping[tuple[str, float], Mapping[str, Any]]) -> pd.DataFrame:
    """costs.csv: one row per (profile, cost) in the order given, from each run's summary.json,
    with the differences to the baseline's run at the same cost."""
    rows = [
        {"profile": profile, "cost_bps": bps}
        | {column: summary.get(column) for column in COST_COLUMNS[2:6]}
        for (profile, bps), summary in summaries.items()
    ]
    table = pd.DataFrame(rows, columns=list(COST_COLUMNS[:6]))
    table[list(COST_COLUMNS[2:6])] = table[list(COST_COLUMNS[2:6])].astype(float)
    baseline = table[table["profile"] == BASELINE].set_index("cost_bps")
    for column, name in (("sharpe", "sharpe_vs_off"), ("total_return", "return_vs_off")):
        table[name] = table[column] - table["cost_bps"].map(baseline[column])
    return table


def breakeven(costs: pd.DataFrame) -> pd.DataFrame:
    """Per profile (index): `breakeven_cost_bps` and `breakeven_note` (a sentence)."""
    rows = {}
    for profile, group in costs.groupby("profile", sort=False):
        rows[profile] = _breakeven(
            str(profile), group["cost_bps"].to_numpy(float), group["sharpe_vs_off"].to_numpy(float)
        )
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(BREAKEVEN_COLUMNS))


def _breakeven(profile: str, costs: np.ndarray, gap: np.ndarray) -> tuple[float, str]:
    span = f"from {costs[0]:g} to {costs[-1]:g} bps"
    if profile == BASELINE:
        return math.nan, "the baseline."
    known = np.isfinite(gap)
    costs, gap = costs[known], gap[known]
    if len(gap) == 0:
        return math.nan, f"no Sharpe ratio to compare with {BASELINE}'s {span}."
    for i in range(len(gap)):
        if gap[i] == 0:
            return float(costs[i]), f"matches {BASELINE}'s Sharpe at {costs[i]:g} bps."
        if i + 1 < len(gap) and gap[i] * gap[i + 1] < 0:
            at = costs[i] + (costs[i + 1] - costs[i]) * gap[i] / (gap[i] - gap[i + 1])
            side = "beats" if gap[i + 1] > 0 else "trails"
            return float(at), (
                f"reaches {BASELINE}'s Sharpe at {at:.1f} bps and {side} it above that cost."
            )
    side = "above" if gap[0] > 0 else "below"
    return math.nan, f"stays {side} {BASELINE}'s Sharpe at every cost {span}."


def check_baseline(profiles: Sequence[str]) -> None:
    """UserError unless a profile is named `off`: the break-even is measured against it."""
    if BASELINE not in profiles:
        raise UserError(
            f"`costs` needs a profile named {BASELINE!r} to measure the break-even against; "
            f"the profiles are {', '.join(profiles)}."
        )
