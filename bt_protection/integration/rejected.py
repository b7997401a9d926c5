"""Denied orders, built without backtrader's metaclass (SPEC 7 allows it).

`bt.BuyOrder(...)` spends most of its 17 us in `MetaParams` and in `Order.__getattr__`, which
resolves every parameter read by a failed attribute lookup. `RejectedOrders.build` writes the
same fields directly, in the order `OrderBase.__init__` does (the `ref` drawn from the same
counter first), and `notify` queues the same shallow clone `BackBroker.notify` would.
tests/test_rejected_order.py proves both equal, field by field, to what backtrader's own
`Strategy.buy` / `sell` create, for every order type, bracket and keyword.
"""

from __future__ import annotations

import datetime
import math
from collections import deque
from typing import Any

import backtrader as bt
from backtrader.order import OrderData
from backtrader.utils import AutoOrderedDict
from backtrader.utils.dateintern import (
    HOURS_PER_DAY,
    MINUTES_PER_DAY,
    MUSECONDS_PER_DAY,
    SECONDS_PER_DAY,
)

_TRAILING = (bt.Order.StopTrail, bt.Order.StopTrailLimit)
_NOTIFY = bt.brokers.BackBroker.notify


def _copy(obj: Any) -> Any:
    """`copy.copy` of a plain object (what `Order.clone` uses): a new instance sharing the
    values of the original's `__dict__`."""
    twin = object.__new__(type(obj))
    twin.__dict__.update(obj.__dict__)
    return twin


def _order_data(
    dt: float,
    size: float = 0,
    price: float | None = 0.0,
    pricelimit: float | None = 0.0,
    remsize: float = 0,
    pclose: float = 0.0,
    trailamount: float | None = 0.0,
    trailpercent: float | None = 0.0,
) -> Any:
    """`OrderData(...)`: the same fields set in the order `OrderData.__init__` sets them."""
    record = object.__new__(OrderData)
    record.__dict__.update(
        pclose=pclose,
        exbits=deque(),
        p1=0,
        p2=0,
        dt=dt,
        size=size,
        remsize=remsize,
        price=pricelimit if pricelimit and not price else price,
        pricelimit=pricelimit if pricelimit else price,
        trailamount=trailamount,
        trailpercent=trailpercent,
        _plimit=pricelimit,
        value=0.0,
        comm=0.0,
        margin=None,
        pnl=0.0,
        psize=0,
        pprice=0,
    )
    return record


_BLANK = _order_data(0.0).__dict__  # an empty record's fields, in `OrderData.__init__`'s order


def session_end_of_day(day: int, session: datetime.time) -> float:
    """`date2num` of the datetime `session` on the day numbered `day` (no time zone): the
    provisional end of session of an order created at that day's midnight."""
    return math.fsum(
        (
            float(day),
            session.hour / HOURS_PER_DAY,
            session.minute / MINUTES_PER_DAY,
            session.second / SECONDS_PER_DAY,
            session.microsecond / MUSECONDS_PER_DAY,
        )
    )


class RejectedOrders:
    """Builds the `Rejected` orders of one strategy; remembers each feed's end of session for
    the bar it was computed at (the one part of `OrderBase.__init__` that converts dates)."""

    def __init__(self, owner: Any) -> None:
        self._owner = owner
        self._sessions: dict[int, tuple[float, float]] = {}  # id(data) -> (bar, dteos)

    def build(
        self,
        isbuy: bool,
        data: Any,
        size: float,
        args: dict[str, Any],
        info: dict[str, Any],
        close: float | None = None,
    ) -> Any:
        """The order `Strategy.buy` (`isbuy`) or `sell` would create for `size` (positive) and
        `args` (`ORDER_DEFAULTS`' keys), with `info` added and marked `Rejected` (`close`: the
        feed's close now, when the caller read it already).

        `OrderBase.__init__`, `addinfo(**info)` and `reject()`, as plain assignments."""
        cls = bt.BuyOrder if isbuy else bt.SellOrder
        valid = args["valid"]
        if isinstance(valid, (datetime.date, datetime.timedelta)):
            return self._converted(cls, data, size, args, info)
        price, pricelimit, exectype = args["price"], args["plimit"], args["exectype"]
        trailamount, trailpercent = args["trailamount"], args["trailpercent"]
        parent = args["parent"]
        params = object.__new__(cls.params)  # `cls.params()`: order params nest no others
        params.__dict__.update(
            owner=self._owner,
            data=data,
            size=size,
            price=price,
            pricelimit=pricelimit,
            exectype=exectype,
            valid=valid,
            tradeid=args["tradeid"],
            oco=None,  # the broker keeps oco groups; the order never holds one
            trailamount=trailamount,
            trailpercent=trailpercent,
            parent=parent,
            transmit=args["transmit"],
            simulated=False,
            histnotify=False,
        )
        order = object.__new__(cls)
        fields = order.__dict__
        fields["params"] = fields["p"] = params
        fields["ref"] = next(cls.refbasis)
        fields["broker"] = None
        fields["info"] = notes = AutoOrderedDict()
        notes.update(info)  # what addinfo does, key by key
        fields["comminfo"] = None
        fields["triggered"] = False
        fields["_active"] = parent is None
        fields["status"] = bt.Order.Rejected  # reject(): no broker, executed at the bar
        fields["_plimit"] = pricelimit
        if exectype is None:
            fields["exectype"] = exectype = bt.Order.Market
        if cls.ordtype == bt.Order.Sell:
            fields["size"] = size = -size
        lines = data.lines
        pclose = lines.close[0] if close is None else close
        now = lines.datetime[0]
        created = _order_data(
            dt=now,
            size=size,
            price=pclose if not price and not pricelimit else price,
            pricelimit=pricelimit,
            pclose=pclose,
            trailamount=trailamount,
            trailpercent=trailpercent,
        )
        fields["created"] = created
        if exectype in _TRAILING:
            fields["_limitoffset"] = created.price - created.pricelimit
            start = created.price
            created.price = float("inf" * (cls.ordtype == bt.Order.Buy) or "-inf")
            order.trailadjust(start)
        else:
            fields["_limitoffset"] = 0.0
        executed = fields["executed"] = object.__new__(OrderData)  # `OrderData(now, remsize=size)`
        executed.__dict__.update(_BLANK, exbits=deque(), dt=now, remsize=size)
        fields["position"] = 0
        fields["dteos"] = self._session_end(data, now)
        return order

    def _converted(
        self, cls: Any, data: Any, size: float, args: dict[str, Any], info: dict[str, Any]
    ) -> Any:
        """The order built by backtrader's constructor: a `valid` date or time span, which it
        converts with dates, is rare enough for it."""
        order = cls(
            owner=self._owner,
            data=data,
            size=size,
            price=args["price"],
            pricelimit=args["plimit"],
            exectype=args["exectype"],
            valid=args["valid"],
            tradeid=args["tradeid"],
            trailamount=args["trailamount"],
            trailpercent=args["trailpercent"],
            parent=args["parent"],
            transmit=args["transmit"],
        )
        order.addinfo(**info)
        order.reject()
        return order

    def _session_end(self, data: Any, now: float) -> Any:
        """`OrderBase.__init__`'s provisional end of session for an order created now."""
        known = self._sessions.get(id(data))
        if known is not None and known[0] == now:
            return known[1]
        day = int(now)
        if now == day and data._tz is None:  # a daily bar at midnight: that day's session end
            end = session_end_of_day(day, data.p.sessionend)
        else:
            dtime = data.datetime.datetime(0)
            session = data.p.sessionend
            dteos = dtime.replace(
                hour=session.hour,
                minute=session.minute,
                second=session.second,
                microsecond=session.microsecond,
            )
            if dteos < dtime:  # the session ended before now: the next day's end
                dteos += datetime.timedelta(days=1)
            end = data.date2num(dteos)
        self._sessions[id(data)] = (now, end)
        return end

    @staticmethod
    def notify(broker: Any, order: Any) -> None:
        """Queue `order`'s notification as `broker.notify(order)` does; for backtrader's own
        broker, the same clone (`Order.clone`) made without `copy.copy`'s generic path."""
        if type(broker).notify is not _NOTIFY:
            broker.notify(order)
            return
        executed = order.executed
        executed.markpending()
        twin = _copy(order)
        twin.executed = _copy(executed)
        broker.notifs.append(twin)
