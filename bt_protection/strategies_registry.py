"""Which strategy a run executes: a registered name, `package.module:Class`, `file.py:Class`,
or a class; its params (text converted to each default's type); the class composed with
`ProtectionMixin`.

Registered names come from the entry-point group `bt_protection.strategies` (the bundled
examples are declared there in pyproject.toml, like any plugin's). Every failure is a
`UserError` of one sentence. docs/extending.md shows the user's side.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import sys
from collections.abc import Mapping
from functools import reduce
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import backtrader as bt
import yaml

from bt_protection.errors import UserError
from bt_protection.integration.mixin import ProtectionMixin

GROUP = "bt_protection.strategies"
_FILE_MODULE_PREFIX = "bt_protection_user_file_"
_FILES: dict[str, Path] = {}  # module name given to a loaded strategy file -> the file
StrategySource = str | type


def registered_strategies() -> dict[str, str]:
    """Strategy names of the entry-point group, with the `module:Class` each points to."""
    return {ep.name: ep.value for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name)}


def resolve_strategy(source: StrategySource) -> type[bt.Strategy]:
    """The backtrader strategy class `source` names: a registered name, `package.module:Class`,
    `path/to/file.py:Class`, or a class (returned as it is once checked)."""
    if isinstance(source, type):
        return _checked(source, source.__qualname__)
    if not isinstance(source, str) or not source.strip():
        raise UserError(f"`strategy` must name a strategy, not {source!r}.")
    if ":" not in source:
        return _registered(source)
    where, _, name = source.rpartition(":")
    if not where or not all(part.isidentifier() for part in name.split(".")):
        raise UserError(
            f"`strategy` {source!r} is not NAME, package.module:Class or path/to/file.py:Class."
        )
    module = _load_file(where) if where.endswith(".py") else _import(where, source)
    try:
        found = reduce(getattr, name.split("."), module)  # `Outer.Inner` for a nested class
    except AttributeError:
        classes = sorted(
            k
            for k, v in vars(module).items()
            if isinstance(v, type)
            and issubclass(v, bt.Strategy)
            and v.__module__ == module.__name__
        )
        defined = ", ".join(classes) or "none"
        raise UserError(
            f"{where} has no class {name!r}; strategies defined there: {defined}."
        ) from None
    return _checked(found, source)


def strategy_label(source: StrategySource) -> str:
    """How runs name the strategy: the registered name or spec as given (a file by its file
    name only, so the label does not depend on where the project lies), or
    `module:Class` of a class."""
    if isinstance(source, type):
        file = _FILES.get(source.__module__)
        module = file.name if file is not None else source.__module__
        return f"{module}:{source.__qualname__}"
    where, colon, name = source.rpartition(":")
    return f"{Path(where).name}:{name}" if colon and where.endswith(".py") else source


def strategy_name(source: StrategySource) -> str:
    """A short name for folders: the registered name, else the class name."""
    if isinstance(source, type):
        return source.__name__
    return source.rpartition(":")[2] if ":" in source else source


def strategy_reference(source: StrategySource) -> str | None:
    """A text another process resolves to the same class (a file as its absolute path), or
    None for a class that only this process has: defined in `__main__` (a script or a
    notebook cell) or inside a function."""
    if isinstance(source, str):
        where, colon, name = source.rpartition(":")
        return f"{Path(where).resolve()}:{name}" if colon and where.endswith(".py") else source
    if source.__module__ in _FILES:
        return f"{_FILES[source.__module__]}:{source.__qualname__}"
    if source.__module__ == "__main__" or "<locals>" in source.__qualname__:
        return None
    return f"{source.__module__}:{source.__qualname__}"


def worker_reference(source: StrategySource, scheduler: str | None) -> str | None:
    """`strategy_reference(source)` for worker processes, or None when `source` must run in
    this process (a class no other process can import); on a Dask cluster (`scheduler` given)
    such a class is a UserError."""
    reference = strategy_reference(source)
    if reference is None and scheduler is not None:
        name = getattr(source, "__qualname__", source)
        raise UserError(
            f"{name} is defined in __main__ or a function, so a Dask cluster cannot load it; "
            "put it in a module or file and pass `package.module:Class` or "
            "`path/to/file.py:Class`."
        )
    return reference


_COMPOSED: dict[type, type[ProtectionMixin]] = {}


def with_protection(strategy: type[bt.Strategy]) -> type[ProtectionMixin]:
    """`strategy` itself when it already derives from `ProtectionMixin`, else the class
    `(ProtectionMixin, strategy)`: the same strategy with every order asking the orchestrator
    (what a hand-written `class X(ProtectionMixin, Strategy)` gives)."""
    if issubclass(strategy, ProtectionMixin):
        return strategy
    if strategy in _COMPOSED:
        return _COMPOSED[strategy]
    try:
        composed = type(
            strategy.__name__, (ProtectionMixin, strategy), {"__doc__": strategy.__doc__}
        )
    except TypeError as error:  # e.g. a metaclass that does not derive from backtrader's
        raise UserError(
            f"{strategy.__qualname__} cannot be combined with ProtectionMixin ({error}); "
            "derive it from ProtectionMixin yourself."
        ) from None
    composed.__module__ = strategy.__module__
    _COMPOSED[strategy] = composed
    return composed


# --------------------------------------------------------------------------- params


def strategy_params(strategy: type[bt.Strategy]) -> dict[str, Any]:
    """The strategy's own params and their defaults (those of `ProtectionMixin` are set by the
    run)."""
    own = set(ProtectionMixin.params._getkeys()) if issubclass(strategy, ProtectionMixin) else set()
    return {k: v for k, v in strategy.params._getitems() if k not in own}


def convert_params(strategy: type[bt.Strategy], given: Mapping[str, Any]) -> dict[str, Any]:
    """`given` checked against the strategy's params: text converted to the type of each
    param's default (bool, int, float, str; a YAML scalar when the default is None); other
    values must already have the default's type."""
    defaults = strategy_params(strategy)
    valid = ", ".join(f"{k} (default {v!r})" for k, v in defaults.items()) or "none"
    converted: dict[str, Any] = {}
    for key, value in given.items():
        if key not in defaults:
            raise UserError(f"{strategy.__qualname__} has no param {key!r}; its params: {valid}.")
        converted[key] = _convert(strategy.__qualname__, key, value, defaults[key])
    return converted


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _convert(owner: str, key: str, value: Any, default: Any) -> Any:
    kind = type(default)
    where = f"param {key} of {owner}"
    if default is None:
        return yaml.safe_load(value) if isinstance(value, str) and value.strip() else value
    if not isinstance(value, str):
        if isinstance(value, kind) or (kind is float and type(value) is int):
            return kind(value) if kind is float else value
        raise UserError(
            f"{where} takes {_KIND_WORDS.get(kind, kind.__name__)} like its default "
            f"{default!r}, not {value!r}."
        )
    text = value.strip()
    if kind is bool:
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
    elif kind is int:
        try:
            return int(text)
        except ValueError:
            pass
    elif kind is float:
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            return number
    elif kind is str:
        return value
    else:
        raise UserError(
            f"{where} has a default of type {kind.__name__} ({default!r}); text converts only "
            f"to bool, int, float and str (`params`), so give this one a {kind.__name__} value "
            "(RunSpec(params=...) or run_comparison(params=...))."
        )
    raise UserError(
        f"{where} takes {_KIND_WORDS[kind]} like its default {default!r}, not {value!r}."
    )


_KIND_WORDS = {
    bool: "true or false",
    int: "a whole number",
    float: "a finite number",
    str: "text",
}


# --------------------------------------------------------------------------- loading


def _registered(name: str) -> type[bt.Strategy]:
    found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not found:
        names = ", ".join(registered_strategies())
        if not names:
            raise UserError(
                f"unknown strategy {name!r}, and no strategy is registered in the entry-point "
                f"group {GROUP} (is bt-protection installed? `pip install -e .` registers the "
                "bundled examples)."
            )
        raise UserError(
            f"unknown strategy {name!r}; valid names: {names} (or package.module:Class, or "
            "path/to/file.py:Class)."
        )
    try:
        loaded = found[0].load()
    except Exception as error:  # a broken plugin: name it, no traceback
        raise UserError(
            f"strategy {name!r} ({found[0].value}) cannot be loaded: "
            f"{type(error).__name__}: {error}."
        ) from None
    return _checked(loaded, name)


def _import(module: str, source: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name is not None and (module == error.name or module.startswith(error.name + ".")):
            raise UserError(
                f"`strategy` {source!r}: no module named {error.name!r} (is its folder on "
                "PYTHONPATH, or the current directory?)."
            ) from None
        raise UserError(f"importing {module!r} failed: {type(error).__name__}: {error}.") from None
    except Exception as error:
        raise UserError(f"importing {module!r} failed: {type(error).__name__}: {error}.") from None


def _load_file(where: str) -> Any:
    """The module of a strategy file, loaded once per file under a name of its own."""
    path = Path(where).resolve()
    if not path.is_file():
        raise UserError(f"`strategy`: {where} is not a file; expected path/to/file.py:Class.")
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    name = f"{_FILE_MODULE_PREFIX}{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"`strategy`: {where} cannot be loaded as a Python module.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look classes up there
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        raise UserError(f"loading {where} failed: {type(error).__name__}: {error}.") from None
    _FILES[name] = path
    return module


def _checked(found: Any, source: str) -> type[bt.Strategy]:
    if not (isinstance(found, type) and issubclass(found, bt.Strategy)):
        what = (
            f"class {found.__qualname__}"
            if isinstance(found, type)
            else f"a {type(found).__name__}"
        )
        raise UserError(
            f"`strategy` {source!r} is {what}, not a backtrader strategy (a subclass of "
            "bt.Strategy)."
        )
    if found is ProtectionMixin:
        raise UserError("`strategy` ProtectionMixin has no trading logic; name your strategy.")
    return found
