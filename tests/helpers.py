"""Builders shared by the core test modules: profiles, backtest dates, requests, orchestrators."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from bt_protection.models import ProtectionDecision, ProtectionRequest
from bt_protection.orchestrator import ProtectionOrchestrator
from bt_protection.profile import Profile, load_profile
from bt_protection.protections import registry

START = datetime(2024, 1, 1)

ALL_SYSTEMS = (
    "core_asset_immunity",
    "regime_override",
    "grace_period",
    "holding_period",
    "whipsaw_protection",
)

LIFTABLE = tuple(
    key for key, cls in registry().items() if cls.can_be_overridden and key != "regime_override"
)
"""The systems a regime override window may lift, in priority order."""


def profile(*, mode: str = "enforce", on_error: str = "deny", **blocks: dict[str, Any]) -> Profile:
    """A profile with the given protection blocks (`enabled: true` is added to each)."""
    protections = {key: {"enabled": True, **block} for key, block in blocks.items()}
    return load_profile(
        {"name": "t", "mode": mode, "on_error": on_error, "protections": protections}
    )


def orch(**blocks: dict[str, Any]) -> ProtectionOrchestrator:
    return ProtectionOrchestrator(profile(**blocks))


def day(n: int) -> datetime:
    """The backtest date `n` calendar days after START."""
    return START + timedelta(days=n)


class Clock:
    """Drives an orchestrator on one time axis: in bar mode bar i is day i, else only days count.

    `at` is a bar index in bar mode and a day offset in day mode, so one test body checks both.
    """

    def __init__(self, orchestrator: ProtectionOrchestrator, bars: bool) -> None:
        self.orch = orchestrator
        self.bars = bars

    def point(self, at: int) -> tuple[datetime, int | None]:
        return day(at), (at if self.bars else None)

    def fill(self, asset: str, at: int, before: float, after: float) -> None:
        date, bar = self.point(at)
        self.orch.on_fill(asset, date, before, after, bar=bar)

    def regime(self, at: int, label: str) -> None:
        date, bar = self.point(at)
        self.orch.on_regime(date, label, bar=bar)

    def portfolio(self, at: int, value: float) -> None:
        date, bar = self.point(at)
        self.orch.on_portfolio(date, value, bar=bar)

    def scores(self, at: int, scores: dict[str, float]) -> None:
        date, bar = self.point(at)
        self.orch.on_scores(date, scores, bar=bar)

    def ask(
        self, asset: str, at: int, current: float, target: float, **kwargs: Any
    ) -> ProtectionDecision:
        date, bar = self.point(at)
        return self.orch.can_execute_action(
            ProtectionRequest(asset, date, current, target, bar=bar, **kwargs)
        )


def unit(bars: bool, n: int) -> str:
    """A duration of `n` in the clock's unit: "n bars" or "n days"."""
    return f"{n} bars" if bars else f"{n} days"


def clock(bars: bool, **blocks: dict[str, Any]) -> Clock:
    return Clock(orch(**blocks), bars)


def result_of(decision: ProtectionDecision, system: str):
    """The result of `system` in `decision` (fails the test if it is missing)."""
    found = [r for r in decision.results if r.system == system]
    assert len(found) == 1, f"{system} has {len(found)} results in {decision}"
    return found[0]


# --- an oracle for run folders: the duration and action rules by hand, not through the package

RUN_FILES = (
    "profile.yaml",
    "summary.json",
    "equity.csv",
    "trades.csv",
    "orders.csv",
    "status.json",
)
"""The files of a run folder that must be byte-identical for identical inputs."""


def spec_elapsed(duration: str, start: tuple[int, Any], now: tuple[int, Any]) -> bool:
    """The duration rule (docs/profiles.md): D started at (bar, date) `start` has elapsed at
    `now` when now - start >= D."""
    amount, unit = duration.split()
    if unit.startswith("bar"):
        return now[0] - start[0] >= int(amount)
    return (now[1] - start[1]).days >= int(amount) * (7 if unit.startswith("week") else 1)


def spec_action(before: float, after: float) -> str:
    """The action that takes a signed position from `before` to `after`."""
    if before == 0:
        return "open"
    if after == 0:
        return "close"
    if (before > 0) != (after > 0):
        return "reverse"
    return "increase" if abs(after) > abs(before) else "decrease"


def spec_lots(lots: list[list[Any]], before: float, after: float, now: Any) -> None:
    """FIFO lots ([units, fill point]) by hand: opens and increases add a lot, decreases take
    the oldest first, a close clears them, a reversal starts one lot of the new side."""
    if after == 0 or before == 0 or (before > 0) != (after > 0):
        lots[:] = [] if after == 0 else [[abs(after), now]]
    elif abs(after) > abs(before):
        lots.append([abs(after) - abs(before), now])
    else:
        sold = abs(before) - abs(after)
        while sold > 0:
            taken = min(sold, lots[0][0])
            lots[0][0] -= taken
            sold -= taken
            if lots[0][0] == 0:
                lots.pop(0)


def spec_reduce_only(
    guard: dict[str, Any], values: Any, elapsed: Callable[[str, Any, Any], bool]
) -> bool:
    """Whether a drawdown guard block is tripped after the last of `values` ((point, value)
    pairs in bar order), by hand; `elapsed(duration, start, now)` is the caller's clock."""
    peak: float | None = None
    trip: tuple[Any, float, float] | None = None  # (start, peak, trough)
    resume = guard["resume"]
    for point, value in values:
        if trip is not None:
            start, top, trough = trip[0], trip[1], min(trip[2], value)
            trip = (start, top, trough)
            recover = resume.get("recover")
            back = (
                recover is not None
                and value > trough
                and value >= trough + recover * (top - trough)
            )
            if back or elapsed(resume["after"], start, point):
                trip, peak = None, value
        elif peak is None or value > peak:
            peak = value
        elif value <= peak * (1 - guard["max_drawdown"]):
            trip = (point, peak, value)
    return trip is not None
