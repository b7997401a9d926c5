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
class _Trip:
    start: ClockPoint
    peak: float
    trough: float


@register
class DrawdownGuard(Protection):
    key = "drawdown_guard"
    status_key = "drawdown_guard"
    priority = 6
    config_class = DrawdownGuardConfig
    config: DrawdownGuardConfig

    def setup(self) -> None:
        self.guards = frozenset({Action.OPEN, Action.INCREASE, Action.REVERSE})
        self._peak: float | None = None
        self._value: float | None = None
        self._trip: _Trip | None = None
        self._calm = self.constant(
            f"Portfolio drawdown below {self.config.max_drawdown:.0%} of its peak."
        )

    def check(self, request: ProtectionRequest, now: ClockPoint) -> ProtectionResult:
        trip = self._trip
        if trip is None:
            return self._calm
        drawdown = 1 - trip.trough / trip.peak
        reason = (
            f"Portfolio drawdown reached {drawdown:.1%} of the peak {trip.peak:,.0f} (max "
            f"{self.config.max_drawdown:.0%}) on {trip.start.describe()}; reduce-only "
            f"{self._resume_text(trip)}."
        )
        # a reversal may still close (the close leg reduces); opens and increases may not move
        allowed = 0.0 if request.action is Action.REVERSE else request.current_size
        return self.limit(request, allowed, reason, drawdown=drawdown, since=trip.start.date)

    def _resume_text(self, trip: _Trip) -> str:
        resume = self.config.resume
        text = f"until {resume.after.ends(trip.start)}"
        if resume.recover is not None:
            level = trip.trough + resume.recover * (trip.peak - trip.trough)
            text += f" or until the value is back to {level:,.0f}"
        return text

    def on_portfolio(self, now: ClockPoint, value: float) -> None:
        self._value = value
        trip, config = self._trip, self.config
        if trip is not None:
            trip.trough = min(trip.trough, value)
            recover = config.resume.recover
            recovered = (
                recover is not None
                and value >= trip.trough + recover * (trip.peak - trip.trough)
                and value > trip.trough
            )
            if recovered or config.resume.after.elapsed(trip.start, now):
                self.emit(
                    "drawdown_guard_resumed",
                    now,
                    {
                        "value": value,
                        "peak": trip.peak,
                        "trough": trip.trough,
                        "by": "recover" if recovered else "after",
                    },
                )
                self._trip, self._peak = None, value
            return
        if self._peak is None or value > self._peak:
            self._peak = value
            return
        if self._peak > 0 and value <= self._peak * (1 - config.max_drawdown):
            self._trip = _Trip(now, self._peak, value)
            self.emit(
                "drawdown_guard_tripped",
                now,
                {"value": value, "peak": self._peak, "drawdown": 1 - value / self._peak},
            )

    def status(self, asset: str, now: ClockPoint) -> dict[str, Any]:
        trip = self._trip
        return {
            "enabled": True,
            "reduce_only": trip is not None,
            "peak": self._peak if trip is None else trip.peak,
            "value": self._value,
            "since": None if trip is None else trip.start.date.isoformat(),
        }
