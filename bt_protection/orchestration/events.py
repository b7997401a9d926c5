"""The events that move state: each is checked, moves the clock (or is ignored when a restart
already handled its bar), and reaches the ledger, exit safety and the systems that hook it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from bt_protection.exit_safety import ExitSafety
from bt_protection.orchestration.clock import Clock
from bt_protection.orchestration.ledger import PositionLedger
from bt_protection.orchestration.observers import AuditTrail
from bt_protection.orchestration.systems import Systems
from bt_protection.profile import Profile


class EventRouter:
    """Hands each event to the parts that follow it."""

    def __init__(
        self,
        profile: Profile,
        clock: Clock,
        ledger: PositionLedger,
        systems: Systems,
        safety: ExitSafety | None,
        trail: AuditTrail,
    ) -> None:
        self._profile = profile
        self._clock = clock
        self._ledger = ledger
        self._systems = systems
        self._safety = safety
        self._trail = trail
        self.uses_portfolio = bool(systems.hooks["on_portfolio"]) or (
            safety is not None and safety.needs_portfolio
        )

    def fill(
        self,
        asset: str,
        date: Any,
        size_before: float,
        size_after: float,
        bar: int | None,
        price: float | None,
    ) -> None:
        before, after = self._ledger.check_fill(asset, size_before, size_after)
        if self._clock.replaying(date):
            return
        now = self._clock.advance(date, bar)
        self._ledger.book(asset, after)
        if self._safety is not None:
            self._safety.on_fill(asset, before, after, price)
        self._systems.fan_out("on_fill", now, asset, asset, now, before, after)
        if price is not None:
            self._systems.fan_out("on_trade", now, asset, asset, now, abs(after - before), price)
        self._trail.emit("fill", now, {"asset": asset, "size_before": before, "size_after": after})

    def regime(self, date: Any, regime: str, bar: int | None) -> bool:
        """Take the label; False when its bar was handled before a restart."""
        regimes = self._profile.regimes
        if regime not in regimes:
            raise ValueError(
                f"unknown regime {regime!r}; profile {self._profile.name!r} knows "
                f"{', '.join(regimes)}."
            )
        if self._clock.replaying(date):
            return False
        now = self._clock.advance(date, bar)
        systems = self._systems
        if regime != systems.regime:
            if systems.regime is not None:
                self._trail.emit("regime_change", now, {"from": systems.regime, "to": regime})
            systems.regime = regime
        systems.adapt()
        systems.fan_out("on_regime", now, None, now, regime)
        return True

    def volatility(self, date: Any, ratio: float | None, bar: int | None) -> None:
        if ratio is not None and not (math.isfinite(ratio) and ratio >= 0):
            raise ValueError(f"volatility ratio must be a finite number >= 0, not {ratio!r}.")
        self._clock.advance(date, bar)
        self._systems.volatility = ratio
        self._systems.adapt()

    def portfolio(self, date: Any, value: float, bar: int | None) -> None:
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"portfolio value must be a finite number, not {value!r}.")
        if self.uses_portfolio and not self._clock.replaying(date):
            now = self._clock.advance(date, bar)
            self._systems.fan_out("on_portfolio", now, None, now, number)
            if self._safety is not None:
                self._safety.on_portfolio(now, number)

    def scores(self, date: Any, scores: Mapping[str, float], bar: int | None) -> None:
        clean: dict[str, float] = {}
        for asset, score in scores.items():
            clean[str(asset)] = number = float(score)
            if not math.isfinite(number):
                raise ValueError(f"score of {asset} must be a finite number, not {score!r}.")
        clock = self._clock
        if clock.replaying(date):
            return
        trace = clock.trace
        now = clock.advance(date, bar)
        if clock.trace == trace or clock.trace_each_bar:  # the bar itself started one
            clock.new_trace()
        self._trail.emit("scores", now, {"scores": dict(sorted(clean.items()))})
        self._systems.fan_out("on_scores", now, None, now, clean)

    def reconcile(self, asset: str, size: float, date: Any, bar: int | None) -> bool:
        saved = self._ledger.get(asset)
        if math.isclose(saved, size, rel_tol=1e-9, abs_tol=1e-9):
            return False
        if self._clock.replaying(date):
            raise ValueError(f"reconcile {asset} after the handled bars, not on {date}.")
        now = self._clock.advance(date, bar)
        self._trail.emit("state_reconciled", now, {"asset": asset, "saved": saved, "broker": size})
        self.fill(asset, date, saved, size, bar, None)
        return True
