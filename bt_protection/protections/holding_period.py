"""Priority 4: a position is held at least `min_hold` from the fill that opened it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bt_protection.durations import ClockPoint, Duration
from bt_protection.models import Action, ProtectionRequest, ProtectionResult
from bt_protection.protections.base import (
    REDUCING,
    Protection,
    ProtectionConfig,
    check_actions,
    register,
)


@dataclass(frozen=True)
class HoldingPeriodConfig(ProtectionConfig):
    min_hold: Duration = Duration.parse("20 bars")
    protect: frozenset[Action] = frozenset({Action.CLOSE, Action.REVERSE})

    def validate(self) -> None:
        check_actions("protect", self.protect, REDUCING, "holding period")


@register
class HoldingPeriod(Protection):
    key = "holding_period"
    status_key = "holding_period"
    priority = 4
    config_class = HoldingPeriodConfig
    config: HoldingPeriodConfig

    def setup(self) -> None:
        self.guards = self.config.protect
        self._opened: dict[str, ClockPoint] = {}
        self._no_open = self.constant("No opening fill on record.")
        self._held = self.constant(f"Held at least {self.config.min_hold}.")

    def check(self, request: ProtectionRequest, now: ClockPoint) -> ProtectionResult:
        asset, min_hold = request.asset, self.config.min_hold
        opened = self._opened.get(asset)
        if opened is None:
            return self._no_open
        if min_hold.elapsed(opened, now):
            return self._held
        progress = min_hold.progress(opened, now)
        return self.deny(
            f"{asset} held {min_hold.describe_progress(opened, now)}; "
            f"{request.action.value} allowed from {min_hold.ends(opened)}.",
            held=progress,
            opened=opened.date,
        )

    def on_fill(self, asset: str, now: ClockPoint, size_before: float, size_after: float) -> None:
        if size_after == 0:
            self._opened.pop(asset, None)
        elif size_before == 0 or (size_before > 0) != (size_after > 0):
            self._opened[asset] = now

    def status(self, asset: str, now: ClockPoint) -> dict[str, Any]:
        opened = self._opened.get(asset)
        min_hold = self.config.min_hold
        return {
            "enabled": True,
            "opened": None if opened is None else opened.date.isoformat(),
            "held": None if opened is None else min_hold.progress(opened, now),
            "min_hold": str(min_hold),
            "can_exit": opened is None or min_hold.elapsed(opened, now),
        }
