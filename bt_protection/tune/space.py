"""SPACE.yaml: profile key paths mapped to candidate values, and the candidate profiles.

A space maps a dotted profile key path (`protections.holding_period.min_hold`) to a list of
values or to a range: `{int: [LOW, HIGH], step: N}`, `{float: [LOW, HIGH], num: N}` (N evenly
spaced values, default 5) or a duration range `{bars|days|weeks: [LOW, HIGH], step: N}`. It is
read with the profile reader, so errors name the file, the line and the key path, and an
unknown key path suggests the closest valid one. Format: docs/tune.md.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import numpy as np

from bt_protection.errors import ProfileError
from bt_protection.profile import Profile, RegimeConfig, load_profile
from bt_protection.profile.adaptive_values import adaptable
from bt_protection.profile.yaml_reader import (
    MAPPING_NAME,
    Layer,
    data_lines,
    describe,
    format_error,
    read_layer,
)
from bt_protection.protections.base import registry
from bt_protection.regimes import REGIME_LABELS
from bt_protection.shipped import SPACES, shipped_file

RANGE_KINDS = ("int", "float", "bars", "days", "weeks")
FLOAT_VALUES = 5  # values of a float range without `num`
MAX_GRID = 10_000  # candidates a grid may hold


@dataclass(frozen=True)
class Space:
    """The candidate values of each key path, in file order; `source` names the file."""

    values: Mapping[str, tuple[Any, ...]]
    source: str
    lines: Mapping[str, int | None]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.values)

    @property
    def size(self) -> int:
        """The number of distinct candidates (the grid)."""
        return int(np.prod([len(v) for v in self.values.values()]))

    def grid(self) -> list[dict[str, Any]]:
        """Every combination, the last key varying fastest."""
        return [dict(zip(self.keys, combo, strict=True)) for combo in _product(self)]

    def sample(self, trials: int, seed: int) -> list[dict[str, Any]]:
        """`trials` distinct combinations drawn without replacement (all of them if fewer),
        in grid order; the same `seed` draws the same ones."""
        rng = np.random.default_rng(seed)
        picked = sorted(rng.choice(self.size, size=min(trials, self.size), replace=False))
        sizes = [len(v) for v in self.values.values()]
        combos = []
        for flat in picked:
            index = np.unravel_index(int(flat), sizes)
            combos.append(
                {k: self.values[k][int(i)] for k, i in zip(self.keys, index, strict=True)}
            )
        return combos


def _product(space: Space) -> itertools.product[tuple[Any, ...]]:
    return itertools.product(*space.values.values())


def profile_key_paths() -> tuple[str, ...]:
    """Every profile key path a space may vary: mode, on_error, regime.* and each field of each
    system's block (nested blocks such as `dynamic` included)."""
    paths = ["mode", "on_error", *(f"regime.{f.name}" for f in fields(RegimeConfig))]
    for key, cls in registry().items():
        paths.extend(_field_paths(cls.config_class, f"protections.{key}"))
        hints = get_type_hints(cls.config_class)
        paths.extend(  # one value by regime of a key that may adapt (docs/tune.md)
            f"protections.{key}.{f.name}.{label}"
            for f in fields(cls.config_class)
            if f.init and adaptable(hints[f.name]) is not None
            for label in (*REGIME_LABELS, "default")
        )
    return tuple(paths)


def _field_paths(cls: type, prefix: str) -> list[str]:
    paths = []
    hints = get_type_hints(cls)
    for f in (f for f in fields(cls) if f.init):
        inner = _dataclass_of(hints[f.name])
        paths.append(f"{prefix}.{f.name}")
        if inner is not None:
            paths.extend(_field_paths(inner, f"{prefix}.{f.name}"))
    return paths


def _dataclass_of(hint: Any) -> type | None:
    """The dataclass a field holds (also inside `X | None`), else None."""
    if get_origin(hint) in (Union, UnionType):
        found = [a for a in get_args(hint) if isinstance(a, type) and is_dataclass(a)]
        return found[0] if found else None
    return hint if isinstance(hint, type) and is_dataclass(hint) else None


def load_space(source: str | os.PathLike[str] | Mapping[str, Any]) -> Space:
    """Read and check a space file, a shipped space's name (`example`) or a mapping;
    `ProfileError` naming file, line and key."""
    if isinstance(source, Mapping):
        layer = Layer(MAPPING_NAME, source, data_lines(source, MAPPING_NAME))
    else:
        layer = read_layer(shipped_file(source, SPACES, "space"))
    if not layer.data:
        raise ProfileError(f"{layer.file}: the space is empty; map at least one key path.")
    valid = profile_key_paths()
    values: dict[str, tuple[Any, ...]] = {}
    for key, spec in layer.data.items():
        line = layer.lines.get((str(key),))
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ProfileError(
                format_error(
                    layer.file,
                    line,
                    (),
                    f"{key!r} is not a profile key path{hint} Valid "
                    "paths look like protections.holding_period.min_hold (docs/tune.md).",
                )
            )
        values[str(key)] = _candidates(spec, lambda m, k=str(key), n=line: _fail(layer, n, k, m))
    lines = {str(k): layer.lines.get((str(k),)) for k in layer.data}
    space = Space(values, layer.file, lines)
    if space.size > MAX_GRID:
        raise ProfileError(
            f"{layer.file}: the space holds {space.size:,} candidates, more than "
            f"{MAX_GRID:,}; use fewer values or ranges with a larger step."
        )
    return space


def _fail(layer: Layer, line: int | None, key: str, message: str) -> ProfileError:
    return ProfileError(format_error(layer.file, line, (key,), message))


def _candidates(spec: Any, fail: Any) -> tuple[Any, ...]:
    """The values of one key: a non-empty list, or a range mapping expanded."""
    if isinstance(spec, list):
        if not spec:
            raise fail("the list of candidates is empty; give at least one value.")
        if len({repr(v) for v in spec}) != len(spec):
            raise fail("a candidate value is listed twice; list each value once.")
        return tuple(spec)
    if not isinstance(spec, Mapping):
        raise fail(
            f"expected a list of values or a range such as {{int: [1, 4]}}, not {describe(spec)}."
        )
    kinds = [k for k in spec if k in RANGE_KINDS]
    extra = [k for k in spec if k not in (*RANGE_KINDS, "step", "num")]
    if len(kinds) != 1 or extra:
        raise fail(
            f"a range has one of {', '.join(RANGE_KINDS)} with [LOW, HIGH], and `step` (int "
            f"and durations) or `num` (float); found keys {', '.join(map(str, spec))}."
        )
    kind = kinds[0]
    bounds = spec[kind]
    if (
        not isinstance(bounds, list)
        or len(bounds) != 2
        or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
    ):
        raise fail(f"{kind}: expected [LOW, HIGH] with two numbers, not {describe(bounds)}.")
    low, high = bounds
    if high < low:
        raise fail(f"{kind}: [{low}, {high}] holds no values; LOW must not exceed HIGH.")
    if kind == "float":
        num = spec.get("num", FLOAT_VALUES)
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            raise fail(f"num must be a whole number of values, 1 or more, not {describe(num)}.")
        return tuple(float(round(v, 12)) for v in np.linspace(low, high, num))
    step = spec.get("step", 1)
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise fail(f"step must be a whole number, 1 or more, not {describe(step)}.")
    if not all(isinstance(b, int) for b in bounds):
        raise fail(f"{kind}: [{low}, {high}] must be whole numbers.")
    numbers = range(low, high + 1, step)
    return tuple(numbers) if kind == "int" else tuple(f"{n} {kind}" for n in numbers)


def with_values(base: Profile, values: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The base profile's settings with each key path set to its value, named `name`."""
    settings = copy.deepcopy(base.to_dict())
    settings["name"] = name
    for path, value in values.items():
        *parents, last = path.split(".")
        block = settings
        for part in parents:
            if block.get(part) is None:
                block[part] = {}
            elif not isinstance(block[part], Mapping):  # one value becomes the default of a
                block[part] = {"default": block[part]}  # value by regime (`min_hold.crisis`)
            block = block[part]
        block[last] = value
    return settings


def check_candidates(
    space: Space, base: Profile, candidates: list[dict[str, Any]]
) -> list[Profile]:
    """Each candidate as a validated profile; first each single value against the base, so an
    error names the space file's key, then every combination. Raises `ProfileError`."""
    for key, options in space.values.items():
        for value in options:
            try:
                load_profile(with_values(base, {key: value}, "candidate"))
            except ProfileError as error:
                detail = str(error).split(": ", 2)[-1]
                raise ProfileError(
                    format_error(
                        space.source,
                        space.lines.get(key),
                        (key,),
                        f"candidate {value!r} is not a valid profile value: {detail}",
                    )
                ) from None
    profiles = []
    for i, values in enumerate(candidates):
        try:
            profiles.append(load_profile(with_values(base, values, f"{base.name}-c{i}")))
        except ProfileError as error:
            detail = str(error).split(": ", 2)[-1]
            raise ProfileError(
                f"{space.source}: the candidate {values} is not a valid profile: {detail}"
            ) from None
    return profiles
