"""Exit safety (SPEC 5): valves that let a risk-reducing order through whatever the hierarchy says.

The `exit_safety` block of a profile is not a protection: it is checked after the hierarchy and
only ever turns a denial into an approval (a *risk exit*). Two valves open:

- `max_position_loss`: the position is at least this fraction under (long) or over (short) its
  average entry price. The average entry comes from the fills the orchestrator booked (opening
  fills set it, increases average it by size, decreases keep it, a reversal starts it anew at
  the reversing fill's price); the current price is the bar's close the request carries in
  `metadata["price"]`. Without either price the valve stays shut.
- `max_portfolio_drawdown`: while the portfolio value (`on_portfolio`, the broker's) is this far
  under its peak, the strategy is REDUCING: every order that only reduces exposure passes, until
  `resume` (the drawdown guard's forms: `after`, `recover`).

`reversal` says what becomes of a reversal whose open leg is denied and whose close leg may go
(`close_leg`: approved as the close alone), and `core` whether the valves lift core immunity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bt_protection.durations import ClockPoint, Duration
from bt_protection.models import ProtectionRequest
from bt_protection.protections.base import ConfigError, EventSink
from bt_protection.protections.drawdown_guard import DrawdownWatch, ResumeConfig


class Reversal(StrEnum):
    """What a reversal with a denied open leg and an allowed close leg becomes."""

    CLOSE_LEG = "close_leg"
    DENY = "deny"


class CoreValve(StrEnum):
    """Whether the valves also lift core asset immunity."""

    KEEP = "keep"
    LIFT = "lift"


def percent(fraction: float) -> str:
    """0.2 -> `20%`, 0.125 -> `12.5%`."""
    return f"{fraction * 100:.4g}%"


@dataclass(frozen=True)
class ExitSafetyConfig:
    """The `exit_safety` block of a profile (docs/profiles.md)."""

    max_position_loss: float | None = None
    max_portfolio_drawdown: float | None = None
    resume: ResumeConfig = field(default_factory=ResumeConfig)
    reversal: Reversal = Reversal.CLOSE_LEG
    core: CoreValve = CoreValve.KEEP

    def validate(self) -> None:
        for key, meaning in (
            ("max_position_loss", "of the average entry price; 0.2 means a 20% loss"),
            ("max_portfolio_drawdown", "of the peak value; 0.25 means a 25% drawdown"),
        ):
            value = getattr(self, key)
            if value is not None and not 0 < value < 1:
                raise ConfigError(
                    key, f"{key} is a fraction {meaning} (above 0, below 1), not {value:g}."
                )

    def durations(self) -> list[Duration]:
        """The durations in force (`resume.after` counts only with a drawdown valve)."""
        return [] if self.max_portfolio_drawdown is None else [self.resume.after]


def _price(request: ProtectionRequest) -> float | None:
    """The bar's close the request carries (`metadata["price"]`), if it is a positive number."""
    price = (request.metadata or {}).get("price")
    if isinstance(price, bool) or not isinstance(price, (int, float)):
        return None
    return float(price) if math.isfinite(price) and price > 0 else None


@dataclass(slots=True)
class _Entry:
    price: float  # average entry price of the units held
    long: bool


class ExitSafety:
    """The valves' state: average entry prices from booked fills, and the REDUCING state."""

    per_asset = frozenset({"entries"})  # as `Protection.per_asset`: one state-file row per asset

    def __init__(self, config: ExitSafetyConfig, emit: EventSink) -> None:
        self.config = config
        self.emit = emit
        self.lifts_core = config.core is CoreValve.LIFT
        self.close_leg = config.reversal is Reversal.CLOSE_LEG
        self.needs_prices = config.max_position_loss is not None
        self.needs_portfolio = config.max_portfolio_drawdown is not None
        self._entries: dict[str, _Entry] = {}
        self._watch = (
            None
            if config.max_portfolio_drawdown is None
            else DrawdownWatch(config.max_portfolio_drawdown, config.resume)
        )

    def state(self) -> dict[str, Any]:
        """The entries and the portfolio watch, as plain data (see `Protection.state`)."""
        return {"entries": self._entries, "watch": self._watch}

    def restore(self, state: Mapping[str, Any]) -> None:
        self._entries = dict(state["entries"])
        self._watch = state["watch"]

    def on_fill(self, asset: str, before: float, after: float, price: float | None) -> None:
        """Book a fill: the average entry price of what is held after it (unknown when a fill
        that opens or adds comes without its price)."""
        entries = self._entries
        entry = entries.get(asset)
        if after == 0:
            entries.pop(asset, None)
        elif before == 0 or (before > 0) != (after > 0):  # opened or reversed: a new entry
            if price is None:
                entries.pop(asset, None)
            else:
                entries[asset] = _Entry(float(price), after > 0)
        elif abs(after) > abs(before):  # an increase: the average by size
            if entry is None or price is None:
                entries.pop(asset, None)
            else:
                added = abs(after) - abs(before)
                entry.price = (entry.price * abs(before) + float(price) * added) / abs(after)
        # a decrease keeps the average entry of the units left

    def hold_portfolio(self, value: float) -> bool:
        """Take the portfolio `value` when it moves nothing but the value kept (see
        `DrawdownWatch.hold`): True. False: give it to `on_portfolio`."""
        watch = self._watch
        return watch is not None and watch.hold(value)

    def on_portfolio(self, now: ClockPoint, value: float) -> None:
        watch = self._watch
        if watch is None:
            return
        change = watch.update(now, value)
        if change is not None:
            kind, payload = change
            self.emit("reducing_started" if kind == "tripped" else "reducing_ended", now, payload)

    def status(self, asset: str) -> dict[str, object]:
        """The valves' view of `asset`: its average entry and whether REDUCING is on."""
        watch = self._watch
        return {
            "average_entry": self.average_entry(asset),
            "reducing": watch is not None and watch.trip is not None,
        }

    def average_entry(self, asset: str) -> float | None:
        """The average entry price of `asset`'s position (None: flat or unknown)."""
        entry = self._entries.get(asset)
        return None if entry is None else entry.price

    def valve(self, request: ProtectionRequest) -> str | None:
        """The sentence of the valve that lets `request`'s exit through (None: both shut)."""
        limit = self.config.max_position_loss
        entry = self._entries.get(request.asset)
        price = _price(request) if limit is not None else None
        if (
            limit is not None
            and entry is not None
            and price is not None
            and entry.price > 0
            and (request.current_size > 0) == entry.long
        ):
            move = (price - entry.price) / entry.price
            loss = -move if entry.long else move
            if loss >= limit:
                side, where = ("", "under") if entry.long else (" (short)", "over")
                return (
                    f"{request.asset}{side} is {loss:.1%} {where} its average entry "
                    f"{entry.price:.2f} at {price:.2f} (max_position_loss "
                    f"{percent(limit)})"
                )
        watch = self._watch
        if watch is not None and watch.trip is not None and watch.value is not None:
            trip = watch.trip
            return (
                f"the portfolio is {1 - watch.value / trip.peak:.1%} under its peak "
                f"{trip.peak:,.0f} (max_portfolio_drawdown {percent(watch.max_drawdown)}): "
                f"REDUCING since {trip.start.describe()}, {watch.resume_text(trip)}"
            )
        return None
