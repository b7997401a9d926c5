"""ProtectionMixin: real backtrader runs on the sample data, every order path approved and denied.

Scripted strategies place given orders at given bars (bar = `len(self) - 1`) and record what a
user can observe: decisions, notified orders, broker cash/value/positions, trades. A denied
order must leave the run exactly as if it had never been placed, so the denied runs are
compared with a twin run without the order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import backtrader as bt
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bt_protection.audit import read_audit
from bt_protection.data import load_universe
from bt_protection.errors import UserError
from bt_protection.integration.analyzer import ProtectionAnalyzer
from bt_protection.integration.feeds import add_feeds
from bt_protection.integration.mixin import ProtectionMixin, bar_datetime
from bt_protection.models import ProtectionDecision
from bt_protection.shipped import PROFILES, SAMPLE_DATA
from bt_protection.strategies.sma_crossover import SmaCrossover

Step = Callable[["Scripted"], Any]

OFF: dict[str, Any] = {"name": "off", "protections": {}}
HOLD = {"name": "hold", "protections": {"holding_period": {"enabled": True, "min_hold": "20 bars"}}}
# AAPL is core (no sale); AMZN may not be re-entered within 10 bars of an exit.
DENY = {
    "name": "deny",
    "protections": {
        "core_asset_immunity": {"enabled": True, "assets": ["AAPL"]},
        "whipsaw_protection": {
            "enabled": True,
            "max_cycles": 5,
            "window": "60 days",
            "min_reentry": "10 bars",
        },
    },
}


TICKERS = ("AAPL", "AMZN")
END = "2013-07-31"


@cache
def frames(tickers: tuple[str, ...] = TICKERS, end: str = END) -> dict[str, pd.DataFrame]:
    """Sample data of `tickers` from its first day (2013-01-02) to `end`."""
    return load_universe(SAMPLE_DATA, list(tickers), end=end)


@dataclass(frozen=True)
class Notified:
    """One `notify_order` call, as the strategy saw it."""

    bar: int
    ref: int
    status: str
    asset: str
    decision: ProtectionDecision | None
    attempt: int | None
    executed: float


class Scripted(ProtectionMixin, bt.Strategy):
    """Runs `script[bar]` (callables taking the strategy) in `next`; records what it observes.

    Its `notify_order` deliberately does not call `super()`.
    """

    params = (("script", None),)

    def __init__(self) -> None:
        self.decisions: list[ProtectionDecision] = []
        self.notified: list[Notified] = []
        self.placed: dict[int, list[Any]] = {}
        self.books: list[tuple[Any, ...]] = []
        self.trades: list[tuple[int, str, int, float]] = []
        self.pending_refs: set[int] = set()

    def notify_protection(self, decision: ProtectionDecision) -> None:
        self.decisions.append(decision)

    def notify_order(self, order: Any) -> None:
        self.notified.append(
            Notified(
                len(self) - 1,
                order.ref,
                order.getstatusname(),
                order.data._name,
                order.info.get("protection"),
                order.info.get("protection_attempt"),
                order.executed.size,
            )
        )

    def notify_trade(self, trade: Any) -> None:
        self.trades.append((len(self) - 1, trade.data._name, trade.status, round(trade.pnl, 6)))

    def next(self) -> None:
        bar = len(self) - 1
        broker = self.broker
        positions = tuple(
            (d._name, broker.getposition(d).size, broker.getposition(d).price) for d in self.datas
        )
        self.books.append((bar, broker.getcash(), broker.getvalue(), positions))
        for step in (self.p.script or {}).get(bar, ()):
            self.placed.setdefault(bar, []).append(step(self))
        self.pending_refs.update(o.ref for o in broker.pending)

    def placed_orders(self, bar: int) -> list[Any]:
        """Every order object the steps of `bar` returned (bracket lists flattened)."""
        out: list[Any] = []
        for item in self.placed.get(bar, []):
            out.extend(item if isinstance(item, list) else [item])
        return out


def cerebro(tickers: tuple[str, ...] = TICKERS, end: str = END, **kw: Any) -> bt.Cerebro:
    """A cerebro on the sample feeds with 100,000 cash; `kw` are Cerebro params."""
    engine = bt.Cerebro(stdstats=False, **kw)
    add_feeds(engine, frames(tickers, end))
    engine.broker.setcash(100_000.0)
    return engine


def run(script: dict[int, list[Step]], profile: Any, strategy: type = Scripted, **kw: Any) -> Any:
    """Run `strategy` with `script` under `profile`; returns the strategy instance."""
    engine = cerebro(**kw)
    engine.addstrategy(strategy, protection=profile, script=script)
    engine.addanalyzer(ProtectionAnalyzer, _name="protection")
    return engine.run()[0]


def merge(*scripts: dict[int, list[Step]]) -> dict[int, list[Step]]:
    out: dict[int, list[Step]] = {}
    for script in scripts:
        for bar, steps in script.items():
            out.setdefault(bar, []).extend(steps)
    return out


# --- the entry points, each at bar 5 after a common setup -------------------------------------

# bar 0: buy AAPL and AMZN (fill at bar 1); bar 2: close AMZN (fill at bar 3, an exit).
SETUP: dict[int, list[Step]] = {
    0: [lambda s: s.buy(data="AAPL", size=10), lambda s: s.buy(data="AMZN", size=10)],
    2: [lambda s: s.close(data="AMZN")],
}
CALL_BAR = 5


def _bracket(side: str) -> Step:
    def step(s: Scripted) -> Any:
        data = s.getdatabyname("AMZN")
        close = data.close[0]
        low, high = (0.8 * close, 1.2 * close) if side == "buy" else (1.2 * close, 0.8 * close)
        place = s.buy_bracket if side == "buy" else s.sell_bracket
        return place(data=data, size=10, exectype=bt.Order.Market, stopprice=low, limitprice=high)

    return step


# Under DENY each call is refused: sales of AAPL by core immunity, opens of AMZN by whipsaw.
ENTRY_POINTS: dict[str, Step] = {
    "buy": lambda s: s.buy(data="AMZN", size=10),
    "sell": lambda s: s.sell(data="AAPL", size=5),
    "close": lambda s: s.close(data="AAPL"),
    "order_target_size": lambda s: s.order_target_size(data="AAPL", target=5),
    "order_target_value": lambda s: s.order_target_value(data="AAPL", target=0.0),
    "order_target_percent": lambda s: s.order_target_percent(data="AAPL", target=0.0005),
    "buy_bracket": _bracket("buy"),
    "sell_bracket": _bracket("sell"),
}
DENIER = dict.fromkeys(("buy", "buy_bracket", "sell_bracket"), "whipsaw_protection")


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_every_entry_point_is_approved_and_sent(entry: str) -> None:
    strategy = run(merge(SETUP, {CALL_BAR: [ENTRY_POINTS[entry]]}), OFF)
    orders = strategy.placed_orders(CALL_BAR)
    assert orders and all(o.status != bt.Order.Rejected for o in orders)
    for order in orders:
        decision = order.info.protection
        assert decision.approved and decision.asset == order.data._name
        assert isinstance(order.info.protection_attempt, int)
    parent = orders[0]
    assert not parent.info.protection.exempt
    assert all(o.info.protection.exempt for o in orders[1:])  # bracket children
    completed = [n for n in strategy.notified if n.ref == parent.ref and n.status == "Completed"]
    assert [n.bar for n in completed] == [CALL_BAR + 1]
    twin = run(SETUP, OFF)
    assert strategy.books[CALL_BAR + 1] != twin.books[CALL_BAR + 1]


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_every_entry_point_denied_changes_nothing(entry: str) -> None:
    strategy = run(merge(SETUP, {CALL_BAR: [ENTRY_POINTS[entry]]}), DENY)
    orders = strategy.placed_orders(CALL_BAR)
    parent = orders[0].info.protection
    assert not parent.approved
    assert parent.blocking_systems == (DENIER.get(entry, "core_asset_immunity"),)
    refs = {o.ref for o in orders}
    assert all(o.status == bt.Order.Rejected for o in orders)  # bracket children too
    assert not refs & strategy.pending_refs
    seen = [n for n in strategy.notified if n.ref in refs]
    assert {n.ref for n in seen} == refs
    assert {(n.bar, n.status) for n in seen} == {(CALL_BAR + 1, "Rejected")}
    assert all(n.decision is not None and n.attempt is not None for n in seen)
    twin = run(SETUP, DENY)
    assert strategy.books == twin.books  # cash, value, positions: bar by bar
    assert strategy.trades == twin.trades


def test_pending_order_guard_unlocks_after_a_denial() -> None:
    strategy = run({0: [lambda s: s.buy(data="AAPL", size=10)]}, HOLD, strategy=GuardedCloser)
    closes = [d for d in strategy.decisions if d.action.value == "close"]
    # opened by the fill at bar 1: denied on every bar from 2 to 20, approved at 1 + 20
    assert [d.bar for d in closes if not d.approved] == list(range(2, 21))
    assert [d.bar for d in closes if d.approved] == [21]
    assert strategy.getpositionbyname("AAPL").size == 0


class GuardedCloser(Scripted):
    """The common `if self.order: return` pattern: one order at a time, cleared when it ends."""

    def __init__(self) -> None:
        super().__init__()
        self.order = None

    def notify_order(self, order: Any) -> None:
        super().notify_order(order)
        if not order.alive():
            self.order = None

    def next(self) -> None:
        super().next()
        if self.order is None and len(self) > 2 and self.getpositionbyname("AAPL").size:
            self.order = self.close(data="AAPL")


def test_holding_counts_from_the_real_fill_bar_without_super_notify_order() -> None:
    """A limit buy placed at bar 0 fills at bar k > 1: the hold starts at k, not at 0 or 1."""
    lows = frames()["AAPL"]["low"].to_numpy()
    fill_bar = next(k for k in range(3, len(lows)) if lows[k] < lows[1:k].min())
    limit = (lows[fill_bar] + lows[1:fill_bar].min()) / 2

    def buy(s: Scripted) -> Any:
        return s.buy(data="AAPL", size=10, exectype=bt.Order.Limit, price=limit)

    def close(s: Scripted) -> Any:
        return s.close(data="AAPL")

    script = {0: [buy], fill_bar + 19: [close], fill_bar + 20: [close]}
    strategy = run(script, HOLD)
    fills = [n for n in strategy.notified if n.status == "Completed"]
    assert [(n.bar, n.executed) for n in fills] == [(fill_bar, 10), (fill_bar + 21, -10)]
    closes = [(d.bar, d.approved) for d in strategy.decisions if d.action.value == "close"]
    assert closes == [(fill_bar + 19, False), (fill_bar + 20, True)]


@pytest.mark.parametrize("how", ["protection_exempt", "Stop", "StopLimit", "StopTrail"])
def test_safety_exits_are_approved_and_marked_exempt(how: str) -> None:
    def sell(s: Scripted) -> Any:
        data = s.getdatabyname("AAPL")
        if how == "protection_exempt":
            return s.sell(data=data, size=10, protection_exempt=True)
        price = 0.5 * data.close[0]
        extra = {"StopLimit": {"plimit": 0.4 * price}, "StopTrail": {"trailamount": price}}
        exectype = getattr(bt.Order, how)
        return s.sell(data=data, size=10, exectype=exectype, price=price, **extra.get(how, {}))

    strategy = run(merge(SETUP, {CALL_BAR: [sell]}), DENY)
    (order,) = strategy.placed_orders(CALL_BAR)
    decision = order.info.protection
    assert decision.approved and decision.exempt and decision.would_block
    assert decision.blocking_systems == ("core_asset_immunity",)
    assert order.status != bt.Order.Rejected


def test_several_named_feeds_are_assets() -> None:
    tickers = ("AAPL", "AMZN", "NVDA")
    script = {0: [lambda s, d=d: s.buy(data=d, size=10) for d in tickers]}
    strategy = run(script, DENY, tickers=tickers)
    assert [d.asset for d in strategy.decisions] == list(tickers)
    assert strategy.protection.positions == dict.fromkeys(tickers, 10.0)


def test_an_unnamed_feed_among_several_is_a_user_error() -> None:
    engine = bt.Cerebro(stdstats=False)
    engine.adddata(bt.feeds.PandasData(dataname=frames()["AAPL"]), name="AAPL")
    engine.adddata(bt.feeds.PandasData(dataname=frames()["AMZN"]))
    engine.addstrategy(Scripted, protection=OFF)
    with pytest.raises(UserError, match="no name"):
        engine.run()


def test_optstrategy_runs_each_profile() -> None:
    script = merge(SETUP, {CALL_BAR: [ENTRY_POINTS["close"]]})
    engine = cerebro(maxcpus=1)
    engine.optstrategy(Scripted, protection=[DENY, OFF], script=[script])
    engine.addanalyzer(ProtectionAnalyzer, _name="protection")
    results = engine.run()
    denied = {
        r[0].params.protection["name"]: r[0].analyzers.protection.get_analysis()["denied"]
        for r in results
    }
    assert denied == {"deny": 1, "off": 0}


def test_every_attempt_has_exactly_one_decision_and_the_hook_sees_it() -> None:
    every = {CALL_BAR: list(ENTRY_POINTS.values()), CALL_BAR + 1: [ENTRY_POINTS["buy"]]}
    script = merge(SETUP, every)
    strategy = run(script, DENY)
    metrics = strategy.protection.get_performance_metrics()
    assert len(strategy.decisions) == metrics["decisions_processed"]
    assert strategy.decisions == list(strategy.analyzers.protection.decisions)
    attempts = {n.attempt for n in strategy.notified}
    assert attempts == set(range(1, len(strategy.decisions) + 1))
    assert metrics["denied"] > 0 and metrics["approved"] > 0
    for n in strategy.notified:
        assert n.decision is strategy.decisions[n.attempt - 1]


def _crossover_run(runonce: bool, preload: bool, audit: Path) -> tuple[list[dict], list[dict]]:
    """Decisions (without timings) and audit records (without `wall`) of one crossover run."""
    engine = cerebro(("AAPL", "AMZN", "NVDA"), "2014-12-31", runonce=runonce, preload=preload)
    balanced = str(PROFILES / "balanced.yaml")
    engine.addstrategy(SmaCrossover, protection=balanced, audit_path=str(audit))
    engine.addanalyzer(ProtectionAnalyzer, _name="protection")
    strategy = engine.run()[0]
    decisions = [
        {k: v for k, v in d.to_dict().items() if k != "decision_time_us"}
        for d in strategy.analyzers.protection.decisions
    ]
    return decisions, list(read_audit(audit, drop_wall=True))


def test_runonce_and_preload_give_identical_decisions_and_audit(tmp_path: Path) -> None:
    runs: dict[Any, tuple[list[dict], list[dict]]] = {
        (once, pre): _crossover_run(once, pre, tmp_path / f"{once}-{pre}.jsonl")
        for once in (True, False)
        for pre in (True, False)
    }
    runs["again"] = _crossover_run(True, True, tmp_path / "again.jsonl")
    decisions, audit = runs[(True, True)]
    assert any(not d["approved"] for d in decisions) and any(d["approved"] for d in decisions)
    assert len(audit) > len(decisions)
    for key, (other_decisions, other_audit) in runs.items():
        assert other_decisions == decisions, key
        assert other_audit == audit, key


def test_shared_data_feeds_by_name(shared_data: Path) -> None:
    """Several named ETF feeds of ../shared/data: decisions and fills by feed name."""
    tickers = ("GLD", "SPY", "TLT")
    folder = shared_data / "etf21_taa_dashboard"
    universe = load_universe(folder, list(tickers), "2020-01-01", "2020-06-30")
    engine = bt.Cerebro(stdstats=False)
    add_feeds(engine, universe)
    script = {
        0: [lambda s, t=t: s.buy(data=t, size=5) for t in tickers],
        3: [lambda s: s.close(data="SPY")],
    }
    engine.addstrategy(Scripted, protection=HOLD, script=script, regime_data="SPY")
    strategy = engine.run()[0]
    assert [(d.asset, d.approved) for d in strategy.decisions] == [
        ("GLD", True), ("SPY", True), ("TLT", True), ("SPY", False)
    ]
    assert strategy.protection.positions == dict.fromkeys(tickers, 5.0)


def test_orders_from_a_timer_belong_to_the_bar_the_feeds_moved_to() -> None:
    # the timer runs before the strategy moves to bar 1, where the bar-0 buy fills
    strategy = run({0: [lambda s: s.buy(data="AAPL", size=10)]}, HOLD, strategy=TimerBuyer)
    assert len(strategy.decisions) == 2
    assert [d.bar for d in strategy.decisions] == [0, 1]


class TimerBuyer(Scripted):
    """Buys from `notify_timer` at the session start of bar 1, where the bar-0 buy fills."""

    def __init__(self) -> None:
        super().__init__()
        self.add_timer(when=bt.timer.SESSION_START)

    def notify_timer(self, timer: Any, when: Any, *args: Any, **kwargs: Any) -> None:
        if len(self) == 1:
            self.buy(data="AMZN", size=10)


def test_order_arguments_bind_like_backtrader() -> None:
    from bt_protection.integration.gate import order_arguments

    keywords = {"exectype": bt.Order.Limit, "protection_reason": "why"}
    bound = order_arguments((101.5,), keywords)
    assert bound["price"] == 101.5
    assert bound["exectype"] == bt.Order.Limit
    assert bound["transmit"] is True and bound["tradeid"] == 0
    assert keywords == {"protection_reason": "why"}  # what backtrader keeps as order info
    with pytest.raises(TypeError, match="multiple values for argument 'price'"):
        order_arguments((1.0,), {"price": 2.0})
    with pytest.raises(TypeError, match="at most 12 positional"):
        order_arguments(tuple(range(11)), {})


@given(
    day=st.integers(min_value=1, max_value=3_652_059),
    fraction=st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=0.999999)),
)
def test_bar_datetime_equals_backtraders_num2date(day: int, fraction: float) -> None:
    number = day + fraction
    assert bar_datetime(number) == bt.num2date(number)
