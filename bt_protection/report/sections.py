"""The sections of a run or comparison report, from its `Evidence`."""

from __future__ import annotations

import pandas as pd

from bt_protection.attribution import HORIZONS, summarize
from bt_protection.compare import PERCENT_COLUMNS
from bt_protection.costs import BASELINE
from bt_protection.protections.base import registry
from bt_protection.report import charts
from bt_protection.report.evidence import (
    Evidence,
    curves,
    fingerprints,
    outcome_counts,
    regimes,
    risk_exit_count,
    special_events,
)
from bt_protection.report.page import Chart, Format, Part, Section, Table, Text

PERCENT = {c: Format.PERCENT for c in (*PERCENT_COLUMNS, "sharpe_vs_off_pct")}
MOVES = {f"move_{h}": Format.PERCENT for h in HORIZONS}


def report_sections(evidence: Evidence, orders: bool) -> list[Section]:
    """Summary, equity and drawdown, denials, effectiveness, decisions by regime, risk exits
    and partial approvals, break-even cost (with costs.csv), fingerprints and, for a run
    (`orders`), its orders."""
    names = list(evidence.runs)
    sections = [
        Section(
            "Summary",
            (
                *(Text(note) for note in evidence.notes),
                Table(evidence.table.reset_index(), PERCENT, name="summary"),
                Text("Click a column header to sort by it."),
            ),
        ),
        _equity(evidence, names),
        _denials(evidence, names),
        _effectiveness(evidence, names),
        _decisions(evidence, names),
        _special(evidence),
    ]
    if not evidence.costs.empty:
        sections.append(_costs(evidence, names))
    sections.append(
        Section("Run fingerprints", (Table(fingerprints(evidence.runs), name="fingerprints"),))
    )
    if orders:
        sections.extend(_orders(evidence, name) for name in names)
    return sections


def _equity(evidence: Evidence, names: list[str]) -> Section:
    bands, source = regimes(evidence.runs)
    where = (
        f"Bands: the regime as the {source} run's indicator saw it."
        if source
        else "No run recorded a regime change, so there are no regime bands."
    )
    spec = charts.equity_drawdown(curves(evidence.runs), bands, names)
    parts: list[Part] = [Chart("chart-equity", spec), Text(where)]
    if len(names) > 1:
        parts.append(Text("Click a profile in the legend to pick it out (shift-click adds one)."))
    return Section("Equity (log scale) and drawdown", tuple(parts))


def _denials(evidence: Evidence, names: list[str]) -> Section:
    found = evidence.attribution
    if found.empty:
        return Section("Denials by asset", (Text("No order was denied or clipped in these runs."),))
    shown = found.rename(columns={"run": "profile", **{f"fwd_{h}": f"move_{h}" for h in HORIZONS}})
    shown = shown.assign(partial=shown["partial"].map({True: "yes", False: "no"}).fillna("no"))
    columns = ["date", "profile", "asset", "system", "action", "side", "partial", "reason"]
    denied = shown[columns + list(MOVES)]
    return Section(
        "Denials by asset",
        (
            Text(
                f"{len(denied)} denials (partial approvals count for their clipped part), one "
                "point each: a lane per asset, colour the profile, shape the blocking system. "
                "Hover a point for its reason and the asset's move 5, 20 and 60 bars after."
            ),
            Chart("chart-denials", charts.denial_timeline(denied, names)),
        ),
    )


def _effectiveness(evidence: Evidence, names: list[str]) -> Section:
    found = evidence.attribution
    if found.empty:
        return Section("Per-system effectiveness", (Text("No denials, so nothing to weigh."),))
    summary = summarize(found).rename(columns={"run": "profile"})
    systems = [s for s in registry() if s in set(summary["system"])]
    systems += sorted(set(summary["system"]) - set(systems))
    formats = {
        **{f"right_{h}": Format.PERCENT for h in HORIZONS},
        **{f"mean_fwd_{h}": Format.PERCENT for h in HORIZONS},
        **{f"saved_{h}": Format.MONEY for h in HORIZONS},
    }
    return Section(
        "Per-system effectiveness",
        (
            Text(
                "Blocking was right when the asset then moved against the blocked trade (up "
                "after a blocked sell, down after a blocked buy). Value saved: the blocked "
                "shares' value times the move, positive when blocking paid."
            ),
            Chart("chart-effectiveness", charts.effectiveness(summary, names, systems)),
            Table(summary, formats, name="effectiveness"),
        ),
    )


def _decisions(evidence: Evidence, names: list[str]) -> Section:
    counts = outcome_counts(evidence.runs)
    if counts.empty:
        return Section("Decisions by regime and system", (Text("No decisions were made."),))
    first = ["approved", "exempt", "partial"]
    present = set(counts["outcome"])
    outcomes = [o for o in [*first, *registry()] if o in present]
    outcomes += sorted(present - set(outcomes))
    return Section(
        "Decisions by regime and system",
        (
            Text(
                "Each decision by the regime in force and its outcome: approved, exempt, "
                "partly approved, or the system that blocked it."
            ),
            Chart("chart-decisions", charts.decisions_by_regime(counts, names, outcomes)),
        ),
    )


def _special(evidence: Evidence) -> Section:
    counts = pd.DataFrame(
        [
            {
                "profile": name,
                "orders_partial": run.summary.get("orders_partial", 0),
                "value_clipped": run.summary.get("value_clipped", 0.0),
                "risk_exits": risk_exit_count(run),
            }
            for name, run in evidence.runs.items()
        ]
    )
    events = special_events(evidence.runs)
    if (
        events.empty
        and counts["orders_partial"].fillna(0).eq(0).all()
        and counts["risk_exits"].fillna(0).eq(0).all()
    ):
        return Section(
            "Risk exits and partial approvals",
            (Text("No partial approvals and no risk exits in these runs."),),
        )
    if counts["risk_exits"].isna().all():
        counts = counts.drop(columns="risk_exits")
    parts: list[Text | Table] = [
        Table(counts, {"value_clipped": Format.MONEY}, name="special-counts")
    ]
    if not events.empty:
        parts.append(Table(events, filterable=True, name="special-events"))
    return Section("Risk exits and partial approvals", tuple(parts))


def _costs(evidence: Evidence, names: list[str]) -> Section:
    costs = evidence.costs
    table = evidence.table
    columns = [c for c in ("breakeven_cost_bps", "breakeven_note") if c in table]
    parts: list[Text | Table | Chart] = [
        Text(
            "Each profile run again at each cost (basis points of traded value per trade, in "
            f"place of commission and slippage). The break-even is the cost at which a "
            f"profile's Sharpe reaches {BASELINE}'s (dashed rules on the right)."
        ),
        Chart("chart-costs", charts.cost_curves(costs, names, _crossings(table))),
    ]
    if columns:
        parts.append(Table(table[columns].reset_index(), name="breakeven"))
    parts.append(
        Table(
            costs,
            {
                "total_return": Format.PERCENT,
                "max_drawdown": Format.PERCENT,
                "return_vs_off": Format.PERCENT,
            },
            name="costs",
        )
    )
    return Section("Break-even cost", tuple(parts))


def _crossings(table: pd.DataFrame) -> pd.DataFrame:
    """profile, breakeven_cost_bps of the profiles whose break-even is known."""
    if "breakeven_cost_bps" not in table:
        return pd.DataFrame(columns=["profile", "breakeven_cost_bps"])
    known = table["breakeven_cost_bps"].dropna()
    return known.rename_axis("profile").reset_index()


def _orders(evidence: Evidence, name: str) -> Section:
    orders = evidence.runs[name].orders.copy()
    for column in ("created", "executed"):
        orders[column] = pd.to_datetime(orders[column]).dt.strftime("%Y-%m-%d").fillna("")
    formats = {"price": Format.NUMBER, "commission": Format.NUMBER}
    return Section(
        f"Orders of {name}",
        (
            Text("Every order the strategy attempted, denied ones included (orders.csv)."),
            Table(orders, formats, filterable=True, name="orders"),
        ),
    )
