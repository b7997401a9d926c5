"""The enabled protection systems and their event hooks: each hook goes only to the systems
that override it, and a failing system is recorded while the run goes on."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bt_protection.adaptive import ByVolatility
from bt_protection.durations import ClockPoint
from bt_protection.models import ProtectionDecision, ProtectionRequest
from bt_protection.orchestration.observers import AuditTrail, Metrics
from bt_protection.orchestration.pipeline import error_text
from bt_protection.profile import Profile
from bt_protection.protections.base import HOOKS, Protection, registry


class Systems:
    """The profile's enabled systems in priority order, built with `positions` (the ledger's
    read-only view) and `trail.emit` as their event sink."""

    def __init__(
        self,
        profile: Profile,
        positions: Mapping[str, float],
        metrics: Metrics,
        trail: AuditTrail,
    ) -> None:
        built = registry()
        self.all: list[Protection] = [
            built[key](profile.protections[key], trail.emit) for key in profile.enabled_systems
        ]
        for protection in self.all:
            protection.positions = positions
        self.by_key = {p.key: p for p in self.all}
        self.hooks = {hook: [p for p in self.all if hook in type(p).hooks()] for hook in HOOKS}
        self.adaptive = [p for p in self.all if p.profile_config.adaptive]
        self.uses_volatility = any(  # asked at every bar: worked out once
            isinstance(spec, ByVolatility)
            for p in self.adaptive
            for spec in p.profile_config.adaptive.values()
        )
        self.regime: str | None = None  # the confirmed label (on_regime)
        self.volatility: float | None = None  # the volatility ratio (on_volatility)
        self._metrics = metrics
        self._trail = trail
        self.tracking = False
        """Whether `touched` and `changed` are kept (from a state file's first save on; a run
        without one pays nothing for them)."""
        self.touched: set[str] = set()
        """The assets an event reached since a state file last took them: their per-asset
        state (`Protection.per_asset`) may have moved."""
        self.changed: set[str] = set()
        """The keys of the systems a hook or a change of the values in force reached since a
        state file last took them: only their state may have moved."""
        self._reached = {hook: {p.key for p in self.hooks[hook]} for hook in HOOKS}
        self._adaptive_keys = {p.key for p in self.adaptive}

    def adapt(self) -> None:
        """Put in force each adaptive system's values for the current regime and volatility."""
        if self.tracking:
            self.changed.update(self._adaptive_keys)
        for protection in self.adaptive:
            protection.adapt(self.regime, self.volatility)

    def fan_out(self, hook: str, now: ClockPoint, asset: str | None, *args: Any) -> None:
        """Run `hook` of every system that has it; a failure is recorded, the run goes on."""
        if self.tracking:
            if asset is not None:
                self.touched.add(asset)
            elif hook == "on_scores":  # (now, scores): each scored asset's state may move
                self.touched.update(args[1])
            self.changed.update(self._reached[hook])
        for protection in self.hooks[hook]:
            try:
                getattr(protection, hook)(*args)
            except Exception as exc:  # noqa: BLE001 - a failing system must not stop the run
                text = error_text(protection, exc)
                self.record_error(now, {"asset": asset, "hook": hook, "error": text})

    def after_decision(
        self, request: ProtectionRequest, decision: ProtectionDecision, now: ClockPoint
    ) -> list[str]:
        """Tell the systems that have the hook about `decision`; the texts of their failures."""
        errors: list[str] = []
        if self.tracking:
            self.touched.add(request.asset)
            self.changed.update(self._reached["after_decision"])
        for protection in self.hooks["after_decision"]:
            try:
                protection.after_decision(request, decision, now)
            except Exception as exc:  # noqa: BLE001 - a failing system must not stop the run
                errors.append(error_text(protection, exc))
        return errors

    def wants_each_bar(self, last: Callable[[], ClockPoint]) -> bool:
        """Whether a system wants the regime label every bar (asked after the events that move
        a window: labels, decisions). A system that fails to answer is recorded at `last()`
        (the clock's last event) and gets it."""
        wanted = False
        for protection in self.hooks["on_regime"]:
            try:
                wanted = wanted or protection.wants_each_bar()
            except Exception as exc:  # noqa: BLE001 - a failing system must not stop the run
                text = error_text(protection, exc)
                self.record_error(last(), {"hook": "wants_each_bar", "error": text})
                wanted = True
        return wanted

    def record_error(self, now: ClockPoint, payload: dict[str, Any]) -> None:
        """Count a failure, keep its text for the metrics and audit it."""
        self._metrics.error(payload["error"])
        self._trail.emit("error", now, payload)
