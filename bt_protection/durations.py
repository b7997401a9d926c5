"""Durations with units, measured on the backtest clock.

A duration D started at `s` has elapsed at `t` when `t - s >= D`: in bars the difference of
the bar indexes, in days the calendar difference of the two timestamps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum


class DurationUnit(StrEnum):
    BARS = "bars"
    DAYS = "days"


@dataclass(frozen=True, slots=True)
class ClockPoint:
    """A moment of the backtest: its timestamp and, when known, its bar index."""

    date: datetime
    bar: int | None = None
    text: str = field(default="", compare=False, repr=False)

    def describe(self) -> str:
        # formatted on first use (most points, one per bar, are never quoted), then kept
        if not self.text:
            day = self.date.date().isoformat()
            text = day if self.bar is None else f"{day} (bar {self.bar})"
            object.__setattr__(self, "text", text)
        return self.text


_PATTERN = re.compile(r"^\s*(\d+)\s*(bar|bars|day|days|week|weeks)\s*$", re.IGNORECASE)
_DAYS_PER = {"bar": 0, "day": 1, "week": 7}

BARE_NUMBER_HINT = (
    'durations carry a unit: write "10 bars" (trading sessions) or "14 days" (calendar time)'
)


@dataclass(frozen=True, slots=True)
class Duration:
    """A whole number of bars or calendar days; `text` keeps the profile's spelling."""

    amount: int
    unit: DurationUnit
    text: str = ""

    @classmethod
    def parse(cls, value: object) -> Duration:
        """Parse `"10 bars"`, `"14 days"` or `"2 weeks"`; bare numbers are refused."""
        if isinstance(value, Duration):
            return value
        if isinstance(value, (bool, int, float)):
            raise ValueError(f"{value!r} is a bare number; {BARE_NUMBER_HINT}.")
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not a duration; {BARE_NUMBER_HINT}.")
        stripped = value.strip()
        if stripped.startswith("-"):
            raise ValueError(
                f'{value!r} is negative; write zero or more with a unit, such as "10 bars" '
                '(trading sessions) or "14 days" (calendar time).'
            )
        match = _PATTERN.match(stripped)
        if match is None:
            try:
                float(stripped)
            except ValueError:
                raise ValueError(f"{value!r} is not a duration; {BARE_NUMBER_HINT}.") from None
            raise ValueError(f"{value!r} is a bare number; {BARE_NUMBER_HINT}.")
        amount = int(match.group(1))
        word = match.group(2).lower().rstrip("s")
        if word == "bar":
            return cls(amount, DurationUnit.BARS, stripped)
        return cls(amount * _DAYS_PER[word], DurationUnit.DAYS, stripped)

    def __str__(self) -> str:
        return self.text or f"{self.amount} {self.unit.value}"

    @property
    def uses_bars(self) -> bool:
        return self.unit is DurationUnit.BARS

    def progress(self, start: ClockPoint, now: ClockPoint) -> int:
        """Whole bars or days from `start` to `now`."""
        if self.unit is DurationUnit.BARS:
            if start.bar is None or now.bar is None:
                raise ValueError(
                    f"bar is required: this profile counts {self} and an event came without "
                    "its bar index."
                )
            return now.bar - start.bar
        return (now.date - start.date).days

    def elapsed(self, start: ClockPoint, now: ClockPoint) -> bool:
        """True once `now - start >= self` (so exactly at `start + self`)."""
        if self.unit is DurationUnit.BARS:
            return self.progress(start, now) >= self.amount
        return now.date - start.date >= timedelta(days=self.amount)

    def ends(self, start: ClockPoint) -> str:
        """When a duration started at `start` elapses, in words."""
        if self.unit is DurationUnit.BARS:
            if start.bar is None:
                return f"{self.amount} bars after {start.date.date().isoformat()}"
            return f"bar {start.bar + self.amount}"
        return (start.date + timedelta(days=self.amount)).date().isoformat()

    def describe_progress(self, start: ClockPoint, now: ClockPoint) -> str:
        """`"3 of 10 bars since 2020-03-02"`."""
        unit = "bars" if self.unit is DurationUnit.BARS else "days"
        return f"{self.progress(start, now)} of {self.amount} {unit} since {start.describe()}"
