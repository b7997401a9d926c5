"""Priority 5: no re-entry into an asset traded in and out too often or exited too recently.

A round trip ends at the fill that takes a position to zero (or reverses it). An open is denied
when `max_cycles` or more round trips ended within the trailing `window`, or when less than
`min_reentry` has passed since the last exit. The open leg of a reverse is judged like an open
on the round trips completed so far: its own close leg has not happened yet.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from bt_protection.durations import ClockPoint, Duration
from bt_protection.models import Action, ProtectionRequest, ProtectionResult
from bt_protection.protections.base import ConfigError, Protection, ProtectionConfig, register


@dataclass(frozen=True)
class WhipsawConfig(ProtectionConfig):
    max_cycles: int = 2
    window: Duration = Duration.parse("60 days")
    min_reentry: Duration = Duration.parse("10 bars")

    def validate(self) -> None:
        if self.max_cycles < 1:
            raise ConfigError(
                "max_cycles", f"max_cycles must be at least 1, not {self.max_cycles}."
            )


@register
class WhipsawProtection(Protection):
    key = "whipsaw_protection"
    status_key = "whipsaw_protection"
    priority = 5
    config_class = WhipsawConfig
    judges_entries = True
    config: WhipsawConfig

    per_asset = frozenset({"_exits", "_last_exit"})

    def setup(self) -> None:
        self.guards = frozenset({Action.OPEN, Action.REVERSE})
        self._exits: dict[str, deque[ClockPoint]] = {}
        self._last_exit: dict[str, ClockPoint] = {}
        self.reconfigure()

    def reconfigure(self) -> None:
        config = self.config
        self._allowed = [  # by the number of round trips in the window, which is below max_cycles
            self.constant(
                f"{n} round trips within {config.window} (max {config.max_cycles}).", cycles=n
            )
            for n in range(config.max_cycles)
        ]

    def _in_window(self, asset: str, now: ClockPoint) -> list[ClockPoint]:
        """Exits of `asset` inside the trailing window at `now`, oldest first (read only)."""
        exits = self._exits.get(asset)
        if not exits:
            return []
        window = self.config.window
        inside: list[ClockPoint] = []
        for point in reversed(exits):
            if window.elapsed(point, now):
                break
            inside.append(point)
        inside.reverse()
        return inside

    def check(self, request: ProtectionRequest, now: ClockPoint) -> ProtectionResult:
        config, asset = self.config, request.asset
        exits = self._in_window(asset, now)
        cycles = len(exits)
        if cycles >= config.max_cycles:
            # entry is allowed once enough exits have left the window to go below max_cycles
            until = config.window.ends(exits[cycles - config.max_cycles])
            return self.deny(
                f"{asset} made {cycles} round trips within {config.window} "
                f"(max {config.max_cycles}); entry allowed from {until}.",
                cycles=cycles,
            )
        last = self._last_exit.get(asset)
        reentry = config.min_reentry
        progress = 0 if last is None else reentry.progress(last, now)
        if last is not None and progress < reentry.amount:  # not elapsed
            return self.deny(
                f"{asset} was exited {reentry.describe_progress(last, now, progress)}; "
                f"re-entry allowed from {reentry.ends(last)}.",
                cycles=cycles,
                last_exit=last.date,
            )
        return self._allowed[cycles]

    def on_fill(self, asset: str, now: ClockPoint, size_before: float, size_after: float) -> None:
        if size_before != 0 and (size_after == 0 or (size_before > 0) != (size_after > 0)):
            exits = self._exits.setdefault(asset, deque())
            while exits and self.widest("window").elapsed(exits[0], now):
                exits.popleft()
            exits.append(now)
            self._last_exit[asset] = now

    def status(self, asset: str, now: ClockPoint) -> dict[str, Any]:
        exits = self._in_window(asset, now)
        config = self.config
        last = self._last_exit.get(asset)
        return {
            "enabled": True,
            "round_trips_in_window": len(exits),
            "max_cycles": config.max_cycles,
            "last_exit": None if last is None else last.date.isoformat(),
            "can_enter": self.check(
                ProtectionRequest(asset, now.date, 0.0, 1.0, bar=now.bar), now
            ).allowed,
        }
