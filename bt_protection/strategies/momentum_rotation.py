"""Momentum rotation: hold the top K assets by trailing return, rebalanced on a fixed schedule."""

from __future__ import annotations

from collections.abc import Mapping

import backtrader as bt

from bt_protection.integration.feeds import asset_name
from bt_protection.integration.mixin import ProtectionMixin
from bt_protection.integration.rebalancer import ProtectionAwareRebalancer
from bt_protection.integration.regime import label_of


class MomentumRotation(ProtectionMixin, bt.Strategy):
    """Every `rebalance_days` bars, hold the `top_k` feeds with the highest `lookback` return.

    Momentum is `close[0] / close[-lookback] - 1` (past and current closes only); the first
    rebalance is on the first bar where every feed has `lookback` bars behind it. The top
    `top_k` are held equally weighted through `ProtectionAwareRebalancer`, which reports each
    feed's `selection_scores` (momentum minus the selection cutoff, so a score below 0 means
    "not selected": with grace `threshold: 0`, leaving the top K starts the grace and coming
    back ends it; the best-ranked assets can be promoted to core). Total invested
    weight follows the regime of the current bar: `exposure` in bull and neutral,
    `bear_exposure` in bear, `crisis_exposure` in crisis (each capped at `exposure`).
    """

    params = (
        ("rebalance_days", 21),
        ("lookback", 126),
        ("top_k", 2),
        ("exposure", 0.95),
        ("bear_exposure", 0.75),
        ("crisis_exposure", 0.5),
        ("buffer", 0.0),
    )

    def __init__(self) -> None:
        self.momentum = {
            asset_name(d): bt.ind.RateOfChange(d.close, period=self.p.lookback) for d in self.datas
        }
        self.rebalancer = ProtectionAwareRebalancer(self, buffer=self.p.buffer)
        # read in __init__, so the regime indicator is built even when the profile needs none
        self.regime_codes = self.regime.regime
        self._first = 0  # len(self) at the first bar with every momentum value

    def nextstart(self) -> None:
        self._first = len(self)  # every momentum indicator has its first value here
        self.next()

    def next(self) -> None:
        if (len(self) - self._first) % self.p.rebalance_days:
            return
        momentum = {asset: float(roc[0]) for asset, roc in self.momentum.items()}
        top = sorted(momentum, key=lambda a: (-momentum[a], a))[: self.p.top_k]
        regime = label_of(self.regime_codes[0])
        exposure = self.target_exposure(regime)
        targets = {asset: exposure / len(top) for asset in top}
        self.rebalancer.rebalance(
            targets,
            reason=f"momentum top {self.p.top_k} ({regime})",
            scores=selection_scores(momentum, self.p.top_k),
        )

    def target_exposure(self, regime: str) -> float:
        """Total invested weight for a regime label."""
        exposure: float = self.p.exposure
        if regime == "crisis":
            return min(exposure, float(self.p.crisis_exposure))
        if regime == "bear":
            return min(exposure, float(self.p.bear_exposure))
        return exposure


def selection_scores(momentum: Mapping[str, float], top_k: int) -> dict[str, float]:
    """Momentum minus the cutoff halfway between the `top_k`-th and the next momentum.

    Selected assets score above 0, the others below (an asset tied at the cutoff scores 0).
    Raw momentum would not do as a score: with grace `trigger: close` every positive score
    ends the grace, so an asset that left the top K but kept a positive momentum would have
    its grace restarted, and its close denied, at every rebalance.
    """
    ranked = sorted(momentum.values(), reverse=True)
    last = ranked[min(top_k, len(ranked)) - 1]
    below = ranked[top_k] if len(ranked) > top_k else last - 1.0
    cutoff = (last + below) / 2
    return {asset: value - cutoff for asset, value in momentum.items()}
