"""The backtest clock: the last event's time and bar, the trace it belongs to, and the replay
mark after a restart. Nothing here reads the wall clock."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bt_protection.audit import AuditLog
from bt_protection.durations import ClockPoint
from bt_protection.models import to_datetime


class Clock:
    """Moves with the events; a new bar starts a new trace and flushes the audit."""

    def __init__(self, profile_name: str, needs_bars: bool, audit: AuditLog | None) -> None:
        self._profile_name = profile_name
        self._needs_bars = needs_bars
        self._audit = audit
        self.trace_each_bar = False
        self.now: ClockPoint | None = None
        self.first: ClockPoint | None = None
        self.trace = 0
        self.trace_text: str | None = None  # the trace id, formatted when first needed
        self.resume: datetime | None = None  # see `replaying`: events up to it were handled

    def advance(self, date: Any, bar: int | None) -> ClockPoint:
        """Move the clock to (date, bar); a new bar starts a new trace and flushes the audit."""
        now = self.now
        # a date or text of the same moment: same trace
        moment = date if type(date) is datetime else to_datetime(date, "date")
        if now is not None and now.bar == bar and now.date == moment:
            return now
        point = ClockPoint(moment, None if bar is None else int(bar))
        if bar is None and self._needs_bars:
            raise ValueError(
                f"bar is required: profile {self._profile_name!r} counts durations in bars, "
                f"and the event of {point.date.date()} came without its bar index."
            )
        if now is not None and (
            point.date < now.date or (bar is not None and now.bar is not None and bar < now.bar)
        ):
            raise ValueError(
                f"event of {point.describe()} is earlier than the last event "
                f"({now.describe()}): events must come in backtest order."
            )
        if self.first is None:
            self.first = point
        elif self.trace_each_bar and bar is not None and now is not None and now.bar is not None:
            self.trace += max(bar - now.bar - 1, 0)  # the bars passed without an event
        self.now = point
        self.new_trace()
        return point

    def new_trace(self) -> None:
        self.trace += 1
        self.trace_text = None
        if self._audit is not None:
            self._audit.flush()

    def trace_id(self) -> str | None:
        """The current trace id, `"<date of the clock>#<trace number>"`; None before any event.

        Most bars make no record: the text is formatted on first use, then kept in
        `trace_text` (which the decision path reads first)."""
        text = self.trace_text
        if text is None and self.now is not None:
            text = self.trace_text = f"{self.now.date.date().isoformat()}#{self.trace}"
        return text

    def query_point(self, date: Any, bar: int | None) -> ClockPoint:
        """A clock point for read-only questions: `bar` defaults to the last bar seen."""
        if bar is None and self.now is not None:
            bar = self.now.bar
        return ClockPoint(to_datetime(date, "date"), bar)

    def last_point(self) -> ClockPoint:
        """The clock of the last event (the epoch before any): where run-level records go."""
        return self.now or ClockPoint(to_datetime("1970-01-01"))

    def replaying(self, date: Any) -> bool:
        """Whether an event dated `date` was handled before a restart (then it is ignored);
        the first later event ends the replay."""
        resume = self.resume
        if resume is None:
            return False
        if to_datetime(date, "date") <= resume:
            return True
        self.resume = None
        return False
