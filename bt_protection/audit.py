"""The audit log: one JSON object per line, written as the run goes.

The first line is a header with the run's fingerprint. Every later line has `seq`, `kind`,
`session_id`, `trace_id`, the backtest `time` and `bar`; wall-clock figures sit under `wall`
only, so two runs of the same inputs give identical files once `wall` is removed. Lines go into
a 1 MiB file buffer as they are made; `flush()`, which the orchestrator calls when the backtest
clock moves to a new bar, hands them to the operating system, and `close()` flushes the rest.
A process killed between flushes can leave a truncated last line, which `read_audit` skips.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

import orjson

from bt_protection.errors import UserError
from bt_protection.models import ProtectionDecision, ProtectionRequest, ProtectionResult

_BUFFER = 1 << 20
_LINE_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_APPEND_NEWLINE


# Records a restart adds (the `restart` record, denials on bars handled before it) carry
# `"restart": true` and the `seq` of the record before them: without them, the file of a run
# stopped and resumed equals that of an uninterrupted run, `seq` included.
RESTART = "restart"


@dataclass(frozen=True)
class AuditResume:
    """Where a resumed audit log goes on: the file's size and last `seq` at the last save, and
    the time and bar of that save."""

    offset: int
    seq: int
    time: Any = None
    bar: int | None = None


class AuditWriteError(UserError, OSError):
    """The audit file could not be opened or written: the run stops rather than lose records."""


def cache_json(result: ProtectionResult) -> None:
    """Serialise `result` once, onto itself (`audit_json`): for results made once and reused."""
    object.__setattr__(result, "audit_json", dumps(_result_fields(result)).decode())


def _result_fields(value: ProtectionResult) -> dict[str, Any]:
    fields = {
        "system": value.system,
        "allowed": value.allowed,
        "reason": value.reason,
        "details": dict(value.details),  # a read-only mapping: copied to a dict at once
    }
    if value.allowed_target is not None:
        fields["allowed_target"] = value.allowed_target
    return fields


def _default(value: Any) -> Any:
    if type(value) is ProtectionResult:  # the common case first: one per enabled system
        cached = value.audit_json
        if cached is not None:
            return orjson.Fragment(cached)
        return _result_fields(value)
    if type(value) is MappingProxyType:
        return value.copy()
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(record: Mapping[str, Any]) -> bytes:
    """One audit line (without the newline)."""
    return orjson.dumps(record, default=_default, option=orjson.OPT_PASSTHROUGH_DATACLASS)


def _line(record: Mapping[str, Any]) -> bytes:
    """One audit line, newline included."""
    return orjson.dumps(record, default=_default, option=_LINE_OPTIONS)


def session_id_for(fingerprint: Mapping[str, Any]) -> str:
    """A deterministic session id: the same inputs give the same id."""
    return hashlib.sha256(dumps(dict(sorted(fingerprint.items())))).hexdigest()[:12]


class AuditLog:
    """Writes audit records to `path` (JSONL).

    The file is opened at once, so a path that cannot be written fails before the run starts.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fingerprint: Mapping[str, Any] | None = None,
        resume: AuditResume | None = None,
    ):
        self.path = Path(path)
        self.fingerprint = dict(fingerprint or {})
        self.session_id = session_id_for(self.fingerprint)
        self._seq = 0
        self.unflushed = False  # records written since the last flush
        self._file: IO[bytes] | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            mode = "wb" if resume is None else "r+b"
            self._file = open(self.path, mode, buffering=_BUFFER)  # noqa: SIM115 - see close()
        except OSError as error:
            reason = error.strerror or str(error)
            if isinstance(error, FileExistsError):  # mkdir met a file where a folder must be
                reason = f"{error.filename} is a file, not a folder"
            raise AuditWriteError(f"cannot write the audit log {self.path}: {reason}.") from None
        if resume is None:
            header = {"seq": 0, "kind": "header", "session_id": self.session_id}
            self._write(_line({**header, **self.fingerprint}))
        else:
            self._resume_at(resume)
        self.flush()

    def _resume_at(self, resume: AuditResume) -> None:
        """Cut the file back to the last saved record and go on from there, after a `restart`
        record (it takes no `seq` of its own: see `RESTART`)."""
        assert self._file is not None
        size = self._file.seek(0, os.SEEK_END)
        if size < resume.offset:
            self.close()
            raise AuditWriteError(
                f"the audit log {self.path} has {size} bytes, fewer than the {resume.offset} "
                "the state file saved with it; it was changed since, so resume with another "
                "out folder and a reset state file."
            )
        self._file.seek(resume.offset)
        self._file.truncate()
        self._seq = resume.seq
        line = {"seq": self._seq, "kind": "restart", RESTART: True, "session_id": self.session_id}
        line.update(trace_id=None, time=resume.time, bar=resume.bar, offset=resume.offset)
        self._write(_line(line))

    def position(self) -> AuditResume:
        """Where the file stands once flushed: its size and last `seq` (`time`, `bar` unset)."""
        self.flush()
        assert self._file is not None
        return AuditResume(self._file.tell(), self._seq)

    def _write(self, line: bytes) -> None:
        # written at once, not kept: holding thousands of fresh bytes objects until a flush
        # costs more than the JSON encoding itself
        try:
            self._file.write(line)  # type: ignore[union-attr]
        except OSError as error:
            raise self._failure(error) from None
        self.unflushed = True

    def _failure(self, error: OSError) -> AuditWriteError:
        return AuditWriteError(
            f"cannot write the audit log {self.path} after record {self._seq}: "
            f"{error.strerror or error}."
        )

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
        """Write one record into the file buffer."""
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
        self._write(_line(line))

    def record_decision(
        self, request: ProtectionRequest, decision: ProtectionDecision, restart: bool = False
    ) -> None:
        """Write the record of one decision (the hot path: one dict, one dump). `restart`: a
        denial on a bar handled before a restart, marked `restart` and given no `seq` of its
        own (see `RESTART`)."""
        if not restart:
            self._seq += 1
        record = {
            "seq": self._seq,
            "kind": "decision",
            "session_id": self.session_id,
            "trace_id": decision.trace_id,
            "time": decision.date,
            "bar": decision.bar,
            "asset": decision.asset,
            "action": decision.action,
            "current_size": decision.current_size,
            "target_size": decision.target_size,
            "approved": decision.approved,
            "approved_target": decision.approved_target,
            "partial": decision.partial,
            "exempt": decision.exempt,
            "would_block": decision.would_block,
            "reason": decision.reason,
            "blocking_systems": decision.blocking_systems,
            "overridden_systems": decision.overridden_systems,
            "regime": decision.regime,
            "error": decision.error,
            "request_reason": request.reason,
            "score": request.score,
            "metadata": request.metadata,
            "results": decision.results,
            "wall": {"decision_time_us": decision.decision_time_us},
        }
        if restart:
            record[RESTART] = True
        if decision.risk_exit:  # written only when true: other records stay as they were
            record["risk_exit"] = True
            record["lifted_systems"] = decision.lifted_systems
        self._write(_line(record))

    def flush(self) -> None:
        """Hand every record written so far to the operating system."""
        if self._file is None:
            return
        try:
            self._file.flush()
        except OSError as error:
            raise self._failure(error) from None
        self.unflushed = False

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
