"""SMA crossover: per-asset trend following, the classic whipsaw victim."""

from __future__ import annotations

import backtrader as bt

from bt_protection.integration.mixin import ProtectionMixin


class SmaCrossoverSignals(bt.Strategy):
    """Per feed: buy `weight` of the portfolio when the fast SMA crosses above the slow one,
    close the position when it crosses below.

    A crossover sets what the strategy wants for the asset (long or flat) until the opposite
    crossover; while the position disagrees (the order was denied or rejected), the order is
    sent again on every bar. `weight` defaults to `0.95 / len(datas)`.

    This class has no protection: `SmaCrossover` is the same logic behind the orchestrator
    (the backtrader benchmark runs both side by side).
    """

    params = (
        ("fast", 20),
        ("slow", 50),
        ("weight", None),
    )

    def __init__(self) -> None:
        sma = bt.ind.SMA
        self.crosses = [
            bt.ind.CrossOver(sma(d.close, period=self.p.fast), sma(d.close, period=self.p.slow))
            for d in self.datas
        ]
        self.long_wanted = [False] * len(self.datas)

    def next(self) -> None:
        weight = self.p.weight if self.p.weight is not None else 0.95 / len(self.datas)
        for i, (data, cross) in enumerate(zip(self.datas, self.crosses, strict=True)):
            if cross[0] > 0:
                self.long_wanted[i] = True
            elif cross[0] < 0:
                self.long_wanted[i] = False
            held = self.getposition(data).size
            if self.long_wanted[i] and not held:
                self.order_target_percent(
                    data=data, target=weight, protection_reason="fast SMA above slow SMA"
                )
            elif not self.long_wanted[i] and held:
                self.close(data=data, protection_reason="fast SMA below slow SMA")


class SmaCrossover(ProtectionMixin, SmaCrossoverSignals):
    """`SmaCrossoverSignals` with every order asking the protection orchestrator first."""
