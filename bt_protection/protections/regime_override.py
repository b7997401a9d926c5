"""Priority 2: after a regime change, lift the denials of chosen systems for a window of time.

It blocks nothing itself. A change of regime has a severity (from the distance between the two
labels in `regimes`, or the `severity` table); a severity listed in `can_override` opens a
window during which denials by the listed systems do not block. Windows open at most once per
`cooldown`; a change inside the cooldown is recorded as a suppressed override.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from bt_protection.durations import ClockPoint, Duration
from bt_protection.models import Action, ProtectionRequest, ProtectionResult, Severity
from bt_protection.protections.base import (
    ConfigError,
    Protection,
    ProtectionConfig,
    register,
    registry,
)

DEFAULT_REGIMES: tuple[str, ...] = ("bull", "neutral", "bear", "crisis")


def default_severity(steps: int) -> Severity:
    """Severity of a move of `steps` positions along the regimes list (positive = toward stress)."""
    if steps <= 0:
        return Severity.LOW
    if steps == 1:
        return Severity.MEDIUM
    if steps == 2:
        return Severity.HIGH
    return Severity.CRITICAL


@dataclass(frozen=True)
class RegimeOverrideConfig(ProtectionConfig):
    regimes: tuple[str, ...] = DEFAULT_REGIMES
    severity: Mapping[str, Severity] = field(default_factory=lambda: MappingProxyType({}))
    window: Duration = Duration.parse("5 bars")
    cooldown: Duration = Duration.parse("40 bars")
    can_override: Mapping[Severity, frozenset[str]] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def validate(self) -> None:
        if len(self.regimes) < 2:
            raise ConfigError("regimes", "regimes must list at least two labels, calm to stressed.")
        if len(set(self.regimes)) != len(self.regimes):
            raise ConfigError("regimes", f"regimes has repeated labels: {list(self.regimes)}.")
        known = ", ".join(self.regimes)
        for transition in self.severity:
            parts = transition.split("->")
            if len(parts) != 2 or parts[0].strip() == parts[1].strip():
                raise ConfigError(
                    f"severity.{transition}",
                    f'{transition!r} is not a transition; write "from->to", e.g. "bull->bear".',
                )
            for label in (p.strip() for p in parts):
                if label not in self.regimes:
                    raise ConfigError(
                        f"severity.{transition}",
                        f"unknown regime {label!r} in {transition!r}; regimes are {known}.",
                    )
        systems = registry()
        liftable = [k for k, cls in systems.items() if cls.can_be_overridden and k != self_key()]
        for severity, names in self.can_override.items():
            for name in sorted(names):
                if name not in systems or name == self_key():
                    raise ConfigError(
                        f"can_override.{severity.value}",
                        f"unknown system {name!r}; a window can lift {', '.join(liftable)}.",
                    )
                if not systems[name].can_be_overridden:
                    raise ConfigError(
                        f"can_override.{severity.value}",
                        f"{name} is never bypassed by a regime override; "
                        f"a window can lift {', '.join(liftable)}.",
                    )

    def severity_of(self, before: str, after: str) -> Severity:
        for transition, severity in self.severity.items():
            source, target = (p.strip() for p in transition.split("->"))
            if (source, target) == (before, after):
                return severity
        return default_severity(self.regimes.index(after) - self.regimes.index(before))


def self_key() -> str:
    return RegimeOverride.key


@dataclass(frozen=True, slots=True)
class _Window:
    start: ClockPoint
    severity: Severity
    transition: str
    systems: frozenset[str]


@register
class RegimeOverride(Protection):
    key = "regime_override"
    status_key = "regime_override"
    priority = 2
    config_class = RegimeOverrideConfig
    config: RegimeOverrideConfig

    def setup(self) -> None:
        self.guards = frozenset(Action)
        self._regime: str | None = None
        self._window: _Window | None = None
        self._last_opened: ClockPoint | None = None
        self._idle = self.constant("No regime override window is open.")
        self._open_result = self._idle

    def _active(self, now: ClockPoint) -> _Window | None:
        window = self._window
        if window is None or self.config.window.elapsed(window.start, now):
            return None
        return window

    def check(self, request: ProtectionRequest, now: ClockPoint) -> ProtectionResult:
        return self._idle if self._active(now) is None else self._open_result

    def overrides(self, now: ClockPoint) -> frozenset[str]:
        window = self._active(now)
        return frozenset() if window is None else window.systems

    def on_regime(self, now: ClockPoint, regime: str) -> None:
        config = self.config
        if self._window is not None and self._active(now) is None:
            self.emit("override_window_closed", now, self._describe(self._window))
            self._window = None
        before, self._regime = self._regime, regime
        if before is None or before == regime:
            return
        severity = config.severity_of(before, regime)
        transition = f"{before}->{regime}"
        systems = config.can_override.get(severity)
        if systems is None:
            return
        if self._last_opened is not None and not config.cooldown.elapsed(self._last_opened, now):
            self.emit(
                "override_suppressed",
                now,
                {
                    "transition": transition,
                    "severity": severity.value,
                    "reason": (
                        f"{severity.value} change {transition} inside the cooldown: "
                        f"{config.cooldown.describe_progress(self._last_opened, now)}."
                    ),
                },
            )
            return
        self._window = _Window(now, severity, transition, frozenset(systems))
        self._last_opened = now
        lifted = ", ".join(sorted(systems)) or "nothing"
        self._open_result = self.allow(
            f"Override window for the {severity.value} change {transition} opened "
            f"{now.describe()} for {config.window}; it lifts {lifted}.",
            severity=severity.value,
            transition=transition,
            lifts=sorted(systems),
        )
        self.emit("override_window_opened", now, self._describe(self._window))

    def _describe(self, window: _Window) -> dict[str, Any]:
        return {
            "transition": window.transition,
            "severity": window.severity.value,
            "lifts": sorted(window.systems),
            "opened": window.start.date.isoformat(),
            "until": self.config.window.ends(window.start),
        }

    def status(self, asset: str, now: ClockPoint) -> dict[str, Any]:
        window = self._active(now)
        status: dict[str, Any] = {"enabled": True, "regime": self._regime, "window_open": False}
        if window is not None:
            status.update(self._describe(window), window_open=True)
        if self._last_opened is not None:
            status["cooldown_until"] = self.config.cooldown.ends(self._last_opened)
        return status
