"""The observers of decisions and events: the metrics (counts, blocks, latency ring) and the
audit trail (records stamped with the clock's trace)."""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from bt_protection.audit import AuditLog
from bt_protection.durations import ClockPoint
from bt_protection.models import ProtectionDecision, ProtectionRequest
from bt_protection.orchestration.clock import Clock

_LATENCY_SAMPLES = 1 << 16  # percentiles cover the latest 65,536 decisions: constant memory
_RECENT_ERRORS = 10  # texts of the latest failures kept for the metrics


class Metrics:
    """Counts of decisions, blocks by system, failures, and decision times."""

    def __init__(self, systems: Iterable[str]) -> None:
        self.counts = {
            "decisions_processed": 0,
            "approved": 0,
            "denied": 0,
            "exempt": 0,
            "partial": 0,
            "risk_exits": 0,
            "overrides_applied": 0,
            "errors": 0,
        }
        self._recent_errors: deque[str] = deque(maxlen=_RECENT_ERRORS)
        self._blocks = dict.fromkeys(systems, 0)
        self._would_block = dict(self._blocks)
        self._latency = array("q")  # a ring of _LATENCY_SAMPLES, filled as decisions come
        self._latency_total = 0

    def count(self, decision: ProtectionDecision) -> None:
        counts = self.counts
        n = counts["decisions_processed"]
        counts["decisions_processed"] = n + 1
        counts["approved" if decision.approved else "denied"] += 1
        if decision.partial:
            counts["partial"] += 1
        if decision.risk_exit:
            counts["risk_exits"] += 1
            for system in decision.lifted_systems:  # approved although it objected
                self._would_block[system] += 1
        if decision.exempt:
            counts["exempt"] += 1
        if decision.override_applied:
            counts["overrides_applied"] += 1
        # blocks count real denials; exempt and shadow decisions count as would-blocks
        tally = self._blocks if decision.partial or not decision.approved else self._would_block
        for system in decision.blocking_systems:
            tally[system] += 1
        nanos = int(decision.decision_time_us * 1000)
        latency, slot = self._latency, n % _LATENCY_SAMPLES
        if slot >= len(latency):  # zeros for the slots before (decisions restored, not timed)
            latency.frombytes(bytes(8 * (slot + 1 - len(latency))))
        latency[slot] = nanos
        self._latency_total += nanos

    def error(self, text: str) -> None:
        """Count a failure and keep its text."""
        self.counts["errors"] += 1
        self._recent_errors.append(text)

    def report(self) -> dict[str, Any]:
        """Counts of decisions, blocks by system, errors, and decision time (microseconds)."""
        counts: dict[str, Any] = dict(self.counts)
        n = counts["decisions_processed"]
        counts["approval_rate"] = counts["approved"] / n if n else 0.0
        counts["blocks_by_system"] = dict(self._blocks)
        counts["would_block_by_system"] = dict(self._would_block)
        counts["recent_errors"] = list(self._recent_errors)
        samples = sorted(self._latency[: min(n, _LATENCY_SAMPLES)])
        counts["decision_time_us"] = {
            "mean": self._latency_total / n / 1000.0 if n else 0.0,
            "p50": samples[len(samples) // 2] / 1000.0 if samples else 0.0,
            "p99": samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1000.0
            if samples
            else 0.0,
        }
        return counts

    def state(self) -> dict[str, Any]:
        """The counters as plain data (decision timings, wall clock, are left out)."""
        return {
            "counts": self.counts,
            "recent_errors": list(self._recent_errors),
            "blocks": self._blocks,
            "would_block": self._would_block,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.counts.update(state["counts"])
        self._recent_errors.extend(state["recent_errors"])
        self._blocks.update(state["blocks"])
        self._would_block.update(state["would_block"])


class AuditTrail:
    """Writes the orchestrator's records to `audit` (when there is one) under the clock's
    trace."""

    def __init__(self, audit: AuditLog | None, clock: Clock) -> None:
        self.audit = audit
        self._clock = clock

    def emit(self, kind: str, when: ClockPoint, payload: dict[str, Any]) -> None:
        if self.audit is not None:
            self.audit.record(kind, when.date, when.bar, self._clock.trace_id(), payload)

    def decision(
        self, request: ProtectionRequest, decision: ProtectionDecision, restart: bool = False
    ) -> None:
        if self.audit is not None:
            self.audit.record_decision(request, decision, restart)

    def fail(self, error: BaseException) -> None:
        """The run stopped with `error`: record it and close the audit, keeping every record."""
        if self.audit is not None and not self.audit.closed:
            self.emit(
                "run_failed",
                self._clock.last_point(),
                {"error": f"{type(error).__name__}: {error}"},
            )
            self.audit.close()

    def close(self, counts: Mapping[str, int]) -> None:
        """Record how the run ended (its date range and `counts`), then close the audit."""
        if self.audit is None or self.audit.closed:
            return
        now, first = self._clock.now, self._clock.first
        if now is not None and first is not None:
            self.emit(
                "run_end",
                now,
                {
                    "first": first.date,
                    "last": now.date,
                    "decisions": counts["decisions_processed"],
                    "approved": counts["approved"],
                    "denied": counts["denied"],
                    "errors": counts["errors"],
                },
            )
        self.audit.close()
