"""Reading profile YAML safely: plain values plus the line of every key path.

Only a safe loader builds values (libyaml's `CSafeLoader` when PyYAML has it, else
`SafeLoader`: the same safe constructors), after a first pass over the parser events has
refused explicit tags (but `!!str`, `!!seq`, `!!map`), duplicate keys and nesting deeper than
`MAX_DEPTH`. Files are at most `MAX_BYTES`; aliases may not expand a document past `MAX_VALUES`
values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bt_protection.errors import ProfileError

_FAST_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_BYTES = 1_000_000
MAX_DEPTH = 20
MAX_VALUES = 100_000
MAPPING_NAME = "<mapping>"
_YAML_TAG = "tag:yaml.org,2002:"
_ALLOWED_TAGS = frozenset({"!", f"{_YAML_TAG}str", f"{_YAML_TAG}seq", f"{_YAML_TAG}map"})

KeyPath = tuple[str | int, ...]
Lines = dict[KeyPath, int | None]


class Problem(Exception):
    """A value that fails conversion; `at` (default `path`) is where to point the line."""

    def __init__(self, path: KeyPath, message: str, at: KeyPath | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.message = message
        self.at = path if at is None else at


@dataclass(frozen=True)
class Layer:
    """One profile source: its name as shown in errors, its data and the line of each key path."""

    file: str
    data: Mapping[Any, Any]
    lines: Lines
    text: str | None = None  # the file's text (None: not read from a file)


def format_error(file: str, line: int | None, path: KeyPath, message: str) -> str:
    """`file:line: key.path: message`, leaving out what is unknown."""
    where = file if line is None else f"{file}:{line}"
    dotted = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    return f"{where}: {dotted}: {message}" if dotted else f"{where}: {message}"


# --- reading files ------------------------------------------------------------------------------


def read_layer(file: str) -> Layer:
    """Read one YAML profile file; its document must be a mapping."""
    text = read_text(file)
    data, lines = parse_yaml(text, file)
    if not isinstance(data, Mapping):
        found = "an empty file" if data is None else describe(data)
        raise ProfileError(
            f"{file}:{lines.get((), 1)}: a profile is a mapping of keys such as name, mode and "
            f"protections, not {found}."
        )
    return Layer(file, data, lines, text)


def read_text(file: str) -> str:
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


def parse_yaml(text: str, file: str) -> tuple[Any, Lines]:
    """Plain data and key-path lines of one YAML document, read with a safe loader only.

    libyaml's `CSafeLoader` (the same safe constructors, parsed in C) reads it when PyYAML has
    it; invalid YAML is reported by the pure-Python `SafeLoader`, so the sentence is the same
    with or without libyaml.
    """
    if _FAST_LOADER is not yaml.SafeLoader:
        try:
            return _parse(text, file, _FAST_LOADER)
        except yaml.MarkedYAMLError:
            pass
    try:
        return _parse(text, file, yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = "" if mark is None else f":{mark.line + 1}"
        column = "" if mark is None else f" (column {mark.column + 1})"
        problem = ", ".join(p for p in (error.context, error.problem) if p)
        raise ProfileError(f"{file}{line}: invalid YAML: {problem}{column}.") from None


def _parse(text: str, file: str, loader_class: Any) -> tuple[Any, Lines]:
    _check_events(text, file, loader_class)
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        data = None if node is None else _construct(loader, node, file)
    finally:
        loader.dispose()
    return data, ({} if node is None else _node_lines(node, file))


def _construct(loader: Any, node: yaml.Node, file: str) -> Any:
    """Build the values of a checked node tree (SafeLoader's constructors only)."""
    try:
        return loader.construct_document(node)
    except ValueError as error:  # e.g. an impossible date such as 2020-13-45
        raise ProfileError(f"{file}: invalid YAML: a value cannot be read ({error}).") from None


def _check_events(text: str, file: str, loader_class: Any = yaml.SafeLoader) -> None:
    """Refuse non-standard tags, nesting deeper than MAX_DEPTH and duplicate keys, before any
    value is built (the parser is iterative, so a hostile file cannot exhaust the stack)."""
    loader = loader_class(text)
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


def data_lines(data: Mapping[Any, Any], file: str) -> Lines:
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
                format_error(
                    file, line, path, f"values are nested more than {MAX_DEPTH} levels deep."
                )
            )
        pending.extend((path + (key,), child, at) for key, child, at in reversed(below))
    return lines


def describe(value: Any) -> str:
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
