"""Reading a key of a system block written as a value by regime or scaled by volatility.

`min_hold: {crisis: "5 bars", default: "20 bars"}` is a `ByRegime`; a mapping with `base` and
`scale` (`{base: "20 bars", scale: volatility, min: "5 bars", max: "60 bars"}`) a
`ByVolatility`. Each value is converted like the plain key (`convert`), so units are checked the
same way; labels are the regime labels; every value must pass the block's own checks
(`check_values`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import replace
from types import MappingProxyType, UnionType
from typing import Any, Union, get_args, get_origin

from bt_protection.adaptive import (
    VOLATILITY_KEYS,
    Adaptive,
    ByRegime,
    ByVolatility,
    Scale,
    Value,
    amount,
)
from bt_protection.durations import Duration
from bt_protection.profile.yaml_reader import KeyPath, Problem
from bt_protection.protections.base import ProtectionConfig
from bt_protection.regimes import REGIME_LABELS

ADAPTABLE = (Duration, int, float)
"""Field types a value by regime or by volatility may stand in for."""

Convert = Callable[[Any, Any, KeyPath], Any]


def adaptable(hint: Any) -> Any | None:
    """The type an adaptive value of a field typed `hint` resolves to, or None if it cannot."""
    if get_origin(hint) in (Union, UnionType):
        inner = [a for a in get_args(hint) if a is not type(None)]
        hint = inner[0] if len(inner) == 1 else None
    return hint if hint in ADAPTABLE else None


def read_adaptive(value: Mapping[Any, Any], hint: Any, path: KeyPath, convert: Convert) -> Adaptive:
    """The `ByVolatility` or `ByRegime` a mapping written for a key of type `hint` means."""
    if "base" in value or "scale" in value:
        return _by_volatility(value, hint, path, convert)
    return _by_regime(value, hint, path, convert)


def _by_regime(value: Mapping[Any, Any], hint: Any, path: KeyPath, convert: Convert) -> ByRegime:
    valid = (*REGIME_LABELS, "default")
    values: dict[str, Value] = {}
    for label, item in value.items():
        if label not in valid:
            close = difflib.get_close_matches(str(label), valid, n=1)
            hint = f"; did you mean {close[0]!r}? Valid" if close else "; valid"
            raise Problem(
                (*path, str(label)),
                f"unknown regime label {label!r}{hint} keys: {', '.join(valid)} (or base, "
                "scale, min and max for a value scaled by volatility).",
            )
        if isinstance(item, Mapping):
            raise Problem(
                (*path, str(label)),
                "a value by regime holds one value per label, not a mapping.",
            )
        values[str(label)] = convert(item, hint, (*path, str(label)))
    units = {v.unit.value for v in values.values() if isinstance(v, Duration)}
    if len(units) > 1:
        raise Problem(
            path,
            f"values by regime mix {' and '.join(sorted(units))}; write every value of one key "
            "in the same unit.",
        )
    default = values.pop("default", None)
    missing = [label for label in REGIME_LABELS if label not in values]
    if missing and default is None:
        raise Problem(
            path,
            f"no value for {', '.join(missing)} and no default; add default: or give every "
            f"label ({', '.join(REGIME_LABELS)}).",
        )
    ordered = {label: values[label] for label in REGIME_LABELS if label in values}
    return ByRegime(MappingProxyType(ordered), default)


def _by_volatility(
    value: Mapping[Any, Any], hint: Any, path: KeyPath, convert: Convert
) -> ByVolatility:
    for key in value:
        if key not in VOLATILITY_KEYS:
            raise Problem(
                (*path, str(key)),
                f"unknown key {key!r} in a value scaled by volatility; its keys are "
                f"{', '.join(VOLATILITY_KEYS)}.",
            )
    absent = [key for key in VOLATILITY_KEYS if key not in value]
    if absent:
        raise Problem(
            path,
            f"a value scaled by volatility needs {', '.join(VOLATILITY_KEYS)}; "
            f"{', '.join(absent)} {'is' if len(absent) == 1 else 'are'} missing.",
        )
    scale = convert(value["scale"], Scale, (*path, "scale"))
    base, low, high = (convert(value[k], hint, (*path, k)) for k in ("base", "min", "max"))
    if isinstance(base, Duration):
        for key, bound in (("min", low), ("max", high)):
            if bound.unit is not base.unit:
                raise Problem(
                    (*path, key),
                    f"{key} ({bound}) is in {bound.unit.value} and base ({base}) in "
                    f"{base.unit.value}; write both in the same unit.",
                )
    if not amount(low) <= amount(base) <= amount(high):
        raise Problem(path, f"min ({low}), base ({base}) and max ({high}) must be in that order.")
    return ByVolatility(base, scale, low, high)


def first_value(spec: Adaptive) -> Value:
    """What the block's field holds: the default, the base, or the calmest label's value."""
    if isinstance(spec, ByVolatility):
        return spec.base
    return spec.default if spec.default is not None else next(iter(spec.values.values()))


def check_values(config: ProtectionConfig, path: KeyPath) -> None:
    """Refuse a config any of whose adaptive values fails the block's own checks, naming the
    label or bound (`ValueError` becomes a `Problem` there)."""
    for key, spec in config.adaptive.items():
        if isinstance(spec, ByRegime):
            named: list[tuple[str, Value]] = list(spec.values.items())
            if spec.default is not None:
                named.append(("default", spec.default))
        else:
            named = [("base", spec.base), ("min", spec.low), ("max", spec.high)]
        for where, value in named:
            try:
                one: dict[str, Any] = {key: value}
                replace(config, **one).validate()
            except ValueError as error:
                message = getattr(error, "message", str(error))
                raise Problem((*path, key, where), message) from None
