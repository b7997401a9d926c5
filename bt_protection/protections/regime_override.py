"""Priority 2: after a regime change, lift the denials of chosen systems for a window.

It blocks nothing itself. A change of regime has a severity: by default from the regime it
enters and how far it lies from the regime the market left when it last turned toward stress
(`default_severity`), else from the `severity` table (`"bull->bear"` or `"*->crisis"`). A
severity listed in `can_override` opens a window, `window` long in bars, days or decisions,
during which denials by the listed systems do not block. Windows open at most once per
`cooldown`; a change inside the cooldown is recorded as a suppressed override.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

from bt_protection.durations import ClockPoint, Duration
from bt_protection.models import (
    Action,
    ProtectionDecision,
    ProtectionRequest,
    ProtectionResult,
    Severity,
)
from bt_protection.protections.base import (
    ConfigError,
    Protection,
    ProtectionConfig,
    register,
    registry,
)
from bt_protection.regimes import REGIME_LABELS

ANY = "*"  # the wildcard source of a severity entry: "*->crisis"


def default_severity(regimes: tuple[str, ...], anchor: str, before: str, after: str) -> Severity:
    """The severity of the change `before -> after` when the climb toward stress started from
    `anchor` (the regime the market left when it last turned toward stress).

    Any move toward calm is low. Entering the most stressed regime is critical; otherwise the
    distance from `anchor` to `after` along `regimes` decides: 1 medium, 2 high, 3 or more
    critical. So bull->neutral is medium, then neutral->bear high (bear, two steps from bull).
    """
    index = regimes.index
    if index(after) <= index(before):
        return Severity.LOW
    if index(after) == len(regimes) - 1:
        return Severity.CRITICAL
    return (Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL)[
        min(index(after) - index(anchor), 3) - 1
    ]


@dataclass(frozen=True)
class RegimeOverrideConfig(ProtectionConfig):
    regimes: tuple[str, ...] = REGIME_LABELS
    severity: Mapping[str, Severity] = field(default_factory=lambda: MappingProxyType({}))
    window: Duration = Duration.parse("5 bars")
    cooldown: Duration = Duration.parse("40 bars")
    can_override: Mapping[Severity, frozenset[str]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    decision_fields: ClassVar[frozenset[str]] = frozenset({"window"})

    def validate(self) -> None:
        if self.regimes != REGIME_LABELS:
            raise ConfigError(
                "regimes",
                f"regimes must be [{', '.join(REGIME_LABELS)}], the labels RegimeIndicator "
                f"gives from calm to stressed, not [{', '.join(self.regimes)}].",
            )
        known = ", ".join(self.regimes)
        for transition in self.severity:
            parts = [p.strip() for p in transition.split("->")]
            if len(parts) != 2 or parts[0] == parts[1] or parts[1] == ANY:
                raise ConfigError(
                    f"severity.{transition}",
                    f'{transition!r} is not a transition; write "from->to", e.g. "bull->bear", '
                    'or "*->to" for every change into a regime, e.g. "*->crisis".',
                )
            for label in parts:
                if label not in self.regimes and label != ANY:
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

    def severity_of(self, anchor: str, before: str, after: str) -> Severity:
        """The `severity` entry for `before->after`, else for `*->after`, else the default."""
        table = {
            tuple(p.strip() for p in transition.split("->")): severity
            for transition, severity in self.severity.items()
        }
        found = table.get((before, after), table.get((ANY, after)))
        return found or default_severity(self.regimes, anchor, before, after)


def self_key() -> str:
    return RegimeOverride.key


@dataclass(slots=True)
class _Window:
    """An open window; with a window in decisions, `decisions` counts those made inside it and
    `last` is the moment of the one that used it up (the rest of that bar stays inside)."""

    start: ClockPoint
    severity: Severity
    transition: str
    systems: frozenset[str]
    decisions: int = 0
    last: ClockPoint | None = None


_NONE: frozenset[str] = frozenset()


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
        self._anchor: str | None = None  # the regime the current climb to stress left
        self._window: _Window | None = None
        self._last_opened: ClockPoint | None = None
        self._idle = self.constant("No regime override window is open.")
        self._open_result = self._idle

    def _active(self, now: ClockPoint) -> _Window | None:
        window, length = self._window, self.config.window
        if window is None:
            return None
        if length.counts_decisions:
            used_up = window.decisions >= length.amount and window.last != now
            return None if used_up or length.amount == 0 else window
        return None if length.elapsed(window.start, now) else window

    def check(self, request: ProtectionRequest, now: ClockPoint) -> ProtectionResult:
        if self._window is None:  # most decisions: no window (no call to learn it)
            return self._idle
        return self._idle if self._active(now) is None else self._open_result

    def overrides(self, now: ClockPoint) -> frozenset[str]:
        window = None if self._window is None else self._active(now)
        return _NONE if window is None else window.systems

    def after_decision(
        self, request: ProtectionRequest, decision: ProtectionDecision, now: ClockPoint
    ) -> None:
        window = self._window
        if window is None or request.exempt or not self.config.window.counts_decisions:
            return
        if self._active(now) is not None and window.decisions < self.config.window.amount:
            window.decisions += 1
            if window.decisions == self.config.window.amount:
                window.last = now

    def wants_each_bar(self) -> bool:
        window, length = self._window, self.config.window
        if window is None:
            return False
        # a window counted in decisions closes only at the bar after the one that used it up
        return not length.counts_decisions or window.decisions >= length.amount

    def on_regime(self, now: ClockPoint, regime: str) -> None:
        config = self.config
        if self._window is not None and self._active(now) is None:
            self.emit("override_window_closed", now, self._describe(self._window))
            self._window = None
        before, self._regime = self._regime, regime
        if before is None or before == regime:
            return
        if config.regimes.index(regime) > config.regimes.index(before):
            self._anchor = self._anchor or before  # a climb toward stress starts or goes on
        else:
            self._anchor = None
        anchor = self._anchor or before
        severity = config.severity_of(anchor, before, regime)
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
        described: dict[str, Any] = {
            "transition": window.transition,
            "severity": window.severity.value,
            "lifts": sorted(window.systems),
            "opened": window.start.date.isoformat(),
            "until": self.config.window.ends(window.start),
        }
        if self.config.window.counts_decisions:
            described["decisions"] = window.decisions
        return described

    def status(self, asset: str, now: ClockPoint) -> dict[str, Any]:
        window = self._active(now)
        status: dict[str, Any] = {"enabled": True, "regime": self._regime, "window_open": False}
        if window is not None:
            status.update(self._describe(window), window_open=True)
        if self._last_opened is not None:
            status["cooldown_until"] = self.config.cooldown.ends(self._last_opened)
        return status
