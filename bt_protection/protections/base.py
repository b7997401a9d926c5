"""The small base class every protection system derives from, and the registry of systems.

A protection is one module in this package: a frozen `Config` dataclass (its profile block,
validated by `bt_protection.profile` from the field types) and a `Protection` subclass that
evaluates requests and follows the events of the backtest (fills, regime labels, scores).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, ClassVar

from bt_protection.audit import remember_constant
from bt_protection.durations import ClockPoint, Duration
from bt_protection.models import Action, ProtectionDecision, ProtectionRequest, ProtectionResult

EventSink = Callable[[str, ClockPoint, dict[str, Any]], None]
"""Receives audit events a protection raises: (kind, when, payload)."""


class ConfigError(ValueError):
    """A profile value that is wrong in the context of its block; `key` is relative to it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


@dataclass(frozen=True)
class ProtectionConfig:
    """Parameters every protection block has."""

    enabled: bool = False

    def validate(self) -> None:
        """Cross-field checks; raise `ConfigError` naming the key."""

    def durations(self) -> list[Duration]:
        """Every duration in the block, to learn whether bar indexes are needed."""
        found: list[Duration] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Duration):
                found.append(value)
            elif isinstance(value, ProtectionConfig):
                found.extend(value.durations())
        return found


REDUCING = frozenset({Action.CLOSE, Action.DECREASE, Action.REVERSE})
"""Actions that take exposure away: what core immunity and the holding period can guard."""


def check_actions(
    key: str, actions: frozenset[Action], allowed: frozenset[Action], who: str
) -> None:
    """Refuse actions a system cannot guard, naming them (`ConfigError` on `key`)."""
    extra = sorted(a.value for a in actions - allowed)
    if extra:
        names = [a.value for a in Action if a in allowed]
        can = " and ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else names[0]
        raise ConfigError(key, f"{who} can protect {can}, not {', '.join(extra)}.")


def _ignore_event(kind: str, when: ClockPoint, payload: dict[str, Any]) -> None:
    return None


class Protection:
    """One protection system. Subclasses set the class attributes and override what they use.

    `check` must not change state: `explain` and `get_protection_status` call it freely. State
    moves only through the `on_*` hooks and `after_decision`.
    """

    key: ClassVar[str]
    status_key: ClassVar[str]
    priority: ClassVar[int]
    config_class: ClassVar[type[ProtectionConfig]]
    can_be_overridden: ClassVar[bool] = True
    judges_entries: ClassVar[bool] = False
    """True for entry rules: on a `reverse` they judge its open leg, the others its close leg."""
    guards: frozenset[Action] = frozenset()

    def __init__(self, config: ProtectionConfig, emit: EventSink = _ignore_event) -> None:
        self.config = config
        self.emit = emit
        self.not_guarded = {
            action: self.constant(f"{action.value} is not guarded by {self.key}.")
            for action in Action
        }
        self.setup()

    def setup(self) -> None:
        """Create the system's state from `self.config` (called once by `__init__`)."""

    # --- evaluation -------------------------------------------------------------------------

    def check(self, request: ProtectionRequest, now: ClockPoint) -> ProtectionResult:
        """Evaluate an action in `guards` (others get `not_guarded[action]` without a call).

        Pure: no state changes here.
        """
        raise NotImplementedError

    def allow(self, reason: str, **details: Any) -> ProtectionResult:
        return ProtectionResult(self.key, self.priority, True, reason, MappingProxyType(details))

    def constant(self, reason: str, **details: Any) -> ProtectionResult:
        """An allowing result made once and reused; its JSON is cached for the audit."""
        result = self.allow(reason, **details)
        remember_constant(self, result)
        return result

    def deny(self, reason: str, **details: Any) -> ProtectionResult:
        return ProtectionResult(self.key, self.priority, False, reason, MappingProxyType(details))

    def overrides(self, now: ClockPoint) -> frozenset[str]:
        """Systems whose denials do not block at `now` (only regime override lifts any)."""
        return frozenset()

    def status(self, asset: str, now: ClockPoint) -> dict[str, Any]:
        """This system's view of `asset` at `now`, in plain types."""
        return {"enabled": True}

    # --- events -----------------------------------------------------------------------------

    def on_fill(self, asset: str, now: ClockPoint, size_before: float, size_after: float) -> None:
        """An execution changed the position of `asset`."""

    def on_regime(self, now: ClockPoint, regime: str) -> None:
        """The regime label of the current bar."""

    def on_scores(self, now: ClockPoint, scores: Mapping[str, float]) -> None:
        """A score report (usually once per rebalance)."""

    def after_decision(
        self, request: ProtectionRequest, decision: ProtectionDecision, now: ClockPoint
    ) -> None:
        """The orchestrator decided `request`."""

    @classmethod
    def hooks(cls) -> frozenset[str]:
        """Names of the event hooks this class overrides, so no-op hooks are never called."""
        names = ("on_fill", "on_regime", "on_scores", "after_decision")
        return frozenset(n for n in names if getattr(cls, n) is not getattr(Protection, n))


_REGISTRY: dict[str, type[Protection]] = {}
_DISCOVERED = False


def register(cls: type[Protection]) -> type[Protection]:
    """Class decorator: make a protection known to profiles and the orchestrator."""
    for other in _REGISTRY.values():
        if other is not cls and (other.key == cls.key or other.priority == cls.priority):
            raise RuntimeError(
                f"{cls.__name__} clashes with {other.__name__}: system keys and priorities "
                "must be unique."
            )
    _REGISTRY[cls.key] = cls
    return cls


def registry() -> dict[str, type[Protection]]:
    """Every protection system, by key, in priority order (modules of this package load once)."""
    global _DISCOVERED
    if not _DISCOVERED:
        package = importlib.import_module("bt_protection.protections")
        for module in sorted(m.name for m in pkgutil.iter_modules(package.__path__)):
            if module != "base":
                importlib.import_module(f"bt_protection.protections.{module}")
        _DISCOVERED = True
    return dict(sorted(_REGISTRY.items(), key=lambda item: item[1].priority))
