"""The orchestrator's state on disk: one SQLite file (WAL), written in one transaction.

The state is plain data (numbers, text, dates, containers and the protections' own small
dataclasses) encoded as JSON with a deterministic tagged encoding, never pickle: the same state
gives the same bytes, and a file can only rebuild classes of bt_protection or of a registered
protection plugin. Nothing in it depends on the wall clock.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import itertools
import json
import math
import operator
import os
import sqlite3
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from bt_protection.durations import ClockPoint
from bt_protection.errors import UserError
from bt_protection.models import ProtectionResult
from bt_protection.profile import Profile, load_profile
from bt_protection.protections.base import registry
from bt_protection.state_rows import StateRows

# 2: core asset immunity reads the orchestrator's ledger (no sizes of its own);
# 3: the state in rows (`StateRows`: a row per part and per asset), not one text
FORMAT = 3
_PACKAGE = "bt_protection"
_TABLES = {
    "meta": "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # the state's rows (`StateRows.keyed`)
    "state": "CREATE TABLE state(key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # what a caller saves beside the state in the same transaction (a paper broker, order rows)
    "records": "CREATE TABLE records(key TEXT PRIMARY KEY, value TEXT NOT NULL)",
}


_UNSEEN = object()  # no row object yet


class StateError(UserError):
    """A state file that cannot be used: another profile or assets, corrupt, unwritable."""


# --- the encoding ---------------------------------------------------------------------------


def encode(value: Any) -> Any:
    """`value` as JSON-ready plain data; tagged objects keep types JSON lacks."""
    kind = type(value)
    if kind is ClockPoint:  # the most frequent object by far: one per lot, exit, fill
        return {"$cp": [value.date.isoformat(), value.bar]}
    if kind is str or kind is float or kind is int:
        return value
    if kind is dict:
        return {"$map": [[encode(k), encode(v)] for k, v in value.items()]}
    if (
        value is None
        or isinstance(value, (bool, int, float, str))
        and not isinstance(value, enum.Enum)
    ):
        return value
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, enum.Enum):
        return {"$enum": _class_path(type(value)), "v": value.value}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, tuple):
        return {"$tuple": [encode(v) for v in value]}
    if isinstance(value, deque):
        return {"$deque": [encode(v) for v in value], "maxlen": value.maxlen}
    if isinstance(value, (set, frozenset)):
        items = sorted((encode(v) for v in value), key=_canonical)
        return {"$set": items}
    if isinstance(value, Mapping):
        return {"$map": [[encode(k), encode(v)] for k, v in value.items()]}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"$obj": _class_path(type(value)), "f": fields}
    if hasattr(value, "__dict__") and type(value).__module__.startswith(_PACKAGE):
        return {"$obj": _class_path(type(value)), "a": encode(dict(vars(value)))}
    raise TypeError(
        f"the state holds a {type(value).__name__}, which a state file cannot store; "
        "a protection's state must be plain data or dataclasses."
    )


def decode(value: Any) -> Any:
    """The inverse of `encode`."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "$cp" in value:
        when, bar = value["$cp"]
        return ClockPoint(datetime.fromisoformat(when), bar)
    if "$dt" in value:
        return datetime.fromisoformat(value["$dt"])
    if "$enum" in value:
        return _class(value["$enum"])(value["v"])
    if "$tuple" in value:
        return tuple(decode(v) for v in value["$tuple"])
    if "$deque" in value:
        return deque((decode(v) for v in value["$deque"]), maxlen=value["maxlen"])
    if "$set" in value:
        return frozenset(decode(v) for v in value["$set"])
    if "$map" in value:
        return {decode(k): decode(v) for k, v in value["$map"]}
    if "$obj" in value:
        cls = _class(value["$obj"])
        if "f" in value:
            fields = {k: decode(v) for k, v in value["f"].items()}
            init = {f.name for f in dataclasses.fields(cls) if f.init}
            made = cls(**{k: v for k, v in fields.items() if k in init})
            for k, v in fields.items():
                if k not in init:
                    object.__setattr__(made, k, v)
            return made
        made = object.__new__(cls)
        vars(made).update(decode(value["a"]))
        return made
    raise ValueError(f"unknown tag in {sorted(value)}")


def dumps(value: Any) -> str:
    """Deterministic JSON text of `value`: `json.dumps(encode(value), sort_keys=True,
    separators=(",", ":"))`, written directly (a save runs it every bar). Immutable objects
    that stay in the state from bar to bar (clock points, results, enums, frozensets, tuples
    and frozen dataclasses of plain values) are written once and their text reused, as is
    that of a large dict or a deque of such objects while it holds the same ones."""
    text = _text(value)
    if len(_MEMO) + len(_KEPT) + len(_WINDOWS) > _MEMO_LIMIT:
        _MEMO.clear()
        _KEPT.clear()
        _WINDOWS.clear()
    return text


# id -> (the object, kept alive so that its id is not reused; its text)
_MEMO: dict[int, tuple[Any, str]] = {}
_MEMO_LIMIT = 200_000
# id -> (a dict, deque or dataclass, the children its text was built from, its text)
_KEPT: dict[int, tuple[Any, list[Any], str]] = {}
# id -> (a deque of immutable items, those items, their texts, its text)
_WINDOWS: dict[int, tuple[deque[Any], list[Any], list[str], str]] = {}
_LARGE = 2
_IMMUTABLE = frozenset({str, float, int, bool, type(None), ClockPoint, datetime})
_FIELDS: dict[type, list[tuple[str, str]]] = {}  # a dataclass's fields: (name, '"name":')
_string = json.encoder.encode_basestring_ascii


def _text(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return str(_string(value))
    if kind is float:
        return _float(value)
    if kind is int:
        return int.__repr__(value)
    if kind is dict:
        return _map(value)
    if kind is list:
        return "[" + ",".join([_text(v) for v in value]) + "]"
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    hit = _MEMO.get(id(value))
    if hit is not None and hit[0] is value:
        return hit[1]
    if kind is ClockPoint:
        text = '{"$cp":[' + _text(value.date.isoformat()) + "," + _text(value.bar) + "]}"
        _MEMO[id(value)] = (value, text)
        return text
    if isinstance(value, enum.Enum):
        text = '{"$enum":' + _text(_class_path(kind)) + ',"v":' + _text(value.value) + "}"
        _MEMO[id(value)] = (value, text)
        return text
    if isinstance(value, (bool, int, float, str)):  # their subclasses, as JSON writes them
        return json.dumps(value)
    if isinstance(value, datetime):
        return '{"$dt":' + _text(value.isoformat()) + "}"
    if isinstance(value, tuple):
        text = '{"$tuple":[' + ",".join([_text(v) for v in value]) + "]}"
        if all(map(_immutable, value)):  # e.g. (clock point, value) in a window
            _MEMO[id(value)] = (value, text)
        return text
    if isinstance(value, deque):
        return _deque(value)
    if isinstance(value, (set, frozenset)):
        text = '{"$set":[' + ",".join(sorted(_text(v) for v in value)) + "]}"
        if kind is frozenset:
            _MEMO[id(value)] = (value, text)
        return text
    if isinstance(value, list):
        return "[" + ",".join([_text(v) for v in value]) + "]"
    if isinstance(value, Mapping):
        return _map(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = _FIELDS.get(kind)
        if fields is None:
            names = sorted(f.name for f in dataclasses.fields(value))
            fields = _FIELDS[kind] = [(n, _text(n) + ":") for n in names]
        values = [getattr(value, name) for name, _ in fields]
        frozen = kind.__dataclass_params__.frozen
        if not frozen:
            kept = _reused(value, values)  # e.g. a lot: its size and fill time
            if kept is not None:
                return kept
        body = ",".join([key + _text(v) for (_, key), v in zip(fields, values, strict=True)])
        text = '{"$obj":' + _text(_class_path(kind)) + ',"f":{' + body + "}}"
        if not frozen:
            return _keep(value, values, text)
        # the constant results protections keep, frozen records of immutable values (a
        # config, a duration)
        if kind is ProtectionResult or all(map(_immutable, values)):
            _MEMO[id(value)] = (value, text)
        return text
    if hasattr(value, "__dict__") and kind.__module__.startswith(_PACKAGE):
        return '{"$obj":' + _text(_class_path(kind)) + ',"a":' + _map(dict(vars(value))) + "}"
    raise TypeError(
        f"the state holds a {kind.__name__}, which a state file cannot store; "
        "a protection's state must be plain data or dataclasses."
    )


def _map(value: Mapping[Any, Any]) -> str:
    """A mapping's text. A dict of immutable keys and values (per asset: a clock point,
    a size) keeps its text while it holds the same objects."""
    kept = type(value) is dict and len(value) >= _LARGE
    if kept:
        children = list(itertools.chain.from_iterable(value.items()))
        text = _reused(value, children)
        if text is not None:
            return text
    pairs = ",".join(["[" + _text(k) + "," + _text(v) + "]" for k, v in value.items()])
    text = '{"$map":[' + pairs + "]}"
    return _keep(value, children, text) if kept else text


def _deque(value: deque[Any]) -> str:
    """A deque's text. A deque of immutable items (a window of clock points and values) keeps
    its items' texts while it holds the same objects, and as a window moves (items dropped on
    the left, added on the right) only the new items are written."""
    children = list(value)
    hit = _WINDOWS.get(id(value))
    texts: list[str] | None = None
    if hit is not None and hit[0] is value:
        kept = _kept_from(hit[1], children)
        if kept == len(hit[1]) == len(children):
            return hit[3]
        if kept is not None:
            added = children[kept:]
            written = [_text(v) for v in added]
            if all(map(_immutable, added)):
                texts = hit[2][len(hit[1]) - kept :] + written
    if texts is None:
        texts = [_text(v) for v in children]
        if not all(map(_immutable, children)):
            _WINDOWS.pop(id(value), None)
            return _deque_text(texts, value.maxlen)
    text = _deque_text(texts, value.maxlen)
    _WINDOWS[id(value)] = (value, children, texts, text)
    return text


def _deque_text(texts: list[str], maxlen: int | None) -> str:
    return '{"$deque":[' + ",".join(texts) + '],"maxlen":' + _text(maxlen) + "}"


def _kept_from(old: list[Any], new: list[Any]) -> int | None:
    """How many items of `new` are the last ones of `old` (the same objects, in order), when
    `new` is `old` with items dropped on the left and added on the right; else None."""
    if not new:
        return 0
    first = new[0]
    start = next((i for i, v in enumerate(old) if v is first), len(old))
    kept = len(old) - start
    if kept > len(new) or not all(map(operator.is_, old[start:], new)):
        return None
    return kept


def _reused(value: Any, children: list[Any]) -> str | None:
    """The text kept for `value` if it still holds the same `children` (by identity)."""
    hit = _KEPT.get(id(value))
    if (
        hit is not None
        and hit[0] is value
        and len(hit[1]) == len(children)
        and all(map(operator.is_, hit[1], children))
    ):
        return hit[2]
    return None


def _keep(value: Any, children: list[Any], text: str) -> str:
    """Keep `text` for `value` when it depends only on which immutable `children` it holds."""
    if all(map(_immutable, children)):
        _KEPT[id(value)] = (value, children, text)
    return text


def _immutable(value: Any) -> bool:
    """Whether `value`'s text cannot change: a plain value or an object written once."""
    if type(value) in _IMMUTABLE:
        return True
    hit = _MEMO.get(id(value))
    return hit is not None and hit[0] is value


def _float(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


def loads(text: str) -> Any:
    return decode(json.loads(text))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _class(path: str) -> Any:
    """The class `module:qualname`, only from bt_protection or a registered plugin's module."""
    module, _, name = path.partition(":")
    plugins = {cls.__module__ for cls in registry().values()}
    if not (module == _PACKAGE or module.startswith(_PACKAGE + ".") or module in plugins):
        raise ValueError(f"class {path} is neither bt_protection's nor a registered plugin's")
    found: Any = importlib.import_module(module)
    for part in name.split("."):
        found = getattr(found, part)
    return found


# --- the file -------------------------------------------------------------------------------


class StateFile:
    """A state file of one profile and one set of assets.

    `open` refuses, with a sentence, a file of another profile or other assets, a corrupt or
    truncated file and a folder it cannot write to; it overwrites nothing when it refuses.
    """

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection
        self._last: dict[str, str] = {}  # each row's text as the file holds it
        self._objects: dict[str, Any] = {}  # the object each row's text was last made from

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        profile: Profile,
        assets: Iterable[str],
        reset: bool = False,
    ) -> StateFile:
        where = Path(path)
        profile_hash = profile.hash
        names = sorted(set(assets))
        db = _connect(where)
        try:
            meta = _read_meta(db, where, any_format=reset)
            if meta and not reset:
                _check_same(where, meta, profile_hash, names)
            if meta and not reset:  # the file fits: open it without writing anything
                return cls(where, db)
            with db:
                if reset:
                    _clear(db)
                db.executemany(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                    [
                        ("format", str(FORMAT)),
                        ("profile_hash", profile_hash),
                        ("profile", json.dumps(profile.to_dict(), sort_keys=True)),
                        ("assets", json.dumps(names)),
                    ],
                )
        except sqlite3.Error as error:
            db.close()
            raise _refused(where, error) from None
        except BaseException:
            db.close()
            raise
        return cls(where, db)

    def load(self) -> dict[str, Any] | None:
        """The saved state (None when none was saved yet)."""
        return _state_of(self._db, self.path, self._last)

    def records(self, prefix: str) -> dict[str, str]:
        """The records saved beside the state whose key starts with `prefix` (by key)."""
        try:
            rows = self._db.execute(
                "SELECT key, value FROM records WHERE key >= ? AND key < ? ORDER BY key",
                (prefix, prefix + "\uffff"),
            )
            return dict(rows.fetchall())
        except sqlite3.Error as error:
            raise _refused(self.path, error) from None

    def save(self, rows: StateRows, records: Iterable[tuple[str, str]] = ()) -> None:
        """Write the state's `rows` that changed and `records` (key, text: e.g. a paper
        broker's) in one transaction; the previous ones stay whole if this fails. A row whose
        text equals the one the file holds is not written again."""
        last, objects = self._last, self._objects
        changed = []
        for key, value in rows.keyed():
            if objects.get(key, _UNSEEN) is value and _immutable(value):  # e.g. a constant
                continue
            text = dumps(value)
            objects[key] = value
            if last.get(key) != text:
                changed.append((key, text))
        try:
            with self._db:
                self._db.executemany(
                    "INSERT OR REPLACE INTO state(key, value) VALUES (?, ?)", changed
                )
                self._db.executemany(
                    "INSERT OR REPLACE INTO records(key, value) VALUES (?, ?)", records
                )
        except sqlite3.Error as error:
            last.clear()
            objects.clear()
            raise _refused(self.path, error) from None
        last.update(changed)

    def close(self) -> None:
        self._db.close()


def read_state(
    path: str | os.PathLike[str], any_format: bool = False
) -> tuple[dict[str, str], dict[str, Any] | None]:
    """(profile hash, assets and format as saved; the saved state or None) of an existing file,
    read only; a file of another format is refused unless `any_format` (then its state is
    not read)."""
    where = Path(path)
    if not where.is_file():
        raise StateError(f"state file {where} does not exist.")
    try:
        db = sqlite3.connect(f"file:{where}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise _refused(where, error) from None
    try:
        meta = _read_meta(db, where, create=False, any_format=any_format)
        if meta and meta.get("format") != str(FORMAT):
            return meta, None
        return meta, _state_of(db, where)
    except sqlite3.Error as error:
        raise _refused(where, error) from None
    finally:
        db.close()


def saved_profile(meta: Mapping[str, str], where: Path) -> Profile:
    """The profile a state file was written under, checked against its hash."""
    profile = load_profile(json.loads(meta["profile"]))
    if profile.hash != meta["profile_hash"]:
        raise StateError(
            f"state file {where} holds profile {profile.name!r} with hash {profile.hash}, "
            f"not the {meta['profile_hash']} it was saved under; this version reads it "
            "otherwise, so reset it."
        )
    return profile


def reset_state(path: str | os.PathLike[str]) -> None:
    """Clear an existing state file: the next run starts anew, under any profile."""
    where = Path(path)
    read_state(where, any_format=True)  # refuses a missing, corrupt or foreign file
    db = _connect(where)
    try:
        _read_meta(db, where, any_format=True)  # a file of an earlier format gets its tables
        with db:
            _clear(db)
    except sqlite3.Error as error:
        raise _refused(where, error) from None
    finally:
        db.close()


def _clear(db: sqlite3.Connection) -> None:
    db.execute("DELETE FROM meta")
    db.execute("DELETE FROM records")
    db.execute("DELETE FROM state")


def _connect(where: Path) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(where)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.Error as error:
        raise _refused(where, error) from None
    return db


def _read_meta(
    db: sqlite3.Connection, where: Path, create: bool = True, any_format: bool = False
) -> dict[str, str]:
    """The file's profile hash, profile, assets and format (empty for a new or reset file);
    the tables are made when `create`. A file of another format is refused unless
    `any_format` (it is about to be reset)."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if tables and "meta" not in tables:
        raise StateError(f"{where} is an SQLite file but not a bt-protection state file.")
    meta = {}
    if "meta" in tables:
        meta = dict(db.execute("SELECT key, value FROM meta WHERE key != 'state'").fetchall())
    if meta and meta.get("format") != str(FORMAT) and not any_format:  # empty: reset
        raise StateError(
            f"state file {where} has format {meta.get('format')!r}; this version reads "
            f"format {FORMAT}; reset it (`bt-protection state reset`) to start anew."
        )
    missing = [make for table, make in _TABLES.items() if table not in tables]
    if missing and create:  # a new file, or one of an earlier format about to be reset
        with db:
            for make in missing:
                db.execute(make)
    return meta


def _check_same(where: Path, meta: Mapping[str, str], profile_hash: str, names: list[str]) -> None:
    if meta.get("profile_hash") != profile_hash:
        raise StateError(
            f"state file {where} was written under profile hash {meta.get('profile_hash')}, "
            f"not {profile_hash} of this profile; use another file or reset it "
            "(protection_state_reset=True, `bt-protection state reset`)."
        )
    saved = json.loads(meta.get("assets", "[]"))
    if saved != names:
        raise StateError(
            f"state file {where} holds assets {', '.join(saved)}, not {', '.join(names)}; "
            "use another file or reset it (protection_state_reset=True)."
        )


def _state_of(
    db: sqlite3.Connection, where: Path, texts: dict[str, str] | None = None
) -> dict[str, Any] | None:
    """The state the rows of `db` hold (None when none was saved); `texts` gets each row's
    text."""
    rows = dict(db.execute("SELECT key, value FROM state"))
    if not rows:
        return None
    try:
        state = StateRows.from_keyed({key: loads(text) for key, text in rows.items()}).join()
    except (ValueError, TypeError, KeyError, AttributeError, ImportError) as error:
        raise StateError(
            f"state file {where} holds a state that cannot be read: {error}."
        ) from None
    if texts is not None:
        texts.update(rows)
    return state


def _refused(where: Path, error: sqlite3.Error) -> StateError:
    text = str(error).rstrip(".")
    if "not a database" in text or "malformed" in text:
        return StateError(
            f"state file {where} is corrupt or truncated ({text}); it was left as it is. "
            "Restore a copy, or start anew with protection_state_reset=True after moving it."
        )
    return StateError(f"state file {where} cannot be opened or written: {text}.")
