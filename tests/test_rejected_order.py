"""A denied order built by `RejectedOrders` (no metaclass) equals backtrader's own, field by field.

The reference is what `bt.Strategy.buy` / `sell` create for the same arguments: the order
`BackBroker.buy` / `sell` builds (its `submit` held back), then `reject()` and
`broker.notify(order)` as the mixin did before. Compared: the class, every attribute of the
order in `__dict__` order, its params, `created` / `executed` data, `info`, the queued
notification (a clone with its own `executed` sharing the execution bits) and the `ref`
drawn from backtrader's counter; over every order type, brackets, `oco`, `valid` forms,
`tradeid`, trailing stops and extra keywords. A real run checks refs and notifications.
"""

from __future__ import annotations

import datetime
import math
from functools import cache
from typing import Any

import backtrader as bt
from backtrader.order import OrderData
from hypothesis import given, settings
from hypothesis import strategies as st

from bt_protection.data import load_universe
from bt_protection.integration.feeds import add_feeds
from bt_protection.integration.gate import ORDER_DEFAULTS
from bt_protection.integration.mixin import ProtectionMixin
from bt_protection.integration.rejected import RejectedOrders, session_end_of_day
from bt_protection.shipped import PROFILES, SAMPLE_DATA
from bt_protection.strategies.sma_crossover import SmaCrossover

CONFIGS = PROFILES
EXECTYPES = [None, *range(len(bt.Order.ExecTypes) - 1)]  # every type but Historical


class Idle(ProtectionMixin, bt.Strategy):
    pass


@cache
def strategy() -> Any:
    """A strategy after a short real run: its feeds stand at their last bar."""
    frames = load_universe(SAMPLE_DATA, start="2020-01-01", end="2020-03-31")
    cerebro = bt.Cerebro(stdstats=False)
    add_feeds(cerebro, {t: frames[t] for t in ("AAPL", "AMZN")})
    cerebro.addstrategy(Idle, protection=str(CONFIGS / "off.yaml"))
    return cerebro.run()[0]


def reference(
    strat: Any, isbuy: bool, data: Any, size: float, args: dict[str, Any], info: Any
) -> Any:
    """backtrader's own order for these arguments, rejected and notified."""
    broker = strat.broker
    broker.submit = lambda order, check=True: order  # the order as BackBroker.buy built it
    try:
        create = bt.Strategy.buy if isbuy else bt.Strategy.sell
        order = create(strat, data, size, **args, **info)
    finally:
        del broker.submit
    order.reject()
    broker.notify(order)
    return order


@cache
def builder(strat: Any) -> RejectedOrders:
    return RejectedOrders(strat)


def fast(strat: Any, isbuy: bool, data: Any, size: float, args: dict[str, Any], info: Any) -> Any:
    orders = builder(strat)  # one per strategy, as the mixin has: its end-of-session cache used
    order = orders.build(isbuy, data, size, dict(ORDER_DEFAULTS, **args), dict(info))
    orders.notify(strat.broker, order)
    return order


def same(a: Any, b: Any) -> bool:
    return a == b or (
        isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    )


def fields(obj: Any) -> list[tuple[str, Any]]:
    """Every attribute in `__dict__` order, plain: params, order data and info unfolded."""
    out: list[tuple[str, Any]] = []
    for key, value in vars(obj).items():
        if key in ("p", "params"):
            value = (type(value), fields(value))
        elif isinstance(value, OrderData):
            value = (
                type(value),
                [(k, list(v) if k == "exbits" else v) for k, v in vars(value).items()],
            )
        elif key == "info":
            value = (type(value), list(value.items()))
        elif key == "ref":
            continue  # compared on its own
        out.append((key, value))
    return out


def assert_equal(mine: Any, theirs: Any) -> None:
    assert type(mine) is type(theirs)
    mine_fields, their_fields = fields(mine), fields(theirs)
    assert [k for k, _ in mine_fields] == [k for k, _ in their_fields]
    for (key, a), (_, b) in zip(mine_fields, their_fields, strict=True):
        assert repr(a) == repr(b) or same(a, b), f"{key}: {a!r} != {b!r}"
    for method in (
        "alive",
        "isbuy",
        "issell",
        "active",
        "getstatusname",
        "getordername",
        "ordtypename",
    ):
        assert getattr(mine, method)() == getattr(theirs, method)(), method
    for name in (
        "size",
        "price",
        "pricelimit",
        "exectype",
        "valid",
        "parent",
        "transmit",
        "tradeid",
    ):
        assert repr(getattr(mine, name)) == repr(getattr(theirs, name)), name


def assert_notified(strat: Any, order: Any, note: Any) -> None:
    """`note` is the notification queued for `order`: a clone, with its own `executed`."""
    assert note is not order and note.ref == order.ref
    assert note.executed is not order.executed
    assert note.executed.exbits is order.executed.exbits
    assert (note.executed.p1, note.executed.p2) == (order.executed.p1, order.executed.p2)


DAY = datetime.timedelta()
VALID = st.sampled_from(
    [
        None,
        0,
        2.5,
        datetime.date(2020, 4, 3),
        datetime.datetime(2020, 4, 3, 15),
        DAY,
        datetime.timedelta(days=3),
    ]
)
PRICE = st.one_of(st.none(), st.floats(1, 500, allow_nan=False))


@settings(max_examples=150, deadline=None)
@given(
    isbuy=st.booleans(),
    feed=st.integers(0, 1),
    size=st.one_of(st.integers(1, 1000), st.floats(0.5, 1000)),
    exectype=st.sampled_from(EXECTYPES),
    price=PRICE,
    plimit=PRICE,
    valid=VALID,
    tradeid=st.integers(0, 3),
    trail=st.sampled_from([(None, None), (2.0, None), (None, 0.05), (1.5, 0.02)]),
    bracket=st.sampled_from(["none", "parent", "oco"]),
    transmit=st.booleans(),
    extra=st.sampled_from([{}, {"note": "mine"}]),
)
def test_fast_order_equals_backtraders(
    isbuy: bool,
    feed: int,
    size: float,
    exectype: int | None,
    price: float | None,
    plimit: float | None,
    valid: Any,
    tradeid: int,
    trail: tuple[float | None, float | None],
    bracket: str,
    transmit: bool,
    extra: dict[str, Any],
) -> None:
    strat = strategy()
    data = strat.datas[feed]
    args: dict[str, Any] = {
        "price": price,
        "plimit": plimit,
        "exectype": exectype,
        "valid": valid,
        "tradeid": tradeid,
        "trailamount": trail[0],
        "trailpercent": trail[1],
        "transmit": transmit,
    }
    if bracket != "none":  # a live order of backtrader's (its oco group known to the broker)
        other = reference(strat, not isbuy, data, size, {"transmit": False}, {})
        args[bracket] = other
    info = {**extra, "protection": object(), "protection_attempt": 7}
    theirs = reference(strat, isbuy, data, size, args, info)
    their_note = strat.broker.notifs[-1]
    mine = fast(strat, isbuy, data, size, args, info)
    my_note = strat.broker.notifs[-1]
    after = reference(strat, isbuy, data, size, args, info)
    assert (theirs.ref + 1, mine.ref + 1) == (mine.ref, after.ref)  # one counter, in order
    assert_equal(mine, theirs)
    assert_equal(my_note, their_note)
    assert_notified(strat, mine, my_note)
    assert_notified(strat, theirs, their_note)


@settings(max_examples=300, deadline=None)
@given(day=st.integers(1, 3_000_000), session=st.times())
def test_the_session_end_of_a_daily_bar_is_backtraders(day: int, session: datetime.time) -> None:
    """The shortcut for a bar at midnight without a time zone gives what `OrderBase.__init__`
    converts: the bar's datetime at the session's end, as `date2num` numbers it."""
    midnight = bt.num2date(float(day))
    session_end = midnight.replace(
        hour=session.hour,
        minute=session.minute,
        second=session.second,
        microsecond=session.microsecond,
    )
    assert session_end_of_day(day, session) == bt.date2num(session_end)


def test_a_real_run_numbers_and_notifies_denied_orders_as_backtrader() -> None:
    """sma_crossover asking every bar under `balanced`: every order the strategy's calls
    return takes the next ref, and each denied one reaches notify_order once, Rejected."""
    frames = load_universe(SAMPLE_DATA, start="2015-01-01", end="2017-12-31")
    returned: list[Any] = []
    notified: list[Any] = []

    class Watched(SmaCrossover):
        def _protected_order(self, *args: Any, **kwargs: Any) -> Any:
            order = super()._protected_order(*args, **kwargs)
            returned.append(order)
            return order

        def notify_order(self, order: Any) -> None:
            notified.append(order)

    cerebro = bt.Cerebro(stdstats=False)
    add_feeds(cerebro, frames)
    cerebro.broker.setcash(100_000)
    cerebro.addstrategy(Watched, protection=str(CONFIGS / "balanced.yaml"), retry_every=1)
    cerebro.run()
    refs = [o.ref for o in returned if o is not None]
    assert refs == list(range(refs[0], refs[0] + len(refs)))
    denied = [o for o in returned if o is not None and o.status == bt.Order.Rejected]
    assert len(denied) > 20
    rejections = [o for o in notified if o.status == bt.Order.Rejected]
    last = max(o.created.dt for o in returned if o is not None)
    unseen = denied[len(rejections) :]  # denied at the last bar: the run ends before notify
    assert all(o.created.dt == last for o in unseen)
    denied = denied[: len(rejections)]
    assert [o.ref for o in rejections] == [o.ref for o in denied]
    for order, note in zip(denied, rejections, strict=True):
        assert note is not order
        assert note.info["protection"] is order.info["protection"]
        assert not note.info["protection"].approved
        assert note.executed.dt == note.created.dt == order.created.dt


def test_in_a_real_run_each_denied_order_equals_backtraders() -> None:
    """At every denial of a real run (the feeds moving bar by bar), backtrader's own order for
    the same arguments, built right after, equals the one the strategy got."""
    frames = load_universe(SAMPLE_DATA, start="2016-01-01", end="2016-12-31")
    pairs: list[tuple[Any, Any, Any, Any]] = []

    class Twin(SmaCrossover):
        def _rejected(
            self, isbuy: bool, data: Any, size: float, args: Any, info: Any, close: Any
        ) -> Any:
            mine = super()._rejected(isbuy, data, size, args, info, close)
            my_note = self.broker.notifs[-1]
            given = {k: v for k, v in args.items() if v is not ORDER_DEFAULTS[k]}
            theirs = reference(self, isbuy, data, size, given, info)
            pairs.append((mine, my_note, theirs, self.broker.notifs.pop()))
            return mine

    cerebro = bt.Cerebro(stdstats=False)
    add_feeds(cerebro, frames)
    cerebro.broker.setcash(100_000)
    cerebro.addstrategy(Twin, protection=str(CONFIGS / "balanced.yaml"), retry_every=1)
    cerebro.run()
    assert len({mine.created.dt for mine, *_ in pairs}) > 5  # denials on several bars
    for mine, my_note, theirs, their_note in pairs:
        assert theirs.ref == mine.ref + 1
        assert_equal(mine, theirs)
        assert_equal(my_note, their_note)
