"""The profile as frozen dataclasses: what `load_profile` returns and a run records."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from datetime import date
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from bt_protection.durations import Duration
from bt_protection.exit_safety import ExitSafetyConfig
from bt_protection.protections.base import (
    REDUCING,
    ConfigError,
    Protection,
    ProtectionConfig,
    registry,
)
from bt_protection.protections.regime_override import RegimeOverrideConfig
from bt_protection.regime_factors import DEFAULT_FACTORS, Factor, check_factors
from bt_protection.regimes import REGIME_LABELS


class Mode(StrEnum):
    ENFORCE = "enforce"
    SHADOW = "shadow"


class OnError(StrEnum):
    DENY = "deny"
    APPROVE = "approve"


@dataclass(frozen=True)
class RegimeConfig:
    """Parameters of `RegimeIndicator` (see docs/regime.md for how the labels are drawn)."""

    data: str | None = None
    fast_period: int = 50
    slow_period: int = 200
    vol_period: int = 20
    vol_high: float = 0.25
    vol_crisis: float = 0.45
    drawdown_period: int = 252
    drawdown_bear: float = 0.10
    drawdown_crisis: float = 0.20
    confirm_bars: int = 8
    factors: tuple[Factor, ...] = DEFAULT_FACTORS

    def validate(self) -> None:
        """Refuse settings the indicator cannot run (`ConfigError` naming the key)."""
        check_factors(self.factors)
        for key, least in (
            ("fast_period", 1),
            ("slow_period", 2),
            ("vol_period", 2),
            ("drawdown_period", 1),
            ("confirm_bars", 1),
        ):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(
                    key, f"{key} must be a whole number of at least {least}, not {value!r}."
                )
        if self.fast_period >= self.slow_period:
            raise ConfigError(
                "fast_period",
                f"fast_period ({self.fast_period}) must be below slow_period ({self.slow_period}).",
            )
        for low, high in (("vol_high", "vol_crisis"), ("drawdown_bear", "drawdown_crisis")):
            low_value, high_value = getattr(self, low), getattr(self, high)
            if low_value <= 0:
                raise ConfigError(low, f"{low} ({low_value:g}) must be above 0.")
            if high_value <= low_value:
                raise ConfigError(
                    high, f"{high} ({high_value:g}) must be above {low} ({low_value:g})."
                )
        if self.drawdown_crisis >= 1:
            raise ConfigError(
                "drawdown_crisis",
                f"drawdown_crisis ({self.drawdown_crisis:g}) must be below 1 (a 100% loss).",
            )


@dataclass(frozen=True)
class AuditConfig:
    path: str | None = None


def _default_protections() -> Mapping[str, ProtectionConfig]:
    return MappingProxyType({key: cls.config_class() for key, cls in registry().items()})


@dataclass(frozen=True)
class Profile:
    """A resolved profile: every registered system has a config (`enabled` says if it runs)."""

    name: str
    description: str = ""
    mode: Mode = Mode.ENFORCE
    on_error: OnError = OnError.DENY
    protections: Mapping[str, ProtectionConfig] = field(default_factory=_default_protections)
    regime: RegimeConfig = field(default_factory=RegimeConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    exit_safety: ExitSafetyConfig | None = None
    source: str | None = field(default=None, compare=False)

    @property
    def enabled_systems(self) -> tuple[str, ...]:
        """Keys of the enabled systems, in priority order."""
        return tuple(k for k in registry() if k in self.protections and self.protections[k].enabled)

    @property
    def regimes(self) -> tuple[str, ...]:
        config = self.protections.get("regime_override")
        return config.regimes if isinstance(config, RegimeOverrideConfig) else REGIME_LABELS

    def durations(self) -> list[Duration]:
        found = [d for k in self.enabled_systems for d in self.protections[k].durations()]
        return found if self.exit_safety is None else found + self.exit_safety.durations()

    @property
    def exit_deniers(self) -> tuple[str, ...]:
        """The enabled systems that can deny an exit (a close, a decrease, or a reversal, which
        keeps the old position when denied); not the regime override, which only lifts denials,
        and none in shadow mode, where nothing is denied."""
        if self.mode is Mode.SHADOW:
            return ()
        systems = registry()
        return tuple(
            key
            for key in self.enabled_systems
            if systems[key].overrides is Protection.overrides
            and systems[key](self.protections[key]).guards & REDUCING
        )

    @property
    def uses_bars(self) -> bool:
        return any(d.uses_bars for d in self.durations())

    def to_dict(self) -> dict[str, Any]:
        """The resolved profile in plain YAML/JSON types (what `profile.yaml` of a run holds)."""
        plain = {
            "name": self.name,
            "description": self.description,
            "mode": self.mode.value,
            "on_error": self.on_error.value,
            "protections": {k: to_plain(v) for k, v in self.protections.items()},
            "regime": to_plain(self.regime),
            "audit": to_plain(self.audit),
        }
        if self.regime.factors == DEFAULT_FACTORS:  # the same hash as before factors existed
            del plain["regime"]["factors"]
        if self.exit_safety is not None:  # absent: the same hash as before the block existed
            plain["exit_safety"] = to_plain(self.exit_safety)
        return plain

    def __reduce__(self) -> tuple[Any, ...]:
        # its mappings are read-only views, which pickle refuses: a profile travels to other
        # processes (optstrategy with maxcpus > 1, compare jobs) as its plain form
        return (_rebuild, (self.to_dict(), self.source))

    @property
    def hash(self) -> str:
        """sha256 of the resolved profile (first 16 hex digits): same settings, same hash."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _rebuild(plain: Mapping[str, Any], source: str | None) -> Profile:
    """The profile `Profile.to_dict` gave (the unpickling side of `Profile.__reduce__`)."""
    from bt_protection.profile.loader import load_profile

    return replace(load_profile(plain), source=source)


def to_plain(value: Any) -> Any:
    """Dataclasses, durations, enums, sets and mappings as plain, sorted YAML/JSON types."""
    if isinstance(value, Duration):
        return value.canonical
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Factor):
        return value.to_plain()
    if is_dataclass(value) and not isinstance(value, type):
        plain = {f.name: to_plain(getattr(value, f.name)) for f in fields(value) if f.init}
        if isinstance(value, ProtectionConfig):  # adaptive keys as the profile wrote them
            plain.update({key: spec.to_plain() for key, spec in value.adaptive.items()})
        return plain
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, Mapping):
        return {
            str(to_plain(k)): to_plain(v)
            for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))
        }
    if isinstance(value, (set, frozenset)):
        return sorted(to_plain(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value
