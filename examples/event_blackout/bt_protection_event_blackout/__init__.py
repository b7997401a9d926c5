"""Priority 6: no new exposure to an asset around its dated events (earnings, a central bank
meeting, a product launch): `open`, `increase` and `reverse` are denied from `before` ahead of
an event to `after` past it, both days included. Exits are never held back.

```yaml
protections:
  event_blackout:
    events: {AAPL: [2019-01-29, 2019-04-30], NVDA: [2019-02-14]}
    before: "3 days"     # calendar days (events are dates)
    after: "1 days"
    protect: [open, increase, reverse]
```
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from types import MappingProxyType
from typing import Any

from bt_protection.durations import ClockPoint, Duration
from bt_protection.models import Action, ProtectionRequest, ProtectionResult
from bt_protection.protections import ConfigError, Protection, ProtectionConfig, register
from bt_protection.protections.base import check_actions

ADDING = frozenset({Action.OPEN, Action.INCREASE, Action.REVERSE})


@dataclass(frozen=True)
class EventBlackoutConfig(ProtectionConfig):
    events: Mapping[str, tuple[date, ...]] = field(default_factory=lambda: MappingProxyType({}))
    before: Duration = Duration.parse("3 days")
    after: Duration = Duration.parse("1 days")
    protect: frozenset[Action] = ADDING

    def validate(self) -> None:
        for key in ("before", "after"):
            if getattr(self, key).uses_bars:
                raise ConfigError(
                    key, f'events are dates, so {key} counts calendar days: write "3 days".'
                )
        check_actions("protect", self.protect, ADDING, "event blackout")


@register
class EventBlackout(Protection):
    key = "event_blackout"
    priority = 10
    config_class = EventBlackoutConfig
    config: EventBlackoutConfig

    def setup(self) -> None:
        self.guards = self.config.protect
        self._events = {asset: sorted(set(days)) for asset, days in self.config.events.items()}
        self._before = timedelta(days=self.config.before.amount)
        self._after = timedelta(days=self.config.after.amount)
        self._clear = self.constant("No event blackout.")

    def _event(self, asset: str, day: date) -> date | None:
        """The event whose blackout covers `day`: event - before <= day <= event + after."""
        events = self._events.get(asset, ())
        i = bisect_left(events, day - self._after)
        return events[i] if i < len(events) and events[i] - self._before <= day else None

    def _clear_from(self, asset: str, day: date) -> date:
        """The first day from `day` on that no blackout covers."""
        while (event := self._event(asset, day)) is not None:
            day = event + self._after + timedelta(days=1)
        return day

    def check(self, request: ProtectionRequest, now: ClockPoint) -> ProtectionResult:
        day = now.date.date()
        event = self._event(request.asset, day)
        if event is None:
            return self._clear
        return self.deny(
            f"{request.asset} is in the blackout around its event on {event} "
            f"({self.config.before} before to {self.config.after} after); "
            f"{request.action.value} allowed from {self._clear_from(request.asset, day)}.",
            event=event.isoformat(),
        )

    def status(self, asset: str, now: ClockPoint) -> dict[str, Any]:
        day = now.date.date()
        event = self._event(asset, day)
        return {
            "enabled": True,
            "in_blackout": event is not None,
            "event": None if event is None else event.isoformat(),
            "clear_from": self._clear_from(asset, day).isoformat(),
        }
