"""`ProtectionAwareRebalancer`: target weights in, protected `order_target_percent` orders out."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from bt_protection.errors import UserError
from bt_protection.integration.feeds import asset_name
from bt_protection.models import ProtectionDecision
from bt_protection.orchestrator import ProtectionOrchestrator


class ProtectedStrategy(Protocol):
    """What the rebalancer uses of a `ProtectionMixin` strategy (typed here, so the
    rebalancer needs no import of the mixin, which imports it)."""

    protection: ProtectionOrchestrator
    datas: list[Any]
    broker: Any

    @property
    def protection_date(self) -> Any: ...

    @property
    def protection_bar(self) -> int: ...

    def getposition(self, data: Any) -> Any: ...

    def order_target_percent(self, *args: Any, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class RebalanceResult:
    """What one `rebalance` call did, by asset.

    `approved`: targets sent to the broker (a buy scaled down to fit shows its reduced target;
    a partly approved order the weight its allowed part leads to); `clipped`: the requested
    targets of partly approved orders; `denied`: requested targets the protections refused,
    those assets stay where they are; `unchanged`: requested targets that needed no order;
    `decisions` and `orders`: of every order sent, denied ones included.
    """

    approved: dict[str, float]
    denied: dict[str, float]
    unchanged: dict[str, float]
    decisions: dict[str, ProtectionDecision]
    orders: dict[str, Any]
    clipped: dict[str, float]


@dataclass(frozen=True, eq=False)  # eq=False: comparing feeds would build a lines operation
class _Move:
    """One planned change: `asset` from weight `current` to `target` through feed `data`."""

    asset: str
    data: Any
    current: float
    target: float


class ProtectionAwareRebalancer:
    """Move a `ProtectionMixin` strategy to target portfolio weights, one decision per order.

    Call `rebalance` from the strategy's `next`. Assets held but absent from `targets` go to 0.
    Weight decreases are sent before increases (each group by asset name) so sells free cash
    first. A denied order leaves its asset where it is; the weight a denied decrease keeps is
    taken from the increases, pro rata, so the invested weight never exceeds the sum of the
    targets (no buy fails for lack of cash because a sell was held back); a sell approved in
    part keeps the weight of its clipped part the same way. Changes smaller than
    `buffer` (in weight) are skipped, except a target of 0 for a held asset.
    """

    def __init__(self, strategy: ProtectedStrategy, buffer: float = 0.0) -> None:
        # a ProtectionMixin strategy: the one kind that carries an orchestrator
        if not isinstance(getattr(strategy, "protection", None), ProtectionOrchestrator):
            raise UserError(
                f"ProtectionAwareRebalancer needs a ProtectionMixin strategy, "
                f"not {type(strategy).__name__}."
            )
        if not (math.isfinite(buffer) and buffer >= 0):
            raise UserError(f"buffer must be a weight of 0 or more, not {buffer!r}.")
        self.strategy = strategy
        self.buffer = float(buffer)
        self._counts = {"rebalances": 0, "orders": 0, "approved": 0, "partial": 0, "denied": 0}

    @property
    def stats(self) -> dict[str, float]:
        """Running totals: rebalances, orders, approved (partial ones included), partial,
        denied and approval_rate."""
        counts = self._counts
        rate = counts["approved"] / counts["orders"] if counts["orders"] else 0.0
        return {**counts, "approval_rate": rate}

    def rebalance(
        self,
        targets: Mapping[str, float],
        reason: str = "rebalance",
        scores: Mapping[str, float] | None = None,
    ) -> RebalanceResult:
        """Send the orders that take the portfolio to `targets` (weights of portfolio value).

        `scores` (optional) are reported first with `on_scores`, then each order carries its
        asset's score as `protection_score`.
        """
        strategy = self.strategy
        moves = self._plan(targets)
        if scores is not None:
            strategy.protection.on_scores(
                strategy.protection_date, scores, bar=strategy.protection_bar
            )
        scores = scores or {}
        result = RebalanceResult({}, {}, {}, {}, {}, {})
        sized = [(move, self._order_size(move)) for move in moves]
        sells = [move for move, size in sized if size < 0]
        buys = [move for move, size in sized if size > 0]
        result.unchanged.update((move.asset, move.target) for move, size in sized if not size)
        for move in sells:
            self._send(move, reason, scores.get(move.asset), result)
        held_back = sum(
            (m.current - m.target) * _kept(result.decisions[m.asset])
            for m in sells
            if m.asset in result.decisions
        )
        scale = _increase_scale(held_back, sum(m.target - m.current for m in buys))
        for move in buys:
            step = (move.target - move.current) * scale
            scaled = _Move(move.asset, move.data, move.current, move.current + step)
            if self._order_size(scaled) > 0:
                self._send(scaled, reason, scores.get(move.asset), result)
            else:
                result.unchanged[move.asset] = move.target
        self._counts["rebalances"] += 1
        return result

    def _plan(self, targets: Mapping[str, float]) -> list[_Move]:
        """One move per asset named in `targets` or held now, in asset order."""
        strategy = self.strategy
        feeds = {asset_name(d): d for d in strategy.datas}
        unknown = sorted(set(targets) - set(feeds))
        if unknown:
            raise UserError(
                f"rebalance targets name {', '.join(unknown)}, which are not feeds of this run; "
                f"feeds: {', '.join(sorted(feeds))}."
            )
        wanted = dict(targets)
        for asset, data in feeds.items():
            if asset not in wanted and strategy.getposition(data).size:
                wanted[asset] = 0.0
        total = strategy.broker.getvalue()
        moves = []
        for asset in sorted(wanted):
            target = float(wanted[asset])
            if not math.isfinite(target):
                raise UserError(
                    f"rebalance target of {asset} must be a finite weight, not {target!r}."
                )
            data = feeds[asset]
            current = strategy.broker.getvalue(datas=[data]) / total if total else 0.0
            moves.append(_Move(asset, data, current, target))
        return moves

    def _order_size(self, move: _Move) -> float:
        """The signed size `order_target_percent(target=move.target)` would order now (0: none).

        A change smaller than `buffer` orders nothing, unless it closes a held position.
        """
        strategy, data = self.strategy, move.data
        if move.target == 0:
            return -float(strategy.getposition(data).size)
        if abs(move.target - move.current) < self.buffer:
            return 0.0
        broker = strategy.broker
        target_value = move.target * broker.getvalue()
        value = broker.getvalue(datas=[data])
        size = broker.getcommissioninfo(data).getsize(data.close[0], abs(target_value - value))
        return float(size if target_value > value else -size)

    def _send(self, move: _Move, reason: str, score: float | None, result: RebalanceResult) -> None:
        """One `order_target_percent`; the mixin makes its single decision on it."""
        order = self.strategy.order_target_percent(
            data=move.data, target=move.target, protection_reason=reason, protection_score=score
        )
        if order is None:
            result.unchanged[move.asset] = move.target
            return
        decision: ProtectionDecision = order.info.protection
        result.decisions[move.asset] = decision
        result.orders[move.asset] = order
        self._counts["orders"] += 1
        if decision.partial:
            result.clipped[move.asset] = move.target
            kept = _kept(decision)
            result.approved[move.asset] = move.target + (move.current - move.target) * kept
            self._counts["approved"] += 1
            self._counts["partial"] += 1
        elif decision.approved:
            result.approved[move.asset] = move.target
            self._counts["approved"] += 1
        else:
            result.denied[move.asset] = move.target
            self._counts["denied"] += 1


def _kept(decision: ProtectionDecision) -> float:
    """The share of a requested change that stays undone: 1 denied, 0 approved, in between
    when approved in part."""
    if not decision.approved:
        return 1.0
    requested = decision.target_size - decision.current_size
    return (decision.target_size - decision.approved_target) / requested if requested else 0.0


def _increase_scale(held_back: float, increases: float) -> float:
    """The factor on weight increases that makes room for `held_back` (kept by denied sells)."""
    if held_back <= 0 or increases <= 0:
        return 1.0
    return max(0.0, (increases - held_back) / increases)
