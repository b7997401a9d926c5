"""Priority 4: a position is held at least `min_hold` from the fill that opened it.

With `lots: fifo` the shares of each fill that opens or increases a position are a lot held
`min_hold` from that fill; decreases consume the oldest lots first. A close or decrease may sell
the lots already held long enough (denied beyond them, or clipped to them with `partial: true`);
an increase adds a lot and does not restart older ones. A reversal fill starts one new lot of the
new side. Units committed to live orders that reduce the position (the request's current size
below the lots' total) come out of the oldest lots first.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum
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


class LotAccounting(StrEnum):
    FIFO = "fifo"


@dataclass(frozen=True)
class HoldingPeriodConfig(ProtectionConfig):
    min_hold: Duration = Duration.parse("20 bars")
    protect: frozenset[Action] = frozenset({Action.CLOSE, Action.REVERSE})
    lots: LotAccounting | None = None
    partial: bool = False

    def validate(self) -> None:
        check_actions("protect", self.protect, REDUCING, "holding period")


@dataclass(slots=True)
class _Lot:
    size: float  # unsigned units still held from this fill
    filled: ClockPoint


@register
class HoldingPeriod(Protection):
    key = "holding_period"
    status_key = "holding_period"
    priority = 4
    config_class = HoldingPeriodConfig
    config: HoldingPeriodConfig

    per_asset = frozenset({"_opened", "_lots", "_long"})

    def setup(self) -> None:
        self.guards = self.config.protect
        self._opened: dict[str, ClockPoint] = {}
        self._lots: dict[str, deque[_Lot]] = {}
        self._long: dict[str, bool] = {}  # the side the lots are on
        self._no_open = self.constant("No opening fill on record.")
        self.reconfigure()

    def reconfigure(self) -> None:
        self._held = self.constant(f"Held at least {self.config.min_hold}.")

    def check(self, request: ProtectionRequest, now: ClockPoint) -> ProtectionResult:
        asset, min_hold = request.asset, self.config.min_hold
        opened = self._opened.get(asset)
        if opened is None:
            return self._no_open
        if self.config.lots is not None:
            return self._check_lots(request, now)
        progress = min_hold.progress(opened, now)
        if progress >= min_hold.amount:  # elapsed
            return self._held
        return self.deny(
            f"{asset} held {min_hold.describe_progress(opened, now, progress)}; "
            f"{request.action} allowed from {min_hold.ends(opened)}.",  # a StrEnum: its value
            held=progress,
            opened=opened.date,
        )

    def _check_lots(self, request: ProtectionRequest, now: ClockPoint) -> ProtectionResult:
        """Allow selling the units of lots held `min_hold`, oldest first."""
        asset, min_hold = request.asset, self.config.min_hold
        current, target = request.current_size, request.target_size
        lots = self._lots[asset]
        same_side = (current > 0) == self._long[asset]
        if same_side and min_hold.elapsed(lots[-1].filled, now):  # all lots are ripe
            return self._held
        total = sum(lot.size for lot in lots)
        ripe = sum(lot.size for lot in lots if min_hold.elapsed(lot.filled, now))
        committed = total - abs(current) if same_side else total
        eligible = max(0.0, ripe - max(0.0, committed))
        crosses = target == 0 or (target > 0) != (current > 0)
        wanted = abs(current) if crosses else abs(current) - abs(target)
        details = {"eligible": eligible, "held": abs(current)}
        if wanted <= eligible:
            return self.allow(
                f"{asset}: {eligible:g} of {abs(current):g} units held {min_hold}; "
                f"selling {wanted:g} is within them.",
                **details,
            )
        waiting = next((lot for lot in lots if not min_hold.elapsed(lot.filled, now)), None)
        head = (
            f"{asset}: {eligible:g} of {abs(current):g} units held {min_hold} (lots, oldest first)"
        )
        if waiting is not None:
            head += f"; the next lot is free from {min_hold.ends(waiting.filled)}"
        allowed = current - eligible if current > 0 else current + eligible
        return self.limit(
            request, allowed, f"{head}; {request.action.value} may sell {eligible:g}.", **details
        )

    def on_fill(self, asset: str, now: ClockPoint, size_before: float, size_after: float) -> None:
        if size_after == 0:
            self._opened.pop(asset, None)
            self._lots.pop(asset, None)
            return
        flipped = size_before == 0 or (size_before > 0) != (size_after > 0)
        if flipped:
            self._opened[asset] = now
        if self.config.lots is None:
            return
        if flipped:
            self._lots[asset] = deque([_Lot(abs(size_after), now)])
            self._long[asset] = size_after > 0
        elif abs(size_after) > abs(size_before):
            self._lots[asset].append(_Lot(abs(size_after) - abs(size_before), now))
        else:
            self._consume(self._lots[asset], abs(size_before) - abs(size_after))

    @staticmethod
    def _consume(lots: deque[_Lot], units: float) -> None:
        """Take `units` out of the oldest lots first."""
        while units > 0 and lots:
            taken = min(units, lots[0].size)
            lots[0].size -= taken
            units -= taken
            if lots[0].size <= 0:
                lots.popleft()

    def status(self, asset: str, now: ClockPoint) -> dict[str, Any]:
        opened = self._opened.get(asset)
        min_hold = self.config.min_hold
        status: dict[str, Any] = {
            "enabled": True,
            "opened": None if opened is None else opened.date.isoformat(),
            "held": None if opened is None else min_hold.progress(opened, now),
            "min_hold": str(min_hold),
            "can_exit": opened is None or min_hold.elapsed(opened, now),
        }
        if self.config.lots is not None:
            status["lots"] = [
                {"size": lot.size, "filled": lot.filled.date.isoformat()}
                for lot in self._lots.get(asset, ())
            ]
        return status
