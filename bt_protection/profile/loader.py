"""`load_profile`: a YAML file or a mapping to a validated `Profile`.

Each file of the `extends` chain is read into plain data plus the line of every key path
(`yaml_reader`); the layers are deep-merged, child first; the merged data is converted field by
field from the type hints of the dataclasses (`Profile`, `RegimeConfig`, `AuditConfig` and each
system's `config_class`), so a new protection needs no change here. Every error is one
`ProfileError` sentence `file:line: key.path: message`.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType, UnionType
from typing import Any, Union, get_args, get_origin

from bt_protection.adaptive import Adaptive
from bt_protection.config_types import field_types
from bt_protection.durations import Duration
from bt_protection.errors import ProfileError
from bt_protection.profile.adaptive_values import (
    adaptable,
    check_values,
    first_value,
    read_adaptive,
)
from bt_protection.profile.model import Profile
from bt_protection.profile.yaml_reader import (
    MAPPING_NAME,
    KeyPath,
    Layer,
    Problem,
    data_lines,
    describe,
    format_error,
    read_layer,
    read_text,
)
from bt_protection.protections.base import ProtectionConfig, registry
from bt_protection.regime_factors import Factor
from bt_protection.shipped import PROFILES, shipped_file

TOP_LEVEL_KEYS = (
    "name",
    "description",
    "extends",
    "mode",
    "on_error",
    "protections",
    "regime",
    "audit",
    "exit_safety",
)
_OWN_KEYS = ("name", "description", "extends")  # describe one file: never inherited


def load_profile(source: str | os.PathLike[str] | Mapping[str, Any] | Profile) -> Profile:
    """Load and validate a profile from a YAML file, a shipped profile's name (`balanced`; an
    existing path wins, see `bt_protection.shipped`) or a mapping; a `Profile` passes through.

    Raises `ProfileError` (one sentence naming file, key path and line) for any invalid value.
    """
    if isinstance(source, Profile):
        return source
    if isinstance(source, Mapping):
        root = Layer(MAPPING_NAME, source, data_lines(source, MAPPING_NAME))
        return _from_layers(_with_parents(root, ()), "custom", None)
    path = shipped_file(source, PROFILES, "profile")
    try:  # a relative path, and those its extends give, read from the working directory
        key = (os.getcwd(), path)
    except OSError:  # the working directory is gone: load without the cache
        return _from_layers(_with_parents(read_layer(path), ()), Path(path).stem, path)
    loaded = _LOADED.get(key)
    if loaded is not None and _unchanged(loaded[0]):
        return loaded[1]
    layers = _with_parents(read_layer(path), ())
    profile = _from_layers(layers, Path(path).stem, path)
    chain = len(layers) > 1  # where a chain's files lie decides if it may be read (_with_parents)
    files = tuple(
        (layer.file, layer.text, Path(layer.file).resolve() if chain else None) for layer in layers
    )
    _LOADED.pop(key, None)
    _LOADED[key] = (files, profile)
    while len(_LOADED) > _KEEP:  # the oldest first
        del _LOADED[next(iter(_LOADED))]
    return profile


_Files = tuple[tuple[str, str | None, Path | None], ...]
_LOADED: dict[tuple[str, str], tuple[_Files, Profile]] = {}
"""Profiles loaded from files, by (working directory, path as given), with each file of the
`extends` chain as read: its path, its text and, for a chain of several, where it resolved
to. A `Profile` is immutable, so one whose files still read (and resolve) the same is returned
again: `compare` and `tune` load a profile for each run, and parsing and converting one takes
a few milliseconds."""
_KEEP = 64


def _unchanged(files: _Files) -> bool:
    """Whether each file of a chain still reads the same text (and resolves to the same file)."""
    try:
        return all(
            read_text(file) == text and (where is None or Path(file).resolve() == where)
            for file, text, where in files
        )
    except (OSError, ProfileError):  # gone or unreadable: loading again says why
        return False


def _from_layers(layers: list[Layer], name: str, path: str | None) -> Profile:
    """The validated `Profile` of a chain of layers (nearest first)."""
    data = _merge_layers(layers)
    try:
        return _build_profile(data, name, path)
    except Problem as problem:
        file, line = _locate(layers, problem.at)
        raise ProfileError(format_error(file, line, problem.path, problem.message)) from None


def _locate(layers: list[Layer], path: KeyPath) -> tuple[str, int | None]:
    """The file and line that gave `path` (or its closest ancestor); children win over parents."""
    for size in range(len(path), -1, -1):
        for layer in layers:
            if path[:size] in layer.lines:
                return layer.file, layer.lines[path[:size]]
    return layers[0].file, None


# --- extends -------------------------------------------------------------------------------------


def _with_parents(
    layer: Layer, chain: tuple[tuple[Path, str], ...], root: Path | None = None
) -> list[Layer]:
    """`layer` followed by the profiles it extends, nearest first; refuses cycles, missing
    files and files outside `root`. `chain` holds the (resolved path, shown name) of the files
    extending this one; `root` is the folder every file of the chain must lie in (or below):
    the folder of the first file, or the working directory for a mapping."""
    extends = layer.data.get("extends")
    if extends is None:
        return [layer]

    def fail(message: str) -> ProfileError:
        return ProfileError(
            format_error(layer.file, layer.lines.get(("extends",)), ("extends",), message)
        )

    if not isinstance(extends, str) or not extends.strip():
        raise fail(f"expected the name of a profile file, not {describe(extends)}.")
    if root is None:
        root = (Path.cwd() if layer.file == MAPPING_NAME else Path(layer.file).parent).resolve()
    if layer.file != MAPPING_NAME:
        chain = (*chain, (Path(layer.file).resolve(), layer.file))
    folder = "" if layer.file == MAPPING_NAME else os.path.dirname(layer.file)
    target = os.path.normpath(os.path.join(folder, extends))
    if not Path(target).resolve().is_relative_to(root):  # symlinks are followed first
        raise fail(
            f"{target} lies outside {root}; extends may only name files in that folder "
            "or its subfolders."
        )
    if Path(target).resolve() in {resolved for resolved, _ in chain}:
        cycle = " -> ".join([*(shown for _, shown in chain), target])
        raise fail(f"profiles extend each other in a cycle: {cycle}.")
    if not Path(target).is_file():
        raise fail(f"{target} does not exist (extends is relative to the file that names it).")
    return [layer, *_with_parents(read_layer(target), chain, root)]


def _merge_layers(layers: list[Layer]) -> Mapping[Any, Any]:
    """Deep-merge the layers (nearest first): `name`, `description`, `extends` stay with
    their own file."""
    merged: Mapping[Any, Any] = {}
    for parent in reversed(layers[1:]):
        merged = _merge(merged, {k: v for k, v in parent.data.items() if k not in _OWN_KEYS})
    top: Mapping[Any, Any] = _merge(merged, layers[0].data)
    return top


def _merge(base: Any, over: Any) -> Any:
    """Mappings merge key by key (`over` wins); any other value of `over` replaces `base`."""
    if not (isinstance(base, Mapping) and isinstance(over, Mapping)):
        return over
    merged = dict(base)
    for key, value in over.items():
        merged[key] = _merge(base[key], value) if key in base else value
    return merged


# --- conversion from the dataclass field types ----------------------------------------------------


def _build_profile(data: Mapping[Any, Any], default_name: str, source: str | None) -> Profile:
    """The `Profile` of merged top-level data."""
    _check_mapping(data, TOP_LEVEL_KEYS, ())
    hints = field_types(Profile)
    name = _convert(data.get("name", default_name), str, ("name",))
    if not name.strip():
        raise Problem(("name",), "the name is empty; write a short name such as balanced.")
    given = ("description", "mode", "on_error", "regime", "audit", "exit_safety")
    values = {key: _convert(data[key], hints[key], (key,)) for key in given if key in data}
    protections = _build_protections(data.get("protections", {}))
    return Profile(name=name, protections=protections, source=source, **values)


def _build_protections(value: Any) -> Mapping[str, ProtectionConfig]:
    """A config for every registered system: given blocks are on unless `enabled: false`;
    absent or disabled blocks are the class defaults with `enabled=False`."""
    path: KeyPath = ("protections",)
    systems = registry()
    _check_mapping(value, tuple(systems), path, what="system")
    configs: dict[str, ProtectionConfig] = {}
    for key, cls in systems.items():
        off = cls.config_class(enabled=False)
        if key not in value:
            configs[key] = off
            continue
        config = _build_config(cls.config_class, value[key], (*path, key), {"enabled": True})
        configs[key] = config if config.enabled else off
    return MappingProxyType(configs)


def _field_names(cls: type) -> tuple[str, ...]:
    """The keys of a dataclass block, `enabled` last."""
    names = [f.name for f in fields(cls) if f.init]
    return (*(n for n in names if n != "enabled"), *(n for n in names if n == "enabled"))


def _build_config(
    cls: type[Any], value: Any, path: KeyPath, defaults: Mapping[str, Any] | None = None
) -> Any:
    """A dataclass from a mapping, each field converted from its type hint, then `validate()`d
    (a `ConfigError` key is relative to this block)."""
    names = _field_names(cls)
    _check_mapping(value, names, path)
    hints = field_types(cls)
    adaptive = _adaptive_keys(cls, value, hints, path)
    given = {
        key: first_value(adaptive[key])
        if key in adaptive
        else _convert(item, hints[key], (*path, key))
        for key, item in value.items()
    }
    try:
        config = cls(**{**(defaults or {}), **given})
        getattr(config, "validate", lambda: None)()
    except ValueError as error:
        key = getattr(error, "key", "")
        where = (*path, *key.split(".")) if key else path
        raise Problem(where, getattr(error, "message", str(error))) from None
    if adaptive:
        object.__setattr__(config, "adaptive", MappingProxyType(adaptive))
        check_values(config, path)
    return config


def _adaptive_keys(
    cls: type[Any], value: Mapping[Any, Any], hints: Mapping[str, Any], path: KeyPath
) -> dict[str, Adaptive]:
    """The keys of a block written as a value by regime or scaled by volatility (only a
    system block's own keys may be: docs/profiles.md)."""
    found: dict[str, Adaptive] = {}
    for key, item in value.items():
        kind = adaptable(hints[key])
        if kind is None or not isinstance(item, Mapping):
            continue
        if not issubclass(cls, ProtectionConfig):
            raise Problem(
                (*path, key),
                "values by regime or scaled by volatility are read for the keys of a system "
                "block, not inside a nested block such as this one.",
            )
        found[key] = read_adaptive(item, kind, (*path, key), _convert)
    return found


def _check_mapping(value: Any, valid: tuple[str, ...], path: KeyPath, what: str = "key") -> None:
    """`value` is a mapping whose keys are all in `valid` (suggest the closest otherwise)."""
    if not isinstance(value, Mapping):
        raise Problem(
            path, f"expected a mapping ({what}s: {', '.join(valid)}), not {describe(value)}."
        )
    for key in value:
        if key not in valid:
            raise Problem(path, _unknown(what, key, valid, f"valid {what}s"), at=(*path, str(key)))


def _unknown(what: str, value: Any, valid: tuple[str, ...], label: str) -> str:
    """`unknown key 'x'; did you mean 'y'? Valid keys: a, b.`"""
    close = difflib.get_close_matches(str(value), valid, n=1)
    hint = f"; did you mean {close[0]!r}? {label.capitalize()}: " if close else f"; {label}: "
    return f"unknown {what} {value!r}{hint}{', '.join(valid)}."


def _convert(value: Any, hint: Any, path: KeyPath) -> Any:
    """Convert one profile value to the field type `hint`."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, UnionType) and len(args) == 2 and type(None) in args:
        inner = args[0] if args[1] is type(None) else args[1]
        return None if value is None else _convert(value, inner, path)
    if hint in _SCALARS:
        return _SCALARS[hint](value, path)
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        return _to_enum(hint, value, path)
    if hint is Factor:
        return _to_factor(value, path)
    if isinstance(hint, type) and is_dataclass(hint):
        return _build_config(hint, value, path)
    if origin in (frozenset, tuple):
        return origin(_convert(v, args[0], (*path, i)) for i, v in enumerate(_items(value, path)))
    if origin is Mapping:
        return _to_mapping(value, args, path)
    raise TypeError(f"the profile loader cannot read fields of type {hint!r} (at {path}).")


def _to_factor(value: Any, path: KeyPath) -> Factor:
    """An item of `regime.factors`: a name, or a one-key mapping of a name to its parameters."""
    if isinstance(value, Mapping) and len(value) == 1:
        ((name, params),) = value.items()
        if not isinstance(params, Mapping):
            raise Problem(
                path, f"the parameters of factor {name} must be a mapping, not {describe(params)}."
            )
    elif isinstance(value, str):
        name, params = value, {}
    else:
        raise Problem(
            path,
            "a factor is a name or a one-key mapping of a name to its parameters, "
            f"not {describe(value)}.",
        )
    try:
        return Factor.of(str(name), params)
    except ValueError as error:
        key = getattr(error, "key", "")
        raise Problem(
            (*path, str(name), key) if key else path, getattr(error, "message", str(error))
        ) from None


def _items(value: Any, path: KeyPath) -> list[Any]:
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise Problem(path, f"expected a list, not {describe(value)}.")
    return list(value)


def _to_mapping(value: Any, args: tuple[Any, ...], path: KeyPath) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise Problem(path, f"expected a mapping, not {describe(value)}.")
    key_type, value_type = args
    return MappingProxyType(
        {
            _convert(k, key_type, (*path, str(k))): _convert(v, value_type, (*path, str(k)))
            for k, v in value.items()
        }
    )


def _to_enum(enum: type[StrEnum], value: Any, path: KeyPath) -> StrEnum:
    valid = tuple(member.value for member in enum)
    if isinstance(value, str) and value in valid:
        return enum(value)
    raise Problem(path, _unknown("value", value, valid, "valid values"))


def _to_bool(value: Any, path: KeyPath) -> bool:
    if not isinstance(value, bool):
        raise Problem(path, f"expected true or false, not {describe(value)}.")
    return value


def _to_int(value: Any, path: KeyPath) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Problem(path, f"expected a whole number (0 or more), not {describe(value)}.")
    return value


def _to_float(value: Any, path: KeyPath) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Problem(path, f"expected a number, not {describe(value)}.")
    if not math.isfinite(value):
        raise Problem(path, f"expected a finite number, not {value}.")
    return float(value)


def _to_str(value: Any, path: KeyPath) -> str:
    if isinstance(value, str):
        return value
    quote = "; put it in quotes to keep it as text" if isinstance(value, (bool, int, float)) else ""
    raise Problem(path, f"expected text, not {describe(value)}{quote}.")


def _to_date(value: Any, path: KeyPath) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value  # YAML reads an unquoted 2021-04-28 as a date
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise Problem(path, f"expected a date YYYY-MM-DD, not {describe(value)}.")


def _to_duration(value: Any, path: KeyPath) -> Duration:
    try:
        return Duration.parse(value)
    except ValueError as error:
        raise Problem(path, str(error)) from None


_SCALARS: dict[Any, Callable[[Any, KeyPath], Any]] = {
    bool: _to_bool,
    int: _to_int,
    float: _to_float,
    str: _to_str,
    Duration: _to_duration,
    date: _to_date,
}
