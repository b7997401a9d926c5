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
- every attempted order has exactly one decision;
- with `exit_safety.max_position_loss` (given the closes): no close, decrease or reversal of a
  position was denied while its loss against the average entry of its executed fills was at or
  beyond the limit (but by core immunity under `core: keep`); every such exit that a system
  objected to was approved as a risk exit and executed by the next bar (unless the broker
  refused it for margin, as it would without the plugin); no risk exit was approved by the
  loss valve under the limit.
A rule the decision says the regime override (or a risk exit) lifted is not held against the
order.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    # (when, size, price) of each executed bit
    fills: list[tuple[pd.Timestamp, float, float]] = field(default_factory=list)
    status: str = ""


def _day(number: float) -> pd.Timestamp:
    """The calendar date of backtrader's (UTC) date number: daily bars of a timezone-aware
    feed sit at their local midnight, a few hours later in UTC, on the same date."""
    return pd.Timestamp(bt.num2date(number)).normalize()


class Executions(bt.Analyzer):
    """Orders by ref with their executions (dated by calendar date); decisions as the
    listener received them."""

    def create_analysis(self) -> None:
        self.orders: dict[int, Seen] = {}
        self.decisions: list[Any] = []
        self.values: list[float] = []
        self.strategy.add_protection_listener(self.decisions.append)

    def notify_cashvalue(self, cash: float, value: float) -> None:
        self.values.append(value)

    def notify_order(self, order: Any) -> None:
        seen = self.orders.setdefault(order.ref, Seen(order, _day(order.created.dt)))
        seen.status = order.getstatusname()
        for bit in order.executed.iterpending():
            if bit.size:
                seen.fills.append((_day(bit.dt), bit.size, bit.price))

    def stop(self) -> None:
        for order in getattr(self.strategy.broker, "notifs", ()):  # queued on the last bar
            if order.owner is self.strategy:
                self.notify_order(order)

    def get_analysis(self) -> dict[str, Any]:
        return {"orders": self.orders, "decisions": self.decisions, "values": self.values}


@dataclass
class Book:
    position: float = 0.0
    opened: tuple[int, pd.Timestamp] | None = None
    exits: list[tuple[int, pd.Timestamp]] = field(default_factory=list)
    entry: float = 0.0  # average entry price of the position, by hand

    def fill(self, size: float, price: float) -> None:
        """Opening and reversing fills set the entry, increases average it, decreases keep it."""
        before, after = self.position, self.position + size
        if after == 0:
            self.entry = 0.0
        elif before == 0 or (before > 0) != (after > 0):
            self.entry = price
        elif abs(after) > abs(before):
            self.entry = (self.entry * abs(before) + price * abs(size)) / abs(after)

    def loss(self, price: float) -> float:
        """The unrealised loss of the position at `price`, a fraction of its entry."""
        move = (price - self.entry) / self.entry
        return -move if self.position > 0 else move


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


def violations(
    analysis: dict[str, Any],
    profile: Profile,
    calendar: pd.DatetimeIndex | Mapping[pd.Timestamp, int],
    closes: dict[str, pd.Series] | None = None,
) -> list:
    """Every broken promise of the module docstring, as (what, order ref, details).

    `calendar`: the strategy's bars in order, or each date's bar (a replayed bar spans days);
    the exit safety rules need `closes` (each asset's closes by date).
    """
    orders: dict[int, Seen] = analysis["orders"]
    decisions: list[Any] = analysis["decisions"]
    broken: list[tuple[str, int, str]] = []
    attempts = sorted(s.order.info.get("protection_attempt", 0) for s in orders.values())
    if attempts != list(range(1, len(decisions) + 1)):
        broken.append(("one decision per order", 0, f"{len(decisions)} decisions, {attempts}"))
    bar_of = calendar if isinstance(calendar, Mapping) else {d: i for i, d in enumerate(calendar)}
    rules = _rules(profile)
    events = []
    for ref, seen in orders.items():
        created = bar_of[seen.created.normalize()]
        events.append(((created, 1, ref), seen, None))
        for when, size, price in seen.fills:
            bar = bar_of[when.normalize()]
            # a fill comes before the decisions of its bar, unless its order was made there
            # (cheat-on-close, cheat-on-open: executed after the decision that made it)
            events.append(((bar, 2 if bar == created else 0, ref), seen, (bar, when, size, price)))
    books: dict[str, Book] = {}
    known: dict[int, tuple[str, tuple[int, pd.Timestamp], Book]] = {}
    safety = profile.exit_safety if closes is not None else None
    for (bar, _, ref), seen, fill in sorted(events, key=lambda e: e[0]):
        asset = seen.order.data._name
        book = books.setdefault(asset, Book())
        if fill is None:  # the decision: what the rules knew then
            known[ref] = (asset, (bar, seen.created), _copy(book))
            if safety is not None and closes is not None:
                price = float(closes[asset].loc[seen.created.normalize()])
                broken += [
                    (what, ref, f"{asset} at {seen.created.date()}: {why}")
                    for what, why in _unsafe(safety, seen, book, price, bar, bar_of)
                ]
            continue
        _, when, size, price = fill
        before, after = book.position, book.position + size
        book.fill(size, price)
        action = spec_action(before, after)
        decision = seen.order.info.protection
        lifted = set(decision.overridden_systems) | set(decision.lifted_systems)
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
    return Book(book.position, book.opened, list(book.exits), book.entry)


def _unsafe(
    safety: Any, seen: Seen, book: Book, price: float, bar: int, bar_of: Mapping[pd.Timestamp, int]
) -> list[tuple[str, str]]:
    """The exit safety rules for one decision, against the position rebuilt by hand."""
    decision, limit = seen.order.info.protection, safety.max_position_loss
    exit_ = decision.action.value in REDUCING and book.position and book.entry
    if limit is None or not exit_ or (decision.current_size > 0) != (book.position > 0):
        return []
    loss = book.loss(price)
    found = []
    kept = safety.core.value == "keep" and "core_asset_immunity" in decision.blocking_systems
    if loss >= limit * (1 + 1e-9) and not kept:
        if not decision.approved:
            found.append(("denied at a loss", f"{loss:.1%} >= {limit:.0%}: {decision.reason}"))
        elif decision.would_block and not decision.risk_exit:
            found.append(("risk exit not recorded", f"{loss:.1%}: {decision.reason}"))
        elif (
            decision.risk_exit
            and seen.status != "Margin"  # the broker's refusal is its own
            and not any(bar_of[w.normalize()] <= bar + 1 for w, *_ in seen.fills)
        ):
            found.append(("risk exit not executed by the next bar", seen.status))
    if decision.risk_exit and "max_position_loss" in decision.reason and loss < limit * (1 - 1e-9):
        found.append(("risk exit under the limit", f"{loss:.1%} < {limit:.0%}"))
    return found


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
