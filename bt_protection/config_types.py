"""The field types a protection's config dataclass may use: what the profile loader reads.

Checked when a protection registers, so a plugin with an unreadable field fails at import
rather than when a profile first names it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass
from datetime import date
from enum import StrEnum
from types import MappingProxyType, UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from bt_protection.durations import Duration

SCALAR_TYPES = frozenset({bool, int, float, str, date, Duration})
"""Types read from one YAML scalar (bt_protection.profile.loader converts each)."""


def _resolved_types(cls: type) -> Mapping[str, Any]:
    return MappingProxyType(get_type_hints(cls))


field_types: Callable[[type], Mapping[str, Any]] = functools.cache(_resolved_types)
"""The resolved type of each field of a dataclass, worked out once per class (resolving the
annotations was most of the time of loading a profile)."""


def unreadable_fields(cls: type) -> list[str]:
    """Fields of a config dataclass whose type the profile loader cannot read (checked when a
    protection registers, so a plugin fails at import rather than when a profile names it)."""
    hints = field_types(cls)
    return [f.name for f in fields(cls) if f.init and not _readable(hints[f.name])]


def _readable(hint: Any) -> bool:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, UnionType):
        return len(args) == 2 and type(None) in args and all(map(_readable, args))
    if hint in SCALAR_TYPES or hint is type(None):
        return True
    if isinstance(hint, type) and (issubclass(hint, StrEnum) or is_dataclass(hint)):
        return not is_dataclass(hint) or not unreadable_fields(hint)
    if origin in (frozenset, tuple):
        return (
            len(args) == (2 if origin is tuple else 1)
            and _readable(args[0])
            and (origin is frozenset or args[1] is Ellipsis)
        )
    if origin is Mapping:
        return all(map(_readable, args))
    return False
