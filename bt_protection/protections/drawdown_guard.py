"""Priority 6: reduce-only while the portfolio is in a deep drawdown.

The drawdown is measured on the portfolio's value every bar (`on_portfolio`: the broker's value,
cash included), from its peak, not on closed trades. When it reaches `max_drawdown` the guard
trips: opens and increases are denied (a reversal is denied, or with `partial: true` clipped to
a close), closes and decreases pass. It resumes when `resume.after` has elapsed since it tripped,
or earlier, with `resume.recover`, once the value has won back that fraction of the drawdown from
the trough. On resuming the peak restarts at the current value, so the guard trips again only on
a fresh drawdown of `max_drawdown`: it never stays tripped for good.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bt_protection.durations import ClockPoint, Duration
from bt_protection.models import Action, ProtectionRequest, ProtectionResult
from bt_protection.protections.base import ConfigError, Protection, ProtectionConfig, register


@dataclass(frozen=True)
class ResumeConfig:
    """When a tripped guard lets the strategy add exposure again (whichever comes first)."""

    after: Duration = Duration.parse("20 bars")
    recover: float | None = None

    def validate(self) -> None:
        if self.after.counts_decisions:
            raise ConfigError(
                "after",
                f"{str(self.after)!r} counts decisions; write bars or days, such as "
                '"20 bars" or "30 days".',
            )
        if self.recover is not None and not 0 < self.recover <= 1:
            raise ConfigError(
                "recover",
                f"recover is the fraction of the drawdown won back (above 0, at most 1), "
                f"not {self.recover:g}.",
            )


@dataclass(frozen=True)
class DrawdownGuardConfig(ProtectionConfig):
    max_drawdown: float = 0.2
    resume: ResumeConfig = field(default_factory=ResumeConfig)
    partial: bool = False

    def validate(self) -> None:
        if not 0 < self.max_drawdown < 1:
            raise ConfigError(
                "max_drawdown",
                f"max_drawdown is a fraction of the peak value (above 0, below 1), "
                f"not {self.max_drawdown:g}; 0.2 means a 20% drawdown.",
            )
        self.resume.validate()

    def durations(self) -> list[Duration]:
        return [self.resume.after]


@dataclass(slots=True)
class Trip:
    """A drawdown that reached its limit: when, from which peak, and the lowest value since."""

    start: ClockPoint
    peak: float
    trough: float


class DrawdownWatch:
    """The portfolio value's peak, the trip at `max_drawdown` under it, and the resume.

    `update` takes each bar's value and says what changed: `("tripped", payload)`,
    `("resumed", payload)` or None. The drawdown guard and exit safety's REDUCING state share it.
    """

    def __init__(self, max_drawdown: float, resume: ResumeConfig) -> None:
        self.max_drawdown = max_drawdown
        self.resume = resume
        self.peak: float | None = None
        self.value: float | None = None
        self.trip: Trip | None = None

    def hold(self, value: float) -> bool:
        """Take `value` when it changes nothing but the value kept (not tripped, a positive
        peak, at or under it and above the trip level: `update`'s quiet case, which needs no
        clock): True. False (a new peak, a trip, a trip running, not a finite float): nothing
        is taken; give it to `update`."""
        peak = self.peak
        if (
            self.trip is None
            and type(value) is float
            and peak is not None
            and peak > 0
            and peak * (1 - self.max_drawdown) < value <= peak
        ):
            self.value = value
            return True
        return False

    def update(self, now: ClockPoint, value: float) -> tuple[str, dict[str, Any]] | None:
        self.value = value
        trip = self.trip
        if trip is not None:
            trip.trough = min(trip.trough, value)
            recover = self.resume.recover
            recovered = (
                recover is not None
                and value >= trip.trough + recover * (trip.peak - trip.trough)
                and value > trip.trough
            )
            if recovered or self.resume.after.elapsed(trip.start, now):
                self.trip, self.peak = None, value
                return "resumed", {
                    "value": value,
                    "peak": trip.peak,
                    "trough": trip.trough,
                    "by": "recover" if recovered else "after",
                }
            return None
        if self.peak is None or value > self.peak:
            self.peak = value
            return None
        if self.peak > 0 and value <= self.peak * (1 - self.max_drawdown):
            self.trip = Trip(now, self.peak, value)
            return "tripped", {"value": value, "peak": self.peak, "drawdown": 1 - value / self.peak}
        return None

    def resume_text(self, trip: Trip) -> str:
        """`until <date>[ or until the value is back to <level>]`: when `trip` ends."""
        resume = self.resume
        text = f"until {resume.after.ends(trip.start)}"
        if resume.recover is not None:
            level = trip.trough + resume.recover * (trip.peak - trip.trough)
            text += f" or until the value is back to {level:,.0f}"
        return text


@register
class DrawdownGuard(Protection):
    key = "drawdown_guard"
    status_key = "drawdown_guard"
    priority = 6
    config_class = DrawdownGuardConfig
    config: DrawdownGuardConfig

    def setup(self) -> None:
        self.guards = frozenset({Action.OPEN, Action.INCREASE, Action.REVERSE})
        self._watch = DrawdownWatch(self.config.max_drawdown, self.config.resume)
        self.reconfigure()

    def reconfigure(self) -> None:
        self._watch.max_drawdown = self.config.max_drawdown
        self._calm = self.constant(
            f"Portfolio drawdown below {self.config.max_drawdown:.0%} of its peak."
        )

    def check(self, request: ProtectionRequest, now: ClockPoint) -> ProtectionResult:
        trip = self._watch.trip
        if trip is None:
            return self._calm
        drawdown = 1 - trip.trough / trip.peak
        reason = (
            f"Portfolio drawdown reached {drawdown:.1%} of the peak {trip.peak:,.0f} (max "
            f"{self.config.max_drawdown:.0%}) on {trip.start.describe()}; reduce-only "
            f"{self._watch.resume_text(trip)}."
        )
        # a reversal may still close (the close leg reduces); opens and increases may not move
        allowed = 0.0 if request.action is Action.REVERSE else request.current_size
        return self.limit(request, allowed, reason, drawdown=drawdown, since=trip.start.date)

    def on_portfolio(self, now: ClockPoint, value: float) -> None:
        change = self._watch.update(now, value)
        if change is not None:
            kind, payload = change
            self.emit(f"drawdown_guard_{kind}", now, payload)

    def status(self, asset: str, now: ClockPoint) -> dict[str, Any]:
        watch = self._watch
        trip = watch.trip
        return {
            "enabled": True,
            "reduce_only": trip is not None,
            "peak": watch.peak if trip is None else trip.peak,
            "value": watch.value,
            "since": None if trip is None else trip.start.date.isoformat(),
        }
