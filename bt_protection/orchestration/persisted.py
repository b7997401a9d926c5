"""The orchestrator's state as plain data (docs/live.md): what a state file saves, and taking it
back after a restart."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from bt_protection.exit_safety import ExitSafety
from bt_protection.orchestration.clock import Clock
from bt_protection.orchestration.ledger import PositionLedger
from bt_protection.orchestration.observers import Metrics
from bt_protection.orchestration.systems import Systems


class PersistedState:
    """Saves and restores the parts the decisions depend on."""

    def __init__(
        self,
        profile_name: str,
        clock: Clock,
        ledger: PositionLedger,
        metrics: Metrics,
        systems: Systems,
        safety: ExitSafety | None,
    ) -> None:
        self._profile_name = profile_name
        self._clock = clock
        self._ledger = ledger
        self._metrics = metrics
        self._systems = systems
        self._safety = safety

    def state(self) -> dict[str, Any]:
        """Each system's state, exit safety's, positions, the regime, the counters and the last
        event's time and bar. Decision timings (wall clock) are left out."""
        clock, systems = self._clock, self._systems
        return {
            "now": clock.now,
            "first": clock.first,
            "trace": clock.trace,
            "regime": systems.regime,
            "volatility": systems.volatility,
            "positions": self._ledger.state(),
            **self._metrics.state(),
            "protections": {p.key: p.state() for p in systems.all},
            "exit_safety": None if self._safety is None else self._safety.state(),
        }

    def restore(self, state: Mapping[str, Any], handled: datetime | None) -> None:
        """Take back a `state()` saved under the same profile; the clock replays (ignores)
        events dated at or before `handled` (default: the last saved event)."""
        saved, by_key = state["protections"], self._systems.by_key
        if set(saved) != set(by_key):
            raise ValueError(
                f"the saved state has systems {', '.join(sorted(saved))}, not "
                f"{', '.join(sorted(by_key))} of profile {self._profile_name!r}."
            )
        for key, value in saved.items():
            by_key[key].restore(value)
        if self._safety is not None and state["exit_safety"] is not None:
            self._safety.restore(state["exit_safety"])
        clock, systems = self._clock, self._systems
        clock.now, clock.first, clock.trace = state["now"], state["first"], state["trace"]
        systems.regime, systems.volatility = state["regime"], state["volatility"]
        systems.adapt()  # the values in force at the saved regime and volatility
        self._ledger.restore(state["positions"])
        self._metrics.restore(state)
        last = None if clock.now is None else clock.now.date
        marks = [d for d in (last, handled) if d is not None]
        clock.resume = max(marks) if marks else None


def replay_refusal(when: datetime, resume: datetime) -> str:
    """The reason an order on a bar handled before the restart is denied."""
    return (
        f"Denied: the bar of {when.date().isoformat()} was handled before the restart "
        f"(the state is saved through {resume.date().isoformat()}); an order on it is "
        "never sent twice."
    )
