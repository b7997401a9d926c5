"""The backtrader side of `bt-protection paper`: a paper broker saved with the protection state.

`paper_strategy` subclasses a protected strategy so that each save of its `protection_state`
(at the end of every bar) also writes, in the same transaction, the paper broker (cash,
positions, open orders, the next order ref), the audit log's size and the orders.csv rows that
changed. Resumed on the same data, the bars up to the saved one are run again as a backfill
without audit or saves (the strategy's own variables are rebuilt as they were); at the end of
the saved bar the protection state and the broker are replaced by those of the file, so the
later bars run as in an uninterrupted run from what the file holds (docs/live.md).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import backtrader as bt

from bt_protection.audit import AuditLog, AuditResume
from bt_protection.errors import UserError
from bt_protection.integration.mixin import ProtectionMixin, asset_name
from bt_protection.integration.recorder import OrderRecorder
from bt_protection.orchestrator import ProtectionOrchestrator
from bt_protection.state import dumps, loads

BROKER_KEY = "paper.broker"
ORDER_PREFIX = "paper.order."
# A crash drill: `<point>:<n>` makes the process SIGKILL itself at the n-th `bar` (a save
# committed), `order` (an approved decision, before the broker has the order) or `save`
# (inside a save's transaction, before it commits).
KILL_VARIABLE = "BT_PROTECTION_PAPER_KILL"
KILL_POINTS = ("bar", "order", "save")


class LiveReplay(bt.feed.DataBase):
    """A price frame (`dataname`: a DatetimeIndex and open/high/low/close/volume columns)
    replayed as a live feed: backtrader loads it bar by bar, without preload or vectorised
    indicators, as it does a live store's feed. The bars are those `PandasData` gives."""

    def islive(self) -> bool:
        return True

    def start(self) -> None:
        super().start()
        frame = self.p.dataname
        dates = [bt.date2num(t.to_pydatetime()) for t in frame.index]
        columns = [frame[c].tolist() for c in ("open", "high", "low", "close", "volume")]
        self._bars = iter(zip(dates, *columns, strict=True))

    def _load(self) -> bool:
        bar = next(self._bars, None)
        if bar is None:
            return False
        lines = self.lines
        (
            lines.datetime[0],
            lines.open[0],
            lines.high[0],
            lines.low[0],
            lines.close[0],
            lines.volume[0],
        ) = bar
        return True


@dataclass(frozen=True)
class SavedBroker:
    """The paper broker and the audit log as the last save left them."""

    record: dict[str, Any]

    @property
    def time(self) -> datetime:
        return datetime.fromisoformat(self.record["time"])

    @property
    def audit(self) -> AuditResume:
        offset, seq = self.record["audit"]
        return AuditResume(offset, seq, self.time, self.record["bar"])


class KillPoint:
    """The crash drill of `KILL_VARIABLE`, if set: counts its point and kills at the n-th."""

    def __init__(self, text: str | None) -> None:
        self.point, self.left = "", 0
        if text:
            point, _, count = text.partition(":")
            if point not in KILL_POINTS or not count.isdigit() or int(count) < 1:
                raise UserError(
                    f"{KILL_VARIABLE}={text!r} is not <point>:<n> with a point among "
                    f"{', '.join(KILL_POINTS)} and n 1 or more."
                )
            self.point, self.left = point, int(count)

    def reached(self, point: str) -> None:
        if point == self.point:
            self.left -= 1
            if self.left == 0:
                os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class PaperSession:
    """What one `paper` process knows besides the strategy: the state file, the broker saved
    in it (None on a first start), the last day to run (`until`), and the order rows changed
    since the last save."""

    state: str
    saved: SavedBroker | None
    until: date | None = None
    kill: KillPoint = field(default_factory=lambda: KillPoint(os.environ.get(KILL_VARIABLE)))
    changed: set[int] = field(default_factory=set)
    restored: set[int] = field(default_factory=set)  # refs of the orders put back
    resumed: bool = False  # the saved state and broker were taken at the saved bar
    last: tuple[datetime, int] | None = None  # the last bar run (its time and index)
    audit: tuple[str, dict[str, Any]] | None = None  # the audit log's path and fingerprint
    broker_text: str = ""  # the broker record last saved


def paper_strategy(strategy: type, session: PaperSession) -> type:
    """`strategy` (a `ProtectionMixin` subclass) with its paper broker saved with its state.
    Give it `protection_state` on a first start only: a resumed run takes the file at the end
    of the saved bar."""
    return type(strategy.__name__, (PaperHooks, strategy), {"paper": session})


class PaperHooks(ProtectionMixin):
    """The mixin hooks `paper_strategy` fills in (mixed in before the strategy)."""

    paper: PaperSession
    _protection_save_before_order = False  # the broker is saved in the same transaction

    def _protection_audit_log(self, path: str, fingerprint: dict[str, Any]) -> Any:
        if self.paper.saved is None:
            return AuditLog(path, fingerprint)
        self.paper.audit = (path, fingerprint)  # the backfill is on file already
        return None

    def _protection_setup(self) -> None:
        super()._protection_setup()
        kill = self.paper.kill
        if kill.point == "order":  # a decision of this session, not of the backfill
            self.add_protection_listener(
                lambda decision: (
                    kill.reached("order")
                    if decision.approved and self._protection_store is not None
                    else None
                )
            )

    def _next(self) -> None:  # a live feed: bar by bar, never `_oncepost`
        super()._next()  # the save at the end of the bar, once the state file is taken
        session = self.paper
        _, when, bar = self._bar_clock()
        session.last = (when, bar)
        saved = session.saved
        if saved is not None and not session.resumed:
            if when == saved.time:
                self._paper_resume(saved)
        elif self._protection_resume is None:
            session.kill.reached("bar")  # a save committed
        if session.until is not None and when.date() >= session.until:
            self.env.runstop()

    def _paper_resume(self, saved: SavedBroker) -> None:
        """Replace the protection state and the broker the backfill rebuilt by the file's."""
        session = self.paper
        session.resumed = True
        rebuilt = self.protection
        audit = None
        if session.audit is not None:
            path, fingerprint = session.audit
            audit = AuditLog(path, fingerprint, saved.audit)
        self.protection = ProtectionOrchestrator(rebuilt.profile, audit)
        self.protection.trace_each_bar = rebuilt.trace_each_bar
        self._protection_open_state(rebuilt.profile, session.state)
        restore_broker(self, saved.record)
        session.broker_text = json.dumps(saved.record, sort_keys=True)

    def _protection_records(self) -> Iterator[tuple[str, str]]:
        session = self.paper
        audit = self.protection.audit
        _, when, bar = self._bar_clock()
        position = audit.position() if audit is not None else AuditResume(0, 0)
        record = broker_record(self)
        record.update(time=when.isoformat(), bar=bar, audit=[position.offset, position.seq])
        text = json.dumps(record, sort_keys=True)
        if text != session.broker_text:
            session.broker_text = text
            yield BROKER_KEY, text
        recorder = self.analyzers.getbyname("orders")
        recorder.take_queued()
        for attempt in sorted(session.changed):
            yield order_key(attempt), json.dumps(recorder.rows[attempt])
        session.changed.clear()
        session.kill.reached("save")  # inside the transaction: nothing of this save commits


def order_key(attempt: int) -> str:
    return f"{ORDER_PREFIX}{attempt:012d}"


class PaperOrders(OrderRecorder):
    """`OrderRecorder` that marks the rows it changes (saved at the next save) and leaves out
    the orders of the backfill (bars handled before the restart)."""

    def create_analysis(self) -> None:
        super().create_analysis()
        session: PaperSession = self.strategy.paper
        self.session = session
        saved = session.saved
        self.backfill = -1.0 if saved is None else float(saved.record["number"])

    def notify_order(self, order: Any) -> None:
        if order.created.dt <= self.backfill and order.ref not in self.session.restored:
            return
        if "protection_attempt" in order.info:
            super().notify_order(order)
            self.session.changed.add(order.info.protection_attempt)

    def take_queued(self) -> None:
        """Take the notifications the broker still holds (orders of this bar): a process killed
        before the next bar would never deliver them."""
        self.stop()


# --- the broker record ----------------------------------------------------------------------


def broker_record(strategy: Any) -> dict[str, Any]:
    """The paper broker as plain data: cash, positions, open orders and the next order ref."""
    broker = strategy.broker
    # every entry, in the broker's order: its value is a float sum in that order
    positions = [
        [asset_name(data), pos.size, pos.price, pos.adjbase]
        for data, pos in broker.positions.items()
    ]
    waiting = [o for o in itertools.chain(broker.submitted, broker.pending) if o is not None]
    orders = [_order_record(strategy, o) for o in waiting if o.alive()]
    ref = next(bt.OrderBase.refbasis)  # peeked: the counter is put back at once
    bt.OrderBase.refbasis = itertools.count(ref)
    number = strategy.datetime[0]
    return {
        "cash": broker.cash,
        "positions": positions,
        "orders": orders,
        "next_ref": ref,
        "number": number,
    }


def _order_record(strategy: Any, order: Any) -> dict[str, Any]:
    if order.parent is not None or order.executed.size:
        raise UserError(
            f"order {order.ref} of {asset_name(order.data)} is a bracket child or partly "
            "executed; bt-protection paper saves plain orders only (docs/live.md)."
        )
    created = order.created
    asset = asset_name(order.data)
    return {
        "ref": order.ref,
        "asset": asset,
        "buy": bool(order.isbuy()),
        "size": abs(order.size),
        "exectype": order.exectype,
        "price": order.price,
        "pricelimit": order.pricelimit,
        "valid": order.valid,
        "dteos": order.dteos,
        "tradeid": order.tradeid,
        "trail": [order.trailamount, order.trailpercent],
        "submitted": order.status == bt.Order.Submitted,
        "created": [created.dt, created.size, created.price, created.pricelimit, created.pclose],
        "info": _info_text(order),
        "live": strategy._protection_gate.is_live(asset, order),
    }


def _info_text(order: Any) -> str:
    try:
        return dumps(dict(order.info))
    except TypeError as error:
        raise UserError(
            f"order {order.ref} of {asset_name(order.data)} carries info a state file cannot "
            f"store: {error}"
        ) from None


def restore_broker(strategy: Any, record: Mapping[str, Any]) -> None:
    """Put the paper broker back as `broker_record` gave it, at the end of the saved bar: what
    the backfill left in it (positions, orders, queued notifications) goes first."""
    broker = strategy.broker
    feeds = {asset_name(d): d for d in strategy.datas}
    broker.cash = record["cash"]
    broker.positions.clear()
    for asset, size, price, adjbase in record["positions"]:
        position = broker.positions[feeds[asset]] = bt.Position(size, price)
        position.adjbase = adjbase
    for queue in (broker.submitted, broker.pending, broker.notifs, broker._pchildren):
        queue.clear()
    broker._ocos.clear()
    broker._ocol.clear()
    live: dict[str, list[Any]] = {}
    for saved in record["orders"]:
        order = _rebuilt(strategy, feeds[saved["asset"]], saved)
        strategy.paper.restored.add(order.ref)
        order.addcomminfo(broker.getcommissioninfo(order.data))
        broker._ocoize(order, None)
        if saved["submitted"]:  # made on the saved bar: the broker sees it as it did then
            broker.submit(order)
        else:  # accepted on an earlier bar, as BackBroker.submit_accept leaves it
            broker._pchildren[order.ref].append(order)
            order.pannotated = None
            order.submit()
            order.accept()
            broker.orders.append(order)
            broker.pending.append(order)
        if saved["live"]:
            live.setdefault(saved["asset"], []).append(order)
    strategy._protection_gate.restore_live(live)
    bt.OrderBase.refbasis = itertools.count(record["next_ref"])


def _rebuilt(strategy: Any, data: Any, saved: Mapping[str, Any]) -> Any:
    kind = bt.BuyOrder if saved["buy"] else bt.SellOrder
    amount, percent = saved["trail"]
    order = kind(
        owner=strategy,
        data=data,
        size=saved["size"],
        price=saved["price"],
        pricelimit=saved["pricelimit"],
        exectype=saved["exectype"],
        tradeid=saved["tradeid"],
        trailamount=amount,
        trailpercent=percent,
    )
    order.ref = saved["ref"]
    dt, size, price, pricelimit, pclose = saved["created"]
    order.created = bt.OrderData(
        dt=dt,
        size=size,
        price=price,
        pricelimit=pricelimit,
        pclose=pclose,
        trailamount=amount,
        trailpercent=percent,
    )
    order.valid, order.dteos = saved["valid"], saved["dteos"]
    order.addinfo(**loads(saved["info"]))
    return order
