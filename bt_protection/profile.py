"""Protection profiles: the YAML files in `configs/`, loaded into frozen dataclasses."""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType, UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from bt_protection.durations import Duration
from bt_protection.errors import ProfileError
from bt_protection.protections.base import ProtectionConfig, registry
from bt_protection.protections.regime_override import DEFAULT_REGIMES, RegimeOverrideConfig


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
    source: str | None = field(default=None, compare=False)

    @property
    def enabled_systems(self) -> tuple[str, ...]:
        """Keys of the enabled systems, in priority order."""
        return tuple(k for k in registry() if k in self.protections and self.protections[k].enabled)

    @property
    def regimes(self) -> tuple[str, ...]:
        config = self.protections.get("regime_override")
        return config.regimes if isinstance(config, RegimeOverrideConfig) else DEFAULT_REGIMES

    def durations(self) -> list[Duration]:
        return [d for k in self.enabled_systems for d in self.protections[k].durations()]

    @property
    def uses_bars(self) -> bool:
        return any(d.uses_bars for d in self.durations())

    def to_dict(self) -> dict[str, Any]:
        """The resolved profile in plain YAML/JSON types (what `profile.yaml` of a run holds)."""
        return {
            "name": self.name,
            "description": self.description,
            "mode": self.mode.value,
            "on_error": self.on_error.value,
            "protections": {k: to_plain(v) for k, v in self.protections.items()},
            "regime": to_plain(self.regime),
            "audit": to_plain(self.audit),
        }

    @property
    def hash(self) -> str:
        """sha256 of the resolved profile (first 16 hex digits): same settings, same hash."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def to_plain(value: Any) -> Any:
    """Dataclasses, durations, enums, sets and mappings as plain, sorted YAML/JSON types."""
    if isinstance(value, Duration):
        return str(value)
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in fields(value)}
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


# --- loading -----------------------------------------------------------------------------------
#
# A profile is read in three steps: each file of the `extends` chain is parsed with PyYAML's
# SafeLoader into plain data plus the line of every key path (`_Layer`); the layers are
# deep-merged, child first; the merged data is converted field by field from the type hints of
# the dataclasses (`Profile`, `RegimeConfig`, `AuditConfig` and each system's `config_class`),
# so a new protection needs no change here. Every error is one `ProfileError` sentence
# `file:line: key.path: message`.

MAX_BYTES = 1_000_000
MAX_DEPTH = 20
MAX_VALUES = 100_000
TOP_LEVEL_KEYS = (
    "name",
    "description",
    "extends",
    "mode",
    "on_error",
    "protections",
    "regime",
    "audit",
)
_OWN_KEYS = ("name", "description", "extends")  # describe one file: never inherited
_MAPPING_NAME = "<mapping>"
_YAML_TAG = "tag:yaml.org,2002:"
_ALLOWED_TAGS = frozenset({"!", f"{_YAML_TAG}str", f"{_YAML_TAG}seq", f"{_YAML_TAG}map"})

KeyPath = tuple[str | int, ...]
Lines = dict[KeyPath, int | None]


@dataclass(frozen=True)
class _Layer:
    """One profile source: its name as shown in errors, its data and the line of each key path."""

    file: str
    data: Mapping[Any, Any]
    lines: Lines


class _Problem(Exception):
    """A value that fails conversion; `at` (default `path`) is where to point the line."""

    def __init__(self, path: KeyPath, message: str, at: KeyPath | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.message = message
        self.at = path if at is None else at


def load_profile(source: str | os.PathLike[str] | Mapping[str, Any] | Profile) -> Profile:
    """Load and validate a profile from a YAML file or a mapping; a `Profile` passes through.

    Raises `ProfileError` (one sentence naming file, key path and line) for any invalid value.
    """
    if isinstance(source, Profile):
        return source
    if isinstance(source, Mapping):
        root = _Layer(_MAPPING_NAME, source, _data_lines(source, _MAPPING_NAME))
        layers, name, path = _with_parents(root, ()), "custom", None
    else:
        path = os.fspath(source)
        layers, name = _with_parents(_read_layer(path), ()), Path(path).stem
    data = _merge_layers(layers)
    try:
        return _build_profile(data, name, path)
    except _Problem as problem:
        file, line = _locate(layers, problem.at)
        raise ProfileError(_format(file, line, problem.path, problem.message)) from None


def _format(file: str, line: int | None, path: KeyPath, message: str) -> str:
    """`file:line: key.path: message`, leaving out what is unknown."""
    where = file if line is None else f"{file}:{line}"
    dotted = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    return f"{where}: {dotted}: {message}" if dotted else f"{where}: {message}"


def _locate(layers: list[_Layer], path: KeyPath) -> tuple[str, int | None]:
    """The file and line that gave `path` (or its closest ancestor); children win over parents."""
    for size in range(len(path), -1, -1):
        for layer in layers:
            if path[:size] in layer.lines:
                return layer.file, layer.lines[path[:size]]
    return layers[0].file, None


# --- reading files ------------------------------------------------------------------------------


def _read_layer(file: str) -> _Layer:
    """Read one YAML profile file; its document must be a mapping."""
    data, lines = _parse_yaml(_read_text(file), file)
    if not isinstance(data, Mapping):
        found = "an empty file" if data is None else _describe(data)
        raise ProfileError(
            f"{file}:{lines.get((), 1)}: a profile is a mapping of keys such as name, mode and "
            f"protections, not {found}."
        )
    return _Layer(file, data, lines)


def _read_text(file: str) -> str:
    """The UTF-8 text of a file of at most MAX_BYTES."""
    path = Path(file)
    try:
        size = path.stat().st_size
        raw = b"" if size > MAX_BYTES else path.read_bytes()
    except FileNotFoundError:
        raise ProfileError(f"{file}: no such file.") from None
    except OSError as error:
        raise ProfileError(f"{file}: the file cannot be read ({error.strerror}).") from None
    if size > MAX_BYTES:
        raise ProfileError(
            f"{file}: the file is {size:,} bytes; a profile may be at most 1 MB "
            f"({MAX_BYTES:,} bytes)."
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ProfileError(f"{file}: the file is not UTF-8 text (byte {error.start}).") from None


def _parse_yaml(text: str, file: str) -> tuple[Any, Lines]:
    """Plain data and key-path lines of one YAML document, read with SafeLoader only."""
    try:
        _check_events(text, file)
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = None if node is None else _construct(loader, node, file)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = "" if mark is None else f":{mark.line + 1}"
        column = "" if mark is None else f" (column {mark.column + 1})"
        problem = ", ".join(p for p in (error.context, error.problem) if p)
        raise ProfileError(f"{file}{line}: invalid YAML: {problem}{column}.") from None
    return data, ({} if node is None else _node_lines(node, file))


def _construct(loader: yaml.SafeLoader, node: yaml.Node, file: str) -> Any:
    """Build the values of a checked node tree (SafeLoader's constructors only)."""
    try:
        return loader.construct_document(node)
    except ValueError as error:  # e.g. an impossible date such as 2020-13-45
        raise ProfileError(f"{file}: invalid YAML: a value cannot be read ({error}).") from None


def _check_events(text: str, file: str) -> None:
    """Refuse non-standard tags, nesting deeper than MAX_DEPTH and duplicate keys, before any
    value is built (the parser is iterative, so a hostile file cannot exhaust the stack)."""
    loader = yaml.SafeLoader(text)
    open_nodes: list[dict[str, Any]] = []  # per open collection: key expected? keys seen
    try:
        while loader.check_event():
            event = loader.get_event()
            line = event.start_mark.line + 1
            if isinstance(event, yaml.CollectionEndEvent):
                open_nodes.pop()
                continue
            if not isinstance(event, yaml.NodeEvent):
                continue
            tag = getattr(event, "tag", None)
            if tag is not None and tag not in _ALLOWED_TAGS:
                raise ProfileError(
                    f"{file}:{line}: the tag {tag.replace(_YAML_TAG, '!!')} is not allowed; a "
                    "profile holds plain values (text, numbers, true/false, lists and mappings)."
                )
            _check_key(open_nodes[-1] if open_nodes else None, event, file, line)
            if isinstance(event, yaml.CollectionStartEvent):
                open_nodes.append(
                    {"mapping": isinstance(event, yaml.MappingStartEvent), "key": True, "seen": {}}
                )
                if len(open_nodes) > MAX_DEPTH:
                    raise ProfileError(
                        f"{file}:{line}: values are nested more than {MAX_DEPTH} levels deep."
                    )
    finally:
        loader.dispose()


def _check_key(parent: dict[str, Any] | None, event: yaml.NodeEvent, file: str, line: int) -> None:
    """Track key/value turns inside a mapping and refuse a key written twice."""
    if parent is None or not parent["mapping"]:
        return
    is_key, parent["key"] = parent["key"], not parent["key"]
    if not is_key or not isinstance(event, yaml.ScalarEvent):
        return
    seen = parent["seen"]
    if event.value in seen:
        raise ProfileError(
            f"{file}:{line}: duplicate key {event.value!r} (first written at line "
            f"{seen[event.value]}); each key may appear once in a mapping."
        )
    seen[event.value] = line


def _node_lines(root: yaml.Node, file: str) -> Lines:
    """The line of every key path of a composed document (a mapping entry: the key's line)."""

    def children(node: yaml.Node) -> list[tuple[str | int, yaml.Node, int | None]]:
        if isinstance(node, yaml.MappingNode):
            return [(str(k.value), v, k.start_mark.line + 1) for k, v in node.value]
        if isinstance(node, yaml.SequenceNode):
            return [(i, v, v.start_mark.line + 1) for i, v in enumerate(node.value)]
        return []

    return _walk(root, children, root.start_mark.line + 1, file)


def _data_lines(data: Mapping[Any, Any], file: str) -> Lines:
    """Every key path of a mapping given in Python (no lines to report)."""

    def children(value: Any) -> list[tuple[str | int, Any, int | None]]:
        if isinstance(value, Mapping):
            return [(str(k), v, None) for k, v in value.items()]
        if isinstance(value, (list, tuple)):
            return [(i, v, None) for i, v in enumerate(value)]
        return []

    return _walk(data, children, None, file)


def _walk(
    root: Any,
    children: Callable[[Any], list[tuple[str | int, Any, int | None]]],
    root_line: int | None,
    file: str,
) -> Lines:
    """Key path -> line for a tree, refusing depth above MAX_DEPTH and more than MAX_VALUES
    values (anchors and aliases can multiply a small file)."""
    lines: Lines = {}
    pending: list[tuple[KeyPath, Any, int | None]] = [((), root, root_line)]
    while pending:
        path, node, line = pending.pop()
        lines[path] = line
        if len(lines) > MAX_VALUES:
            raise ProfileError(
                f"{file}: the profile expands to more than {MAX_VALUES:,} values "
                "(anchors and aliases repeat values)."
            )
        below = children(node)
        if below and len(path) >= MAX_DEPTH:
            raise ProfileError(
                _format(file, line, path, f"values are nested more than {MAX_DEPTH} levels deep.")
            )
        pending.extend((path + (key,), child, at) for key, child, at in reversed(below))
    return lines


# --- extends -------------------------------------------------------------------------------------


def _with_parents(
    layer: _Layer, chain: tuple[tuple[Path, str], ...], root: Path | None = None
) -> list[_Layer]:
    """`layer` followed by the profiles it extends, nearest first; refuses cycles, missing
    files and files outside `root`. `chain` holds the (resolved path, shown name) of the files
    extending this one; `root` is the folder every file of the chain must lie in (or below):
    the folder of the first file, or the working directory for a mapping."""
    extends = layer.data.get("extends")
    if extends is None:
        return [layer]

    def fail(message: str) -> ProfileError:
        return ProfileError(
            _format(layer.file, layer.lines.get(("extends",)), ("extends",), message)
        )

    if not isinstance(extends, str) or not extends.strip():
        raise fail(f"expected the name of a profile file, not {_describe(extends)}.")
    if root is None:
        root = (Path.cwd() if layer.file == _MAPPING_NAME else Path(layer.file).parent).resolve()
    if layer.file != _MAPPING_NAME:
        chain = (*chain, (Path(layer.file).resolve(), layer.file))
    folder = "" if layer.file == _MAPPING_NAME else os.path.dirname(layer.file)
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
    return [layer, *_with_parents(_read_layer(target), chain, root)]


def _merge_layers(layers: list[_Layer]) -> Mapping[Any, Any]:
    """Deep-merge the layers (nearest first): `name`, `description`, `extends` stay with
    their own file."""
    merged: Mapping[Any, Any] = {}
    for parent in reversed(layers[1:]):
        merged = _merge(merged, {k: v for k, v in parent.data.items() if k not in _OWN_KEYS})
    return _merge(merged, layers[0].data)


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
    hints = get_type_hints(Profile)
    name = _convert(data.get("name", default_name), str, ("name",))
    if not name.strip():
        raise _Problem(("name",), "the name is empty; write a short name such as balanced.")
    given = ("description", "mode", "on_error", "regime", "audit")
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
    hints = get_type_hints(cls)
    given = {key: _convert(item, hints[key], (*path, key)) for key, item in value.items()}
    config = cls(**{**(defaults or {}), **given})
    try:
        getattr(config, "validate", lambda: None)()
    except ValueError as error:
        key = getattr(error, "key", "")
        where = (*path, *key.split(".")) if key else path
        raise _Problem(where, getattr(error, "message", str(error))) from None
    return config


def _check_mapping(value: Any, valid: tuple[str, ...], path: KeyPath, what: str = "key") -> None:
    """`value` is a mapping whose keys are all in `valid` (suggest the closest otherwise)."""
    if not isinstance(value, Mapping):
        raise _Problem(
            path, f"expected a mapping ({what}s: {', '.join(valid)}), not {_describe(value)}."
        )
    for key in value:
        if key not in valid:
            raise _Problem(path, _unknown(what, key, valid, f"valid {what}s"), at=(*path, str(key)))


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
    if isinstance(hint, type) and is_dataclass(hint):
        return _build_config(hint, value, path)
    if origin in (frozenset, tuple):
        return origin(_convert(v, args[0], (*path, i)) for i, v in enumerate(_items(value, path)))
    if origin is Mapping:
        return _to_mapping(value, args, path)
    raise TypeError(f"the profile loader cannot read fields of type {hint!r} (at {path}).")


def _items(value: Any, path: KeyPath) -> list[Any]:
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise _Problem(path, f"expected a list, not {_describe(value)}.")
    return list(value)


def _to_mapping(value: Any, args: tuple[Any, ...], path: KeyPath) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise _Problem(path, f"expected a mapping, not {_describe(value)}.")
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
    raise _Problem(path, _unknown("value", value, valid, "valid values"))


def _to_bool(value: Any, path: KeyPath) -> bool:
    if not isinstance(value, bool):
        raise _Problem(path, f"expected true or false, not {_describe(value)}.")
    return value


def _to_int(value: Any, path: KeyPath) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Problem(path, f"expected a whole number (0 or more), not {_describe(value)}.")
    return value


def _to_float(value: Any, path: KeyPath) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Problem(path, f"expected a number, not {_describe(value)}.")
    if not math.isfinite(value):
        raise _Problem(path, f"expected a finite number, not {value}.")
    return float(value)


def _to_str(value: Any, path: KeyPath) -> str:
    if isinstance(value, str):
        return value
    quote = "; put it in quotes to keep it as text" if isinstance(value, (bool, int, float)) else ""
    raise _Problem(path, f"expected text, not {_describe(value)}{quote}.")


def _to_duration(value: Any, path: KeyPath) -> Duration:
    try:
        return Duration.parse(value)
    except ValueError as error:
        raise _Problem(path, str(error)) from None


_SCALARS: dict[Any, Callable[[Any, KeyPath], Any]] = {
    bool: _to_bool,
    int: _to_int,
    float: _to_float,
    str: _to_str,
    Duration: _to_duration,
}


def _describe(value: Any) -> str:
    """A value as the user wrote it: `null`, `a boolean (true)`, `-3`, `text ('x')`, `a list`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"{value}"
    if isinstance(value, str):
        return f"text ({value!r})"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple, set, frozenset)):
        return "a list"
    return f"a {type(value).__name__} ({value})"
