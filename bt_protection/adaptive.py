"""Profile values that adapt to the market: by regime label, or scaled by realised volatility.

A duration or number key of a protection block may be written as a mapping (docs/profiles.md,
"Adaptive values"); the profile loader turns it into a `ByRegime` or `ByVolatility`, kept in the
block's `adaptive` mapping. At each bar the orchestrator resolves every such value against the
current regime label and volatility ratio (`resolve`), and the protection decides with the
value in force, which its results name (`InForce`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from bt_protection.durations import Duration

Value = Duration | int | float
"""A value an adaptive key resolves to: the type of the field it stands in."""


class Scale(StrEnum):
    """How a volatility-scaled value follows the volatility ratio."""

    VOLATILITY = "volatility"  # longer or larger when the market is more volatile than usual
    INVERSE_VOLATILITY = "inverse_volatility"  # shorter or smaller when it is more volatile


@dataclass(frozen=True)
class InForce:
    """The value of one adaptive key at a bar and where it came from (`"in crisis"`)."""

    key: str
    value: Value
    source: str

    def describe(self) -> str:
        """`"min_hold in crisis: 5 bars"`."""
        return f"{self.key} {self.source}: {_text(self.value)}"


@dataclass(frozen=True)
class ByRegime:
    """A value per regime label; `default` covers the labels not listed."""

    values: Mapping[str, Value]
    default: Value | None = None

    def resolve(self, key: str, regime: str | None, ratio: float | None) -> InForce:
        if regime is not None and regime in self.values:
            return InForce(key, self.values[regime], f"in {regime}")
        if self.default is None:  # the loader requires a default unless every label is listed
            label = next(iter(self.values))
            return InForce(key, self.values[label], f"as in {label} (no regime yet)")
        where = "before the first regime" if regime is None else f"default in {regime}"
        return InForce(key, self.default, where)

    def values_in_use(self) -> list[Value]:
        listed = list(self.values.values())
        return listed if self.default is None else [*listed, self.default]

    def to_plain(self) -> dict[str, str | int | float]:
        plain = {label: _plain(value) for label, value in sorted(self.values.items())}
        return plain if self.default is None else {**plain, "default": _plain(self.default)}


@dataclass(frozen=True)
class ByVolatility:
    """`base` times the volatility ratio (or its inverse), clipped to [`low`, `high`]; durations
    and whole numbers are rounded to the nearest whole unit (halves up), other numbers are not
    rounded."""

    base: Value
    scale: Scale
    low: Value
    high: Value

    def resolve(self, key: str, regime: str | None, ratio: float | None) -> InForce:
        if ratio is None or not ratio > 0.0:
            return InForce(key, self.base, "at its base (no volatility yet)")
        factor = ratio if self.scale is Scale.VOLATILITY else 1.0 / ratio
        scaled = min(max(amount(self.base) * factor, amount(self.low)), amount(self.high))
        value = _withamount(self.base, scaled)
        return InForce(key, value, f"scaled by volatility x{factor:.2f} from {_text(self.base)}")

    def values_in_use(self) -> list[Value]:
        return [self.base, self.low, self.high]

    def to_plain(self) -> dict[str, str | int | float]:
        return {
            "base": _plain(self.base),
            "scale": self.scale.value,
            "min": _plain(self.low),
            "max": _plain(self.high),
        }


Adaptive = ByRegime | ByVolatility
"""An adaptive profile value."""

VOLATILITY_KEYS = ("base", "scale", "min", "max")
"""The keys of a volatility-scaled value (any other mapping is a value by regime)."""


def amount(value: Value) -> float:
    """The number of a value: a duration's whole units."""
    return float(value.amount) if isinstance(value, Duration) else float(value)


def _withamount(like: Value, amount: float) -> Value:
    """`amount` in the type of `like`: whole units for durations and whole numbers."""
    if isinstance(like, float):
        return amount
    whole = math.floor(amount + 0.5)  # halves round up
    return Duration(whole, like.unit) if isinstance(like, Duration) else whole


def _plain(value: Value) -> str | int | float:
    return value.canonical if isinstance(value, Duration) else value


def _text(value: Value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
