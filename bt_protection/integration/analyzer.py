"""`ProtectionAnalyzer`: the protection metrics of a run and one row per decision."""

from __future__ import annotations

from typing import Any

import backtrader as bt
import pandas as pd

from bt_protection.errors import UserError
from bt_protection.models import Action, ProtectionDecision

FRAME_COLUMNS = (
    "asset",
    "action",
    "approved",
    "exempt",
    "would_block",
    "blocking_systems",
    "overridden_systems",
    "reason",
    "regime",
    "bar",
    "current_size",
    "target_size",
    "approved_target",
    "partial",
    "risk_exit",
    "lifted_systems",
    "attempt",
)


class ProtectionAnalyzer(bt.Analyzer):
    """Collects every decision of a `ProtectionMixin` strategy.

    `get_analysis()`: the orchestrator's `get_performance_metrics()` plus `by_system`
    (per system: `denied`, decisions it blocked, as `blocks_by_system`; `would_block`,
    decisions approved although it objected, in shadow mode, as a safety exit or as a risk exit,
    as `would_block_by_system`; `clipped`, decisions approved in part because of it (counted in
    `blocks_by_system` too); `overridden`, denials the regime override lifted) and `by_action`
    (per action: `requested`, `approved`, `partial` (approved in part, also in `approved`),
    `denied`, `risk_exits` (approved by exit safety's valves, also in `approved`)). The
    metrics' `risk_exits` counts every risk exit.
    `to_frame()`: one row per decision, in decision order, indexed by backtest `date`.
    Beside a plain strategy of a cerebro that also runs a protected one, it has nothing to
    analyse: `get_analysis()` is `{}` and `to_frame()` has no rows.
    """

    def start(self) -> None:
        self._decisions: list[ProtectionDecision] = []
        self._metrics: dict[str, Any] | None = None
        add_listener = getattr(self.strategy, "add_protection_listener", None)
        self._plain = add_listener is None
        if add_listener is None:
            if not any(
                hasattr(s, "add_protection_listener") for s in self.strategy.env.runningstrats
            ):
                raise UserError(
                    f"ProtectionAnalyzer needs a ProtectionMixin strategy; "
                    f"{type(self.strategy).__name__} does not derive from it."
                )
            return
        self._systems = tuple(self.strategy.protection.profile.enabled_systems)
        add_listener(self._record)

    def _record(self, decision: ProtectionDecision) -> None:
        # listening from `start`, before any order: the n-th decision is the n-th attempt
        self._decisions.append(decision)

    def stop(self) -> None:
        if not self._plain:
            self._metrics = self.strategy.protection.get_performance_metrics()

    @property
    def decisions(self) -> tuple[ProtectionDecision, ...]:
        """Every decision so far, in the order the orchestrator made them."""
        return tuple(self._decisions)

    def get_analysis(self) -> dict[str, Any]:
        """Orchestrator metrics plus `by_system` and `by_action` counts (plain types)."""
        if self._plain:
            return {}
        metrics = self._metrics or self.strategy.protection.get_performance_metrics()
        by_system = {
            s: {"denied": 0, "would_block": 0, "clipped": 0, "overridden": 0} for s in self._systems
        }
        by_action = {
            a.value: {"requested": 0, "approved": 0, "partial": 0, "denied": 0, "risk_exits": 0}
            for a in Action
        }
        for decision in self._decisions:
            kind = "clipped" if decision.partial else "would_block"
            for system in decision.blocking_systems:
                by_system[system][kind if decision.approved else "denied"] += 1
            for system in decision.lifted_systems:  # a risk exit let it through
                by_system[system]["would_block"] += 1
            for system in decision.overridden_systems:
                by_system[system]["overridden"] += 1
            counts = by_action[decision.action.value]
            counts["requested"] += 1
            counts["approved" if decision.approved else "denied"] += 1
            counts["partial"] += decision.partial
            counts["risk_exits"] += decision.risk_exit
        return {**metrics, "by_system": by_system, "by_action": by_action}

    def to_frame(self) -> pd.DataFrame:
        """One row per decision: columns `FRAME_COLUMNS`, a DatetimeIndex named `date`."""
        rows = [
            {
                "asset": d.asset,
                "action": d.action.value,
                "approved": d.approved,
                "exempt": d.exempt,
                "would_block": d.would_block,
                "blocking_systems": ";".join(d.blocking_systems),
                "overridden_systems": ";".join(d.overridden_systems),
                "reason": d.reason,
                "regime": d.regime,
                "bar": d.bar,
                "current_size": d.current_size,
                "target_size": d.target_size,
                "approved_target": d.approved_target,
                "partial": d.partial,
                "risk_exit": d.risk_exit,
                "lifted_systems": ";".join(d.lifted_systems),
                "attempt": attempt,
            }
            for attempt, d in enumerate(self._decisions, start=1)
        ]
        index = pd.DatetimeIndex([d.date for d in self._decisions], name="date")
        return pd.DataFrame(rows, index=index, columns=list(FRAME_COLUMNS))
