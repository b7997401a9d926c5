"""Plain backtrader strategies for the run shapes of issue 17 (replay, ragged calendars, NaN
closes, the optimiser, two strategies, orders in `start`, time zones, partial fills).

None knows about the plugin: a test runs each as it is (no mixin) and with `ProtectionMixin`
put first among its bases (`protected`), and compares.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import backtrader as bt

from bt_protection.integration.mixin import ProtectionMixin


@cache
def protected(strategy: type) -> type:
    """`strategy` with `ProtectionMixin` first among its bases, under the same name."""
    return type(strategy.__name__, (ProtectionMixin, strategy), {})


class Crossing(bt.Strategy):
    """Per feed: buy 10 when the `fast`-bar mean crosses above the `slow`-bar one, close when
    it crosses below; a feed is judged only on a bar of its own (ragged calendars)."""

    params = (("fast", 5), ("slow", 15))

    def __init__(self) -> None:
        self.cross = {
            d: bt.ind.CrossOver(
                bt.ind.SMA(d.close, period=self.p.fast), bt.ind.SMA(d.close, period=self.p.slow)
            )
            for d in self.datas
        }
        self.seen = {d: 0 for d in self.datas}

    def prenext(self) -> None:
        self.next()

    def next(self) -> None:
        for data in self.datas:
            if len(data) == self.seen[data] or len(data) <= self.p.slow:
                continue
            self.seen[data] = len(data)
            cross = self.cross[data][0]
            held = self.getposition(data).size
            if cross > 0 and not held:
                self.buy(data=data, size=10)
            elif cross < 0 and held:
                self.close(data=data)


class TickTrader(bt.Strategy):
    """At every call of `next` (a replayed bar is judged as it updates, day by day): long 10
    of each feed while its close is above its 4-bar mean, flat below."""

    def __init__(self) -> None:
        self.mean = {d: bt.ind.SMA(d.close, period=4) for d in self.datas}

    def next(self) -> None:
        for data in self.datas:
            above = data.close[0] > self.mean[data][0]
            held = self.getposition(data).size
            if above and not held:
                self.buy(data=data, size=10)
            elif not above and held:
                self.close(data=data)


class StartOrder(Crossing):
    """`Crossing`, with a buy of 10 of the first feed placed in `start()`. backtrader dates
    such an order at the feed's last bar (preload on), so it never executes: the first
    `next` cancels it."""

    def start(self) -> None:
        self.opening = self.buy(size=10)

    def next(self) -> None:
        if self.opening.alive():
            self.cancel(self.opening)
        super().next()


class Accumulator(bt.Strategy):
    """Every 12 bars: flat, buy 100 of the first feed (the broker fills 30 a bar); 3 bars
    later, while that order is partly filled, sell 20. `seen` keeps, for each sell, the
    broker's position and the unfilled rest of the live buy when it was placed."""

    def __init__(self) -> None:
        self.entry: Any = None
        self.seen: list[tuple[Any, float, float]] = []

    def next(self) -> None:
        step = len(self) % 12
        position = self.getposition(self.data).size
        if step == 0 and not position and (self.entry is None or not self.entry.alive()):
            self.entry = self.buy(size=100)
        elif step == 3 and self.entry is not None and self.entry.alive():
            rest = self.entry.executed.remsize
            self.seen.append((self.sell(size=20), position, rest))
        elif step == 10 and position:
            self.close()


class HoldFromDate(bt.Strategy):
    """Buys 10 at the first bar on or after `entry`, then asks to close at every bar."""

    params = (("entry", None),)

    def next(self) -> None:
        position = self.getposition(self.data).size
        if not position and self.data.datetime.date(0) >= self.p.entry and not self.orders:
            self.orders.append(self.buy(size=10))
        elif position:
            self.close()

    def start(self) -> None:
        self.orders: list[Any] = []
