"""The audit log: one JSON object per line, written as the run goes.

The first line is a header with the run's fingerprint. Every later line has `seq`, `kind`,
`session_id`, `trace_id`, the backtest `time` and `bar`; wall-clock figures sit under `wall`
only, so two runs of the same inputs give identical files once `wall` is removed. Lines are
buffered and written whole by `flush()`, which the orchestrator calls when the backtest clock
moves to a new bar; `close()` flushes the rest.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import orjson

from bt_protection.errors import UserError


class AuditWriteError(UserError, OSError):
    """The audit file could not be opened or written: the run stops rather than lose records."""


def _default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(record: Mapping[str, Any]) -> bytes:
    """One audit line (without the newline)."""
    return orjson.dumps(record, default=_default)


def session_id_for(fingerprint: Mapping[str, Any]) -> str:
    """A deterministic session id: the same inputs give the same id."""
    return hashlib.sha256(dumps(dict(sorted(fingerprint.items())))).hexdigest()[:12]


class AuditLog:
    """Writes audit records to `path` (JSONL).

    The file is opened at once, so a path that cannot be written fails before the run starts.
    """

    def __init__(self, path: str | os.PathLike[str], fingerprint: Mapping[str, Any] | None = None):
        self.path = Path(path)
        self.fingerprint = dict(fingerprint or {})
        self.session_id = session_id_for(self.fingerprint)
        self._seq = 0
        self._pending: list[bytes] = []
        self._file: IO[bytes] | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "wb")  # noqa: SIM115 - closed by close()
        except OSError as error:
            raise AuditWriteError(
                f"cannot write the audit log {self.path}: {error.strerror or error}."
            ) from None
        self._pending.append(
            dumps({"seq": 0, "kind": "header", "session_id": self.session_id, **self.fingerprint})
            + b"\n"
        )
        self.flush()

    @property
    def closed(self) -> bool:
        return self._file is None

    def record(
        self,
        kind: str,
        time: Any,
        bar: int | None,
        trace_id: str | None,
        payload: Mapping[str, Any],
        wall: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue one record; it reaches the file at the next `flush()`."""
        self._seq += 1
        line: dict[str, Any] = {
            "seq": self._seq,
            "kind": kind,
            "session_id": self.session_id,
            "trace_id": trace_id,
            "time": time,
            "bar": bar,
        }
        line.update(payload)
        if wall is not None:
            line["wall"] = wall
        self._pending.append(dumps(line) + b"\n")

    def flush(self) -> None:
        """Write every queued record as whole lines."""
        if not self._pending or self._file is None:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        try:
            self._file.write(data)
            self._file.flush()
        except OSError as error:
            raise AuditWriteError(
                f"cannot write the audit log {self.path} after record {self._seq}: "
                f"{error.strerror or error}."
            ) from None

    def close(self) -> None:
        if self._file is None:
            return
        try:
            self.flush()
        finally:
            self._file.close()
            self._file = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_audit(path: str | os.PathLike[str], drop_wall: bool = False) -> Iterator[dict[str, Any]]:
    """The records of an audit file; a truncated last line (a killed process) is skipped."""
    with open(path, "rb") as handle:
        for raw in handle:
            if not raw.endswith(b"\n"):
                break
            record = orjson.loads(raw)
            if drop_wall:
                record.pop("wall", None)
            yield record
