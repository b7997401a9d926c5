"""An independent checker: rebuild positions from the broker's executed orders and test the
protection rules against them (not the plugin's counters or audit).

`Executions` is an analyzer of its own: it keeps every order the strategy's `notify_order`
sees (and those still queued at the end), with the bits the broker executed, and the
decisions sent to the strategy's protection listener. `violations` replays the fills bar by
bar, with the rules written out here by hand (as docs/profiles.md states them):

- an executed, non-exempt order that closes, reverses (or, if protected, decreases) a position
  was decided at least `min_hold` after the fill that opened it;
- one that opens or reverses was decided at least `min_reentry` after the last exit and with
  fewer than `max_cycles` round trips ending within `window` (exits known at the decision);
- no executed non-exempt order reduced a core asset;
- no exempt order increased the exposure it acted on;
- every attempted order has exactly one decision.
A rule the decision says the regime override lifted is not held against the order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import backtrader as bt
import pandas as pd
from helpers import spec_action, spec_elapsed

from bt_protection.profile import Profile

REDUCING = ("close", "decrease", "reverse")


@dataclass
class Seen:
    """One order as the strategy saw it: creation and its executed bits (date, size)."""

    order: Any
    created: pd.Timestamp
    fills: list[tuple[pd.Timestamp, float]] = field(default_factory=list)
    status: str = ""


class Executions(bt.Analyzer):
    """Orders by ref with their executions; decisions as the listener received them."""

    def create_analysis(self) -> None:
        self.orders: dict[int, Seen] = {}
        self.decisions: list[Any] = []
        self.strategy.add_protection_listener(self.decisions.append)

    def notify_order(self, order: Any) -> None:
        seen = self.orders.setdefault(
            order.ref, Seen(order, pd.Timestamp(bt.num2date(order.created.dt)))
        )
        seen.status = order.getstatusname()
        for bit in order.executed.iterpending():
            if bit.size:
                seen.fills.append((pd.Timestamp(bt.num2date(bit.dt)), bit.size))

    def stop(self) -> None:
        for order in getattr(self.strategy.broker, "notifs", ()):  # queued on the last bar
            if order.owner is self.strategy:
                self.notify_order(order)

    def get_analysis(self) -> dict[str, Any]:
        return {"orders": self.orders, "decisions": self.decisions}


@dataclass
class Book:
    position: float = 0.0
    opened: tuple[int, pd.Timestamp] | None = None
    exits: list[tuple[int, pd.Timestamp]] = field(default_factory=list)


def _rules(profile: Profile) -> dict[str, Any]:
    blocks = {k: profile.protections[k] for k in profile.enabled_systems}
    rules: dict[str, Any] = {}
    if "holding_period" in blocks:
        hold = blocks["holding_period"]
        rules["hold"] = (str(hold.min_hold), {a.value for a in hold.protect})
    if "whipsaw_protection" in blocks:
        whip = blocks["whipsaw_protection"]
        rules["whipsaw"] = (whip.max_cycles, str(whip.window), str(whip.min_reentry))
    if "core_asset_immunity" in blocks:
        core = blocks["core_asset_immunity"]
        rules["core"] = (set(core.assets), {a.value for a in core.protect})
    return rules


def violations(analysis: dict[str, Any], profile: Profile, calendar: pd.DatetimeIndex) -> list:
    """Every broken promise of the module docstring, as (what, order ref, details)."""
    orders: dict[int, Seen] = analysis["orders"]
    decisions: list[Any] = analysis["decisions"]
    broken: list[tuple[str, int, str]] = []
    attempts = sorted(s.order.info.get("protection_attempt", 0) for s in orders.values())
    if attempts != list(range(1, len(decisions) + 1)):
        broken.append(("one decision per order", 0, f"{len(decisions)} decisions, {attempts}"))
    bar_of = {day: i for i, day in enumerate(calendar)}
    rules = _rules(profile)
    events = []
    for ref, seen in orders.items():
        created = bar_of[seen.created.normalize()]
        events.append(((created, 1, ref), seen, None))
        for when, size in seen.fills:
            bar = bar_of[when.normalize()]
            # a fill comes before the decisions of its bar, unless its order was made there
            # (cheat-on-close, cheat-on-open: executed after the decision that made it)
            events.append(((bar, 2 if bar == created else 0, ref), seen, (bar, when, size)))
    books: dict[str, Book] = {}
    known: dict[int, tuple[str, tuple[int, pd.Timestamp], Book]] = {}
    for (bar, _, ref), seen, fill in sorted(events, key=lambda e: e[0]):
        asset = seen.order.data._name
        book = books.setdefault(asset, Book())
        if fill is None:  # the decision: what the rules knew then
            known[ref] = (asset, (bar, seen.created), _copy(book))
            continue
        _, when, size = fill
        before, after = book.position, book.position + size
        action = spec_action(before, after)
        decision = seen.order.info.protection
        lifted = set(decision.overridden_systems)
        if decision.exempt:
            if action in ("open", "increase", "reverse"):
                broken.append(("exempt order increased exposure", ref, f"{before} -> {after}"))
        else:
            _, decided, then = known[ref]
            broken += [
                (what, ref, f"{asset} {action} {before} -> {after} at {when.date()}: {why}")
                for what, why in _broken(rules, asset, action, decided, then, lifted)
            ]
        if before != 0 and (after == 0 or (before > 0) != (after > 0)):
            book.exits.append((bar, when))
        if after == 0:
            book.opened = None
        elif before == 0 or (before > 0) != (after > 0):
            book.opened = (bar, when)
        book.position = after
    return broken


def _copy(book: Book) -> Book:
    return Book(book.position, book.opened, list(book.exits))


def _broken(
    rules: dict[str, Any],
    asset: str,
    action: str,
    decided: tuple[int, pd.Timestamp],
    book: Book,
    lifted: set[str],
) -> list[tuple[str, str]]:
    found = []
    if "core" in rules and "core_asset_immunity" not in lifted:
        assets, protect = rules["core"]
        if asset in assets and action in protect:
            found.append(("core immunity", "a core asset was reduced"))
    if "hold" in rules and "holding_period" not in lifted and book.opened is not None:
        min_hold, protect = rules["hold"]
        if action in protect and not spec_elapsed(min_hold, book.opened, decided):
            found.append(("minimum hold", f"opened {book.opened}, decided {decided}"))
    if "whipsaw" in rules and "whipsaw_protection" not in lifted and action in ("open", "reverse"):
        max_cycles, window, min_reentry = rules["whipsaw"]
        recent = [e for e in book.exits if not spec_elapsed(window, e, decided)]
        if len(recent) >= max_cycles:
            found.append(("round-trip limit", f"{len(recent)} round trips before {decided}"))
        if book.exits and not spec_elapsed(min_reentry, book.exits[-1], decided):
            found.append(("re-entry delay", f"exit {book.exits[-1]}, decided {decided}"))
    return found
