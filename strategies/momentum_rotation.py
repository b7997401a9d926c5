"""Momentum rotation: hold the top K assets by trailing return, rebalanced on a fixed schedule."""

from __future__ import annotations

import backtrader as bt

from bt_protection.integration.mixin import ProtectionMixin, asset_name
from bt_protection.integration.rebalancer import ProtectionAwareRebalancer
from bt_protection.integration.regime import label_of


class MomentumRotation(ProtectionMixin, bt.Strategy):
    """Every `rebalance_days` bars, hold the `top_k` feeds with the highest `lookback` return.

    Momentum is `close[0] / close[-lookback] - 1` (past and current closes only); the first
    rebalance is on the first bar where every feed has `lookback` bars behind it. The top
    `top_k` are held equally weighted through `ProtectionAwareRebalancer`, which also reports
    every feed's momentum as its score (so a grace `trigger: score` with `threshold: 0` starts
    on negative momentum, and the top-ranked assets can be promoted to core). Total invested
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
        self._first = 0  # len(self) at the first bar with every momentum value

    def nextstart(self) -> None:
        self._first = len(self)  # every momentum indicator has its first value here
        self.next()

    def next(self) -> None:
        if (len(self) - self._first) % self.p.rebalance_days:
            return
        scores = {asset: float(roc[0]) for asset, roc in self.momentum.items()}
        top = sorted(scores, key=lambda a: (-scores[a], a))[: self.p.top_k]
        regime = label_of(self.regime.regime[0])
        exposure = self.target_exposure(regime)
        targets = {asset: exposure / len(top) for asset in top}
        self.rebalancer.rebalance(
            targets, reason=f"momentum top {self.p.top_k} ({regime})", scores=scores
        )

    def target_exposure(self, regime: str) -> float:
        """Total invested weight for a regime label."""
        exposure = self.p.exposure
        if regime == "crisis":
            return min(exposure, self.p.crisis_exposure)
        if regime == "bear":
            return min(exposure, self.p.bear_exposure)
        return exposure
