"""The order gate: one order's arguments and the position it acts on -> the request the
orchestrator judges; its decision -> the size to send, or none (a rejection).

Plain values in, plain values out: no backtrader here (the mixin, `mixin.py`, is the adapter
that reads backtrader's objects and sends or rejects the order), so every order shape is
unit-tested without cerebro (tests/test_gate.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from bt_protection.models import Action, ProtectionDecision, ProtectionRequest, derive_action

# backtrader's `bt.Order` exectypes (tests/test_gate.py checks them against backtrader's)
MARKET, CLOSE, LIMIT, STOP, STOP_LIMIT, STOP_TRAIL, STOP_TRAIL_LIMIT = range(7)

# Stop orders and bracket children are contingent: they may never execute. Those that only
# reduce the position they act on are safety exits (exempt) and do not count as live orders.
STOP_EXECTYPES = frozenset({STOP, STOP_LIMIT, STOP_TRAIL, STOP_TRAIL_LIMIT})
_REDUCING = frozenset({Action.CLOSE, Action.DECREASE})

# The order keywords of the protection, taken out before the order reaches backtrader.
ORDER_EXTRAS = ("protection_exempt", "protection_reason", "protection_score")

# The arguments of bt.Strategy.buy/sell after `data` and `size`, in order, with their defaults.
ORDER_DEFAULTS: dict[str, Any] = {
    "price": None,
    "plimit": None,
    "exectype": None,
    "valid": None,
    "tradeid": 0,
    "oco": None,
    "trailamount": None,
    "trailpercent": None,
    "parent": None,
    "transmit": True,
}


def order_arguments(positional: tuple[Any, ...], keywords: dict[str, Any]) -> dict[str, Any]:
    """Bind backtrader's order arguments as `Strategy.buy` would; they leave `keywords`."""
    if len(positional) > len(ORDER_DEFAULTS):
        raise TypeError(
            f"buy/sell take at most {len(ORDER_DEFAULTS) + 2} positional arguments after self."
        )
    bound = dict(ORDER_DEFAULTS)
    for name, value in zip(ORDER_DEFAULTS, positional, strict=False):
        if name in keywords:
            raise TypeError(f"buy/sell got multiple values for argument {name!r}.")
        bound[name] = value
    for name in keywords.keys() & ORDER_DEFAULTS.keys():
        bound[name] = keywords.pop(name)
    return bound


class _Executed(Protocol):
    @property
    def size(self) -> float: ...


class LiveOrder(Protocol):
    """What the gate reads of a sent order: its signed size, the size executed so far and
    whether it is still alive (not completed, cancelled, rejected or expired)."""

    @property
    def size(self) -> float: ...

    @property
    def executed(self) -> _Executed: ...

    def alive(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class RefusedParent:
    """A bracket parent the protection denied: its signed size, side, attempt and reason."""

    size: float
    isbuy: bool
    attempt: int | None
    reason: str | None

    @property
    def refusal(self) -> str:
        """The reason its children are refused with."""
        why = f": {self.reason}" if self.reason is not None else "."
        side = "buy" if self.isbuy else "sell"
        return (
            f"Rejected with its bracket parent: the parent {side} (attempt "
            f"{self.attempt}) was denied{why}"
        )


class GatedOrder(NamedTuple):  # a tuple, not a frozen dataclass: built for every order
    """An order put to the orchestrator: the `request`, the `refusal` it must get whatever
    the rules say (the child of a denied parent; None otherwise) and whether, once sent, it
    counts as a live order (`tracked`: all but the contingent safety exits)."""

    request: ProtectionRequest
    refusal: str | None
    tracked: bool


def size_to_send(decision: ProtectionDecision) -> float | None:
    """The unsigned size to send: the allowed part of a partly approved order, all of an
    approved one; None for a denied order (it is rejected)."""
    return abs(decision.approved_size) if decision.approved else None


class OrderGate:
    """Turn orders into requests on the position they act on: the broker's position plus
    what the live orders sent through the gate still add (a pending order counts before
    it fills, a partly filled one for its rest)."""

    __slots__ = ("_live",)

    def __init__(self) -> None:
        self._live: dict[str, list[LiveOrder]] = {}

    def live_size(self, asset: str) -> float:
        """What the live orders on `asset` (sent, not yet completed, cancelled, rejected or
        expired) still add to its position."""
        live = self._live.get(asset)
        if not live:
            return 0.0
        live[:] = [o for o in live if o.alive()]
        return float(sum(o.size - o.executed.size for o in live))

    def request(
        self,
        asset: str,
        when: datetime,
        bar: int,
        isbuy: bool,
        size: float,
        position: float,
        *,
        exectype: int | None = None,
        has_parent: bool = False,
        refused_parent: RefusedParent | None = None,
        exempt: bool = False,
        reason: str | None = None,
        score: float | None = None,
        metadata: dict[str, Any],
    ) -> GatedOrder:
        """The request for an order of `size` (either sign; `isbuy` gives the side) on
        `asset`, whose broker position is `position`.

        A stop order or a bracket child that only reduces the position is a safety exit
        (exempt). The child of a denied parent is judged on the position the parent would
        have left and is refused with it. The request takes `metadata` as it is (the caller
        makes it for this order).
        """
        current = position + self.live_size(asset)
        refusal = None
        if refused_parent is not None:
            current += refused_parent.size
            refusal = refused_parent.refusal
        target = current + (abs(size) if isbuy else -abs(size))
        contingent = has_parent or exectype in STOP_EXECTYPES
        action = derive_action(current, target)
        exempt = refusal is None and (bool(exempt) or (contingent and action in _REDUCING))
        request = ProtectionRequest.trusted(
            asset,
            when,
            float(current),
            float(target),
            action,
            reason or "",
            score,
            bar,
            exempt,
            metadata,
        )
        # `GatedOrder(...)` without the named tuple's Python-level `__new__`: one per order
        return tuple.__new__(GatedOrder, (request, refusal, not (contingent and exempt)))

    def is_live(self, asset: str, order: LiveOrder) -> bool:
        """Whether `order` counts among the live orders of `asset` (a paper save keeps this)."""
        return any(o is order for o in self._live.get(asset, ()))

    def restore_live(self, live: dict[str, list[LiveOrder]]) -> None:
        """Replace the live orders with `live` (a paper broker restored at its saved bar)."""
        self._live = {asset: list(orders) for asset, orders in live.items()}

    def sent(self, gated: GatedOrder, order: LiveOrder | None) -> None:
        """Count an order sent to the broker as live, when it is one that counts."""
        if order is not None and gated.tracked:
            self._live.setdefault(gated.request.asset, []).append(order)
