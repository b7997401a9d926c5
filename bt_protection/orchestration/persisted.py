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
from bt_protection.state_rows import StateRows, nest


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
        # path of each per-asset dict -> (the dict, its keys in order) as the last rows took them
        self._seen: dict[str, tuple[dict[str, Any], list[str]]] = {}
        # each system's state as the last call split it: (portfolio-level parts, per-asset)
        self._split: dict[str, tuple[dict[str, Any], dict[str, dict[str, Any]]]] = {}

    def state(self) -> dict[str, Any]:
        """Each system's state, exit safety's, positions, the regime, the counters and the last
        event's time and bar. Decision timings (wall clock) are left out."""
        parts, by_asset = self._parts()
        return nest({**parts, **by_asset})

    def rows(self, under: str) -> StateRows:
        """What changed since the last call, as state-file rows, the paths under `under`:
        the portfolio-level parts of the clock, the counters, exit safety and the systems an
        event reached (`Systems.changed`; the file rewrites those whose text changed), and of
        the per-asset parts (`Protection.per_asset`) only the rows of the assets an event touched
        (`Systems.touched`), with the key order of a per-asset dict whose keys changed. The
        first call, and the first after `restore`, gives every asset."""
        systems = self._systems
        parts, by_asset = self._parts(systems.changed)
        systems.changed.clear()
        systems.tracking = True  # what this call did not see is all in it
        prefix = under + "/"
        rows = StateRows({under: {}, **{prefix + path: value for path, value in parts.items()}})
        touched = systems.touched
        for path, values in by_asset.items():
            keys = list(values)
            seen = self._seen.get(path)
            if seen is None or seen[0] is not values:  # new, replaced whole or restored
                touched.update(keys)
                touched.update(() if seen is None else seen[1])
            elif seen[1] == keys:
                continue
            else:  # an asset came or went (its event touched it: this is a safety net)
                touched.update(set(keys).symmetric_difference(seen[1]))
            rows.orders[prefix + path] = keys
            self._seen[path] = (values, keys)
        for asset in touched:
            rows.assets[asset] = {
                prefix + path: values[asset] for path, values in by_asset.items() if asset in values
            }
        touched.clear()
        return rows

    def _parts(
        self, changed: set[str] | None = None
    ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """The state as (portfolio-level parts, per-asset dicts), each by its path. Given
        `changed` (the keys of the systems an event reached), the portfolio-level parts of the
        other systems are left out: they are as the last call found them."""
        clock, systems, safety = self._clock, self._systems, self._safety
        parts: dict[str, Any] = {
            "now": clock.now,
            "first": clock.first,
            "trace": clock.trace,
            "regime": systems.regime,
            "volatility": systems.volatility,
            **self._metrics.state(),
            "protections": {},
            "exit_safety": None,
        }
        by_asset: dict[str, dict[str, Any]] = {"positions": self._ledger.state()}
        for protection in systems.all:
            key = protection.key
            split = None if changed is None or key in changed else self._split.get(key)
            if split is None:
                split = _split(f"protections/{key}", protection.state(), protection.per_asset)
                if changed is not None:  # only what rows took counts as written
                    self._split[key] = split
                parts.update(split[0])
            by_asset.update(split[1])
        if safety is not None:
            split = _split("exit_safety", safety.state(), safety.per_asset)
            parts.update(split[0])
            by_asset.update(split[1])
        return parts, by_asset

    def restore(self, state: Mapping[str, Any], handled: datetime | None) -> None:
        """Take back a `state()` saved under the same profile; the clock replays (ignores)
        events dated at or before `handled` (default: the last saved event)."""
        self._seen.clear()  # the next rows give every asset and every system
        self._split.clear()
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


def _split(
    path: str, state: Mapping[str, Any], per_asset: frozenset[str]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """`state` (a system's) under `path`: (its portfolio-level parts, its per-asset dicts)."""
    parts: dict[str, Any] = {path: {}}
    by_asset: dict[str, dict[str, Any]] = {}
    for name, value in state.items():
        if name in per_asset:
            by_asset[f"{path}/{name}"] = value
        else:
            parts[f"{path}/{name}"] = value
    return parts, by_asset


def replay_refusal(when: datetime, resume: datetime) -> str:
    """The reason an order on a bar handled before the restart is denied."""
    return (
        f"Denied: the bar of {when.date().isoformat()} was handled before the restart "
        f"(the state is saved through {resume.date().isoformat()}); an order on it is "
        "never sent twice."
    )
