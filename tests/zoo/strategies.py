"""A zoo of strategies as backtrader users write them, one per order shape (issue 8).

Each is a plain backtrader strategy with `ProtectionMixin` first among its bases; none knows
about the checker. They trade the feeds `AAPL`, `AMZN` and `NVDA` of the sample data.
"""

from __future__ import annotations

from typing import Any

import backtrader as bt

from bt_protection.integration.mixin import ProtectionMixin
from zoo.plain import Crossing


class BracketBreakout(ProtectionMixin, bt.Strategy):
    """A close above the 20-bar high enters with a bracket: stop 4% below, target 8% above."""

    def __init__(self) -> None:
        self.high = {d: bt.ind.Highest(d.high(-1), period=20) for d in self.datas}
        self.busy: dict[Any, list[Any]] = {}

    def notify_order(self, order: Any) -> None:
        legs = self.busy.get(order.data)
        if legs and not any(leg.alive() for leg in legs):
            del self.busy[order.data]

    def next(self) -> None:
        for data in self.datas:
            if data in self.busy or self.getposition(data).size:
                continue
            price = data.close[0]
            if price > self.high[data][0]:
                self.busy[data] = self.buy_bracket(
                    data=data,
                    size=10,
                    exectype=bt.Order.Market,
                    stopprice=price * 0.96,
                    limitprice=price * 1.08,
                )


class StopEntryBreakout(ProtectionMixin, bt.Strategy):
    """Flat: a buy-stop entry at the 10-bar high, renewed each bar. Long: a protective
    sell-stop at the 10-bar low, and a close when the close falls under its 10-bar mean."""

    def __init__(self) -> None:
        self.high = {d: bt.ind.Highest(d.high, period=10) for d in self.datas}
        self.low = {d: bt.ind.Lowest(d.low, period=10) for d in self.datas}
        self.mean = {d: bt.ind.SMA(d.close, period=10) for d in self.datas}
        self.entries: dict[Any, Any] = {}
        self.guard: dict[Any, Any] = {}

    def next(self) -> None:
        for data in self.datas:
            held = self.getposition(data).size
            entry, stop = self.entries.get(data), self.guard.get(data)
            if not held:
                if stop is not None and stop.alive():
                    self.cancel(stop)
                if entry is not None and entry.alive():
                    self.cancel(entry)
                self.entries[data] = self.buy(
                    data=data, size=10, exectype=bt.Order.Stop, price=self.high[data][0]
                )
            elif stop is None or not stop.alive():
                self.guard[data] = self.sell(
                    data=data, size=held, exectype=bt.Order.Stop, price=self.low[data][0]
                )
            elif data.close[0] < self.mean[data][0]:
                self.cancel(stop)
                self.close(data=data)


class CloseSellReversal(ProtectionMixin, bt.Strategy):
    """Always in the market: a crossover of the 10 and 30-bar means reverses with
    `close()` then `sell()` (or `buy()`) in one `next`."""

    def __init__(self) -> None:
        self.cross = {
            d: bt.ind.CrossOver(bt.ind.SMA(d.close, period=10), bt.ind.SMA(d.close, period=30))
            for d in self.datas
        }

    def next(self) -> None:
        for data in self.datas:
            cross = self.cross[data][0]
            held = self.getposition(data).size
            if cross > 0 and held <= 0:
                if held:
                    self.close(data=data)
                self.buy(data=data, size=10)
            elif cross < 0 and held >= 0:
                if held:
                    self.close(data=data)
                self.sell(data=data, size=10)


class SignalLongShort(ProtectionMixin, bt.SignalStrategy):
    """`bt.SignalStrategy` with a LONGSHORT crossover signal on its first feed."""

    def __init__(self) -> None:
        fast, slow = (
            bt.ind.SMA(self.data0.close, period=10),
            bt.ind.SMA(self.data0.close, period=30),
        )
        self.signal_add(bt.SIGNAL_LONGSHORT, bt.ind.CrossOver(fast, slow))


class StopAndReverse(ProtectionMixin, bt.Strategy):
    """Short first; then always a stop order of twice the position 3% beyond the close that
    reverses it (a buy-stop above a short, a sell-stop below a long)."""

    def __init__(self) -> None:
        self.pending: dict[Any, Any] = {}

    def next(self) -> None:
        for data in self.datas:
            held = self.getposition(data).size
            order = self.pending.get(data)
            if order is not None and order.alive():
                continue
            if not held:
                self.pending[data] = self.sell(data=data, size=10)
            elif held < 0:
                price = data.close[0] * 1.03
                self.pending[data] = self.buy(
                    data=data, size=2 * -held, exectype=bt.Order.Stop, price=price
                )
            else:
                price = data.close[0] * 0.97
                self.pending[data] = self.sell(
                    data=data, size=2 * held, exectype=bt.Order.Stop, price=price
                )


class CrossTargets(ProtectionMixin, bt.Strategy):
    """`order_target_size` on a 5/15-bar crossover of each feed (run with coc or coo)."""

    def __init__(self) -> None:
        self.cross = {
            d: bt.ind.CrossOver(bt.ind.SMA(d.close, period=5), bt.ind.SMA(d.close, period=15))
            for d in self.datas
        }

    def trade(self) -> None:
        for data in self.datas:
            cross = self.cross[data][0]
            if cross:
                self.order_target_size(data=data, target=10 if cross > 0 else 0)


class CheatOnClose(CrossTargets):
    """Orders from `next`, executed at the close of their own bar (`broker.set_coc(True)`)."""

    def next(self) -> None:
        self.trade()


class CheatOnOpen(CrossTargets):
    """Orders from `next_open`, executed at the open of the bar (`cheat_on_open=True`)."""

    def next_open(self) -> None:
        self.trade()


class WeeklyFilter(ProtectionMixin, bt.Strategy):
    """Daily feeds plus an unnamed weekly resample of the first: long AAPL while the daily
    close is above the 10-week mean, flat otherwise."""

    def __init__(self) -> None:
        weekly = self.datas[-1]
        self.trend = bt.ind.SMA(weekly.close, period=10)

    def next(self) -> None:
        data = self.datas[0]
        above = data.close[0] > self.trend[0]
        held = self.getposition(data).size
        if above and not held:
            self.buy(data=data, size=10)
        elif not above and held:
            self.close(data=data)


class FractionSizer(bt.Sizer):
    """Buys `fraction` of the portfolio value; sells the whole position."""

    params = (("fraction", 0.3),)

    def _getsizing(self, comminfo: Any, cash: float, data: Any, isbuy: bool) -> int:
        if not isbuy:
            return int(self.strategy.getposition(data).size)
        return int(self.broker.getvalue() * self.p.fraction / data.close[0])


class TargetPercentPortfolio(ProtectionMixin, bt.Strategy):
    """Every 10 bars: the two feeds with the best 20-bar return at 45% each, through
    `order_target_percent` per asset (or, with `weights=True`, one `order_target_weights`);
    between rebalances, a feed that fell 5% in a bar is sold with the Sizer's `sell()`."""

    params = (("weights", False),)

    def __init__(self) -> None:
        self.momentum = {d: bt.ind.ROC(d.close, period=20) for d in self.datas}

    def next(self) -> None:
        if len(self) % 10:
            for data in self.datas:
                if self.getposition(data).size > 0 and data.close[0] < 0.95 * data.close[-1]:
                    self.sell(data=data)
            return
        ranked = sorted(self.datas, key=lambda d: -self.momentum[d][0])
        targets = {d._name: (0.45 if d in ranked[:2] else 0.0) for d in self.datas}
        if self.p.weights:
            self.order_target_weights(targets)
            return
        for data in self.datas:
            self.order_target_percent(data=data, target=targets[data._name])


class WeeklyTimer(ProtectionMixin, bt.Strategy):
    """A timer at each Monday's session start moves every feed to 30% or 0 by its 20-bar
    mean (`order_target_percent` from `notify_timer`)."""

    def __init__(self) -> None:
        self.mean = {d: bt.ind.SMA(d.close, period=20) for d in self.datas}
        self.add_timer(when=bt.timer.SESSION_START, weekdays=[1])

    def notify_timer(self, timer: Any, when: Any, *args: Any, **kwargs: Any) -> None:
        if len(self) < 20:
            return
        for data in self.datas:
            target = 0.3 if data.close[0] > self.mean[data][0] else 0.0
            self.order_target_percent(data=data, target=target)


class OptimisedCrossing(ProtectionMixin, Crossing):
    """`zoo.plain.Crossing`, protected, importable by name: optimiser processes get it."""


# --- exit safety (issue 16): strategies whose exits a strict profile can deny -------------------


class LosingShort(ProtectionMixin, bt.Strategy):
    """Short `fraction` of the portfolio in each feed; cover when the close is `stop` above
    the short's average price: all at once with `close()`, or with `half=True` half of what is
    left each bar. Flat again, it shorts anew."""

    params = (("fraction", 0.9), ("stop", 0.08), ("half", False))

    def next(self) -> None:
        share = self.p.fraction * self.broker.getvalue() / len(self.datas)
        for data in self.datas:
            position = self.getposition(data)
            if not position.size:
                size = int(share / data.close[0])
                if size > 0:
                    self.sell(data=data, size=size)
            elif position.size < 0 and data.close[0] >= position.price * (1 + self.p.stop):
                if self.p.half and position.size < -1:
                    self.buy(data=data, size=-position.size // 2)
                else:
                    self.close(data=data)


class TargetReversals(ProtectionMixin, bt.Strategy):
    """Always in the market: long above the `period`-bar mean, short below, each reversal one
    `order_target_size(±size)`: `size` shares, or (`size=None`) `fraction` of the portfolio."""

    params = (("size", None), ("fraction", 0.9), ("period", 5))

    def __init__(self) -> None:
        self.mean = {d: bt.ind.SMA(d.close, period=self.p.period) for d in self.datas}

    def next(self) -> None:
        share = self.p.fraction * self.broker.getvalue() / len(self.datas)
        for data in self.datas:
            side = 1 if data.close[0] > self.mean[data][0] else -1
            held = self.getposition(data).size
            if held * side <= 0:  # flat, or on the wrong side: reverse at once
                size = self.p.size or int(share / data.close[0])
                self.order_target_size(data=data, target=side * size)


class LongWithStop(ProtectionMixin, bt.Strategy):
    """Buy `fraction` of the portfolio in each feed; sell everything when the close falls
    `stop` under the position's average price, and buy back `wait` bars later."""

    params = (("fraction", 0.3), ("stop", 0.1), ("wait", 20))

    def __init__(self) -> None:
        self.sold: dict[Any, int] = {}

    def next(self) -> None:
        for data in self.datas:
            position = self.getposition(data)
            if not position.size:
                if len(self) - self.sold.get(data, -self.p.wait) >= self.p.wait:
                    size = int(self.p.fraction * self.broker.getvalue() / data.close[0])
                    self.buy(data=data, size=size)
            elif data.close[0] <= position.price * (1 - self.p.stop):
                self.close(data=data)
                self.sold[data] = len(self)
