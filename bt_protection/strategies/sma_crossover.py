"""SMA crossover: per-asset trend following, the classic whipsaw victim."""

from __future__ import annotations

import backtrader as bt

from bt_protection.integration.mixin import ProtectionMixin


class SmaCrossoverSignals(bt.Strategy):
    """Per feed: buy `weight` of the portfolio when the fast SMA crosses above the slow one,
    close the position when it crosses below.

    A crossover sets what the strategy wants for the asset (long or flat) until the opposite
    crossover; while the position disagrees, the order is sent again: on the next bar after a
    broker rejection, `retry_every` bars after a protection denied it (asking every bar would
    only collect denials). `weight` defaults to `0.95 / len(datas)`.

    This class has no protection: `SmaCrossover` is the same logic behind the orchestrator
    (the backtrader benchmark runs both side by side).
    """

    params = (
        ("fast", 20),
        ("slow", 50),
        ("weight", None),
        ("retry_every", 5),
    )

    def __init__(self) -> None:
        sma = bt.ind.SMA
        self.crosses = [
            bt.ind.CrossOver(sma(d.close, period=self.p.fast), sma(d.close, period=self.p.slow))
            for d in self.datas
        ]
        self.long_wanted = [False] * len(self.datas)
        self.retry_at = [0] * len(self.datas)  # after a denial, the bar to ask again at

    def next(self) -> None:
        weight = self.p.weight if self.p.weight is not None else 0.95 / len(self.datas)
        for i, (data, cross) in enumerate(zip(self.datas, self.crosses, strict=True)):
            if cross[0]:
                self.long_wanted[i] = cross[0] > 0
                self.retry_at[i] = 0  # a new signal is acted on at once
            held = self.getposition(data).size
            if len(self) < self.retry_at[i] or self.long_wanted[i] == bool(held):
                continue
            if self.long_wanted[i]:
                order = self.order_target_percent(
                    data=data, target=weight, protection_reason="fast SMA above slow SMA"
                )
            else:
                order = self.close(data=data, protection_reason="fast SMA below slow SMA")
            if order is not None and order.status == order.Rejected:  # denied by a protection
                self.retry_at[i] = len(self) + self.p.retry_every


class SmaCrossover(ProtectionMixin, SmaCrossoverSignals):
    """`SmaCrossoverSignals` with every order asking the protection orchestrator first."""
