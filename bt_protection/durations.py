"""Durations with units, measured on the backtest clock.

A duration D started at `s` has elapsed at `t` when `t - s >= D`: in bars the difference of
the bar indexes, in days the calendar difference of the two timestamps. A third unit,
decisions (`"3 decisions"`), counts the strategy's decisions instead of time; only a regime
override window accepts it (the profile refuses it elsewhere), and that system counts them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum


class DurationUnit(StrEnum):
    BARS = "bars"
    DAYS = "days"
    DECISIONS = "decisions"


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


_PATTERN = re.compile(
    r"^\s*(\d+)\s*(bar|bars|day|days|week|weeks|decision|decisions)\s*$", re.IGNORECASE
)
_DAYS_PER = {"bar": 0, "day": 1, "week": 7}

BARE_NUMBER_HINT = (
    'durations carry a unit: write "10 bars" (trading sessions) or "14 days" (calendar time)'
)


@dataclass(frozen=True, slots=True)
class Duration:
    """A whole number of bars or calendar days; `text` keeps the profile's spelling for
    reasons, and takes no part in equality: "2 weeks" == "14 days"."""

    amount: int
    unit: DurationUnit
    text: str = field(default="", compare=False)

    @classmethod
    def parse(cls, value: object) -> Duration:
        """Parse `"10 bars"`, `"14 days"`, `"2 weeks"` or `"3 decisions"`; bare numbers are
        refused."""
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
        if word == "decision":
            return cls(amount, DurationUnit.DECISIONS, stripped)
        return cls(amount * _DAYS_PER[word], DurationUnit.DAYS, stripped)

    def __str__(self) -> str:
        return self.text or self.canonical

    @property
    def canonical(self) -> str:
        """`"14 days"` for "2 weeks": one spelling per duration (profile.yaml, profile hash)."""
        return f"{self.amount} {self.unit.value}"

    @property
    def uses_bars(self) -> bool:
        return self.unit is DurationUnit.BARS

    @property
    def counts_decisions(self) -> bool:
        return self.unit is DurationUnit.DECISIONS

    def progress(self, start: ClockPoint, now: ClockPoint) -> int:
        """Whole bars or days from `start` to `now`."""
        unit = self.unit
        if unit is DurationUnit.BARS:
            if start.bar is None or now.bar is None:
                raise ValueError(
                    f"bar is required: this profile counts {self} and an event came without "
                    "its bar index."
                )
            return now.bar - start.bar
        if unit is DurationUnit.DECISIONS:
            raise ValueError(f"{self} counts decisions, not time on the backtest clock.")
        return (now.date - start.date).days

    def elapsed(self, start: ClockPoint, now: ClockPoint) -> bool:
        """True once `now - start >= self` (so exactly at `start + self`): whole days compare
        as the time difference does, since `amount` is a whole number of days."""
        return self.progress(start, now) >= self.amount

    def ends(self, start: ClockPoint) -> str:
        """When a duration started at `start` elapses, in words."""
        if self.unit is DurationUnit.DECISIONS:
            return f"after {self.amount} decisions from {start.describe()}"
        if self.unit is DurationUnit.BARS:
            if start.bar is None:
                return f"{self.amount} bars after {start.date.date().isoformat()}"
            return f"bar {start.bar + self.amount}"
        return (start.date + timedelta(days=self.amount)).date().isoformat()

    def describe_progress(
        self, start: ClockPoint, now: ClockPoint, progress: int | None = None
    ) -> str:
        """`"3 of 10 bars since 2020-03-02"`; `progress` when the caller has it already."""
        unit = "bars" if self.unit is DurationUnit.BARS else "days"
        if progress is None:
            progress = self.progress(start, now)
        return f"{progress} of {self.amount} {unit} since {start.describe()}"
