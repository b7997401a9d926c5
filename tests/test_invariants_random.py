"""Random order streams through REAL backtrader runs: every protection promise, checked from the
outside (the recorded orders and the audit alone).

Each hypothesis example draws a valid profile (blocks, durations in bars and days, core assets
among the tickers, enforce or shadow mode, a fast regime indicator so overrides happen), a window
of 150-250 bars of four sample tickers, the engine mode (runonce, preload) and a script of orders
at chosen bars: `order_target_percent` to drawn weights, `close`, `buy` / `sell` of a few shares,
`close(protection_exempt=True)`, protective Stop orders, stop entries, market brackets with
stop and limit legs, `close()` then `sell()` in one bar, and cancels of live orders (several
steps often share a bar). The run's `OrderRecorder` rows, the strategy's own log of its orders
(kind, bracket parent, when cancels and margin calls ended them) and the audit file are then
replayed with this file's own clock arithmetic (not `Duration`):

- every attempted order has exactly one decision: attempts 1..N once in the orders, once in the
  audit, with the same asset, size and protection label;
- no approved order was dropped (it reached the broker: never `Rejected`; a market order made
  before the last bar was processed) and no denied order executed;
- the position each decision saw is the one the fills left plus the live orders of the asset
  (let through, not yet filled, cancelled or refused; contingent safety exits aside), and only
  stops and bracket legs that reduce it, or `protection_exempt` orders, are exempt;
- children of a denied bracket parent are denied, saying so;
- every executed, approved, non-exempt order obeys core immunity (or its floor), the holding
  period (or its lots), whipsaw, the drawdown guard and the trade budget unless the decision
  says the regime override lifted that system, in enforce mode; a partly approved order sent
  exactly its approved part, and that part obeys every rule (never below a core floor, never
  more than the ripe lots, a reversal in a drawdown only to flat);
- every denial names systems whose rule really was broken at that moment;
- shadow mode approves everything and reports would-blocks.
"""

from __future__ import annotations

import math
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import backtrader as bt
import pandas as pd
import pytest
from conftest import SAMPLE_DATA
from helpers import LIFTABLE, spec_action, spec_elapsed, spec_lots, spec_reduce_only
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bt_protection.audit import read_audit
from bt_protection.data import load_universe
from bt_protection.integration.feeds import add_feeds
from bt_protection.integration.mixin import ProtectionMixin
from bt_protection.integration.recorder import OrderRecorder

TICKERS = ("AAPL", "AMZN", "META", "NVDA")
GUARDABLE = ("close", "decrease", "reverse")
SEVERITIES = ("low", "medium", "high", "critical")
KINDS = (
    "target",
    "target",
    "target",
    "close",
    "buy",
    "sell",
    "exempt_close",
    "stop",
    "stop_entry",
    "bracket",
    "close_sell",
    "cancel",
)
CONTINGENT = ("stop", "stop_entry", "bracket_leg")  # kinds of orders that may never execute
WEIGHTS = (-0.3, -0.15, 0.0, 0.1, 0.2, 0.3)
MAX_EXAMPLES = 40
MIN_ORDERS = 600  # attempted orders checked over all the runs (about 780 at MAX_EXAMPLES = 40)
# A regime indicator that reacts within a few bars, so override windows open in short runs.
FAST_REGIME = {
    "fast_period": 5,
    "slow_period": 20,
    "vol_period": 10,
    "vol_high": 0.2,
    "vol_crisis": 0.35,
    "drawdown_period": 40,
    "drawdown_bear": 0.05,
    "drawdown_crisis": 0.1,
}
PROPERTY = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@cache
def universe() -> dict[str, pd.DataFrame]:
    return load_universe(SAMPLE_DATA, list(TICKERS), "2016-01-01", "2020-12-31")


# --------------------------------------------------------------------------- the case


@dataclass(frozen=True)
class Case:
    """One random run: profile mapping, window (first bar, number of bars), engine mode and
    the script: (bar, kind, asset, value) steps."""

    profile: dict[str, Any]
    first: int
    bars: int
    script: tuple[tuple[int, str, str, float], ...]
    runonce: bool = True
    preload: bool = True


durations = st.one_of(
    st.builds("{} bars".format, st.integers(0, 15)),
    st.builds("{} days".format, st.integers(0, 21)),
    st.sampled_from(["1 week", "2 weeks"]),
)
guarded = st.lists(st.sampled_from(GUARDABLE), min_size=1, unique=True)


def maybe(block: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any] | None]:
    return st.one_of(st.none(), block)


@st.composite
def profiles(draw: st.DrawFn) -> dict[str, Any]:
    blocks = {
        "core_asset_immunity": draw(
            maybe(
                st.fixed_dictionaries(
                    {
                        "assets": st.lists(st.sampled_from(TICKERS), max_size=2, unique=True),
                        "protect": guarded,
                    },
                    optional={"keep": st.sampled_from([0.5, 0.8]), "partial": st.booleans()},
                )
            )
        ),
        "regime_override": draw(
            maybe(
                st.fixed_dictionaries(
                    {
                        "window": durations,
                        "cooldown": durations,
                        "can_override": st.dictionaries(
                            st.sampled_from(SEVERITIES),
                            st.lists(st.sampled_from(LIFTABLE), min_size=1, unique=True),
                            min_size=1,
                        ),
                    }
                )
            )
        ),
        "grace_period": draw(
            maybe(st.fixed_dictionaries({"trigger": st.just("close"), "duration": durations}))
        ),
        "holding_period": draw(
            maybe(
                st.fixed_dictionaries(
                    {"min_hold": durations, "protect": guarded},
                    optional={"lots": st.just("fifo"), "partial": st.booleans()},
                )
            )
        ),
        "whipsaw_protection": draw(
            maybe(
                st.fixed_dictionaries(
                    {
                        "max_cycles": st.integers(1, 3),
                        "window": durations,
                        "min_reentry": durations,
                    }
                )
            )
        ),
        "drawdown_guard": draw(
            maybe(
                st.fixed_dictionaries(
                    {
                        "max_drawdown": st.sampled_from([0.03, 0.06, 0.1]),
                        "resume": st.fixed_dictionaries(
                            {"after": durations}, optional={"recover": st.sampled_from([0.5, 1.0])}
                        ),
                    },
                    optional={"partial": st.booleans()},
                )
            )
        ),
        "turnover_budget": draw(
            maybe(st.fixed_dictionaries({"window": durations, "max_trades": st.integers(2, 8)}))
        ),
    }
    return {
        "name": "random",
        "mode": draw(st.sampled_from(["enforce", "enforce", "enforce", "shadow"])),
        "protections": {k: {"enabled": True, **v} for k, v in blocks.items() if v is not None},
        "regime": {"data": draw(st.sampled_from(TICKERS)), **FAST_REGIME},
    }


@st.composite
def steps(draw: st.DrawFn, bars: int) -> tuple[int, str, str, float]:
    kind = draw(st.sampled_from(KINDS))
    value = 0.0
    if kind == "target":
        value = draw(st.sampled_from(WEIGHTS))
    elif kind in ("buy", "sell", "stop_entry", "bracket", "close_sell"):
        value = float(draw(st.integers(1, 40))) * draw(st.sampled_from([1, -1]))
    return draw(st.integers(1, bars - 1)), kind, draw(st.sampled_from(TICKERS)), value


@st.composite
def cases(draw: st.DrawFn) -> Case:
    bars = draw(st.integers(150, 250))
    first = draw(st.integers(0, len(universe()["AAPL"]) - bars))
    script = draw(st.lists(steps(bars), min_size=5, max_size=80))
    return Case(
        draw(profiles()),
        first,
        bars,
        tuple(sorted(script, key=lambda s: s[0])),
        draw(st.booleans()),
        draw(st.booleans()),
    )


# --------------------------------------------------------------------------- the run


class RandomTargets(ProtectionMixin, bt.Strategy):
    """Places the scripted orders: at bar b (0 = first), each (b, kind, asset, value) step."""

    params = (("script", ()),)

    def __init__(self) -> None:
        self.by_bar: dict[int, list[tuple[str, str, float]]] = {}
        for bar, kind, asset, value in self.p.script:
            self.by_bar.setdefault(bar, []).append((kind, asset, value))
        # the strategy's own log, by attempt (orders are numbered as they are placed):
        self.kinds: dict[int, str] = {}  # kind of the step that placed it
        self.parents: dict[int, int] = {}  # bracket leg -> its parent
        self.cancelled: dict[int, int] = {}  # -> number of orders placed before the cancel
        self.ended: dict[int, int] = {}  # -> bar of the broker's margin call or cancel (OCO)
        self.live: dict[str, list[Any]] = {}
        self.placed = 0
        self.values: dict[int, float] = {}  # the broker's value at each bar, before orders

    def prenext(self) -> None:
        self.values[len(self) - 1] = self.broker.getvalue()

    def notify_order(self, order: Any) -> None:
        if order.status in (order.Margin, order.Canceled):
            self.ended.setdefault(order.info.protection_attempt, len(self) - 1)

    def log(self, kind: str, asset: str, orders: Any) -> None:
        for order in [o for o in (orders if isinstance(orders, list) else [orders]) if o]:
            self.placed += 1
            self.kinds[self.placed] = kind
            self.live.setdefault(asset, []).append(order)
        if kind == "bracket" and orders:
            self.kinds[self.placed] = self.kinds[self.placed - 1] = "bracket_leg"
            self.parents[self.placed] = self.parents[self.placed - 1] = self.placed - 2

    def next(self) -> None:
        self.values[len(self) - 1] = self.broker.getvalue()
        for kind, asset, value in self.by_bar.get(len(self) - 1, ()):
            data = self.getdatabyname(asset)
            position = self.getposition(data).size
            close = data.close[0]
            side = self.buy if value > 0 else self.sell
            if kind == "target":
                self.log(kind, asset, self.order_target_percent(data, target=value))
            elif kind == "close":
                self.log(kind, asset, self.close(data))
            elif kind == "buy":
                self.log(kind, asset, self.buy(data, size=abs(value)))
            elif kind == "sell":
                self.log(kind, asset, self.sell(data, size=abs(value)))
            elif kind == "exempt_close":
                self.log(kind, asset, self.close(data, protection_exempt=True))
            elif kind == "stop_entry":  # a breakout entry 1% beyond the close
                price = close * (1.01 if value > 0 else 0.99)
                self.log(
                    kind, asset, side(data, size=abs(value), exectype=bt.Order.Stop, price=price)
                )
            elif kind == "bracket":
                place = self.buy_bracket if value > 0 else self.sell_bracket
                low, high = (0.95 * close, 1.05 * close)
                stop, limit = (low, high) if value > 0 else (high, low)
                self.log(
                    kind,
                    asset,
                    place(
                        data=data, size=abs(value), exectype=bt.Order.Market,
                        stopprice=stop, limitprice=limit,
                    ),
                )  # fmt: skip
            elif kind == "close_sell":  # close, then open the other way, in one bar
                self.log("close", asset, self.close(data))
                self.log("sell", asset, self.sell(data, size=abs(value)))
            elif kind == "cancel":  # orders placed this bar are not cancellable yet
                orders = self.live.get(asset, [])
                for order in orders:
                    if order.alive():
                        self.cancel(order)
                for order in orders:  # bracket legs go with their parent
                    attempt = order.info.protection_attempt
                    if order.status == order.Canceled and attempt not in self.cancelled:
                        self.cancelled[attempt] = self.placed
            elif position:  # a stop-loss a few percent away from the close
                price = close * (0.97 if position > 0 else 1.03)
                order = self.sell if position > 0 else self.buy
                self.log(
                    kind,
                    asset,
                    order(data, size=abs(position), exectype=bt.Order.Stop, price=price),
                )


@dataclass
class Outcome:
    orders: pd.DataFrame
    decisions: dict[int, dict[str, Any]]
    calendar: pd.DatetimeIndex
    audit_kinds: Counter[str] = field(default_factory=Counter)
    log: dict[str, dict[int, Any]] = field(default_factory=dict)
    values: dict[int, float] = field(default_factory=dict)


def run_case(case: Case) -> Outcome:
    frames = {t: f.iloc[case.first : case.first + case.bars] for t, f in universe().items()}
    cerebro = bt.Cerebro(stdstats=False, runonce=case.runonce, preload=case.preload)
    add_feeds(cerebro, frames)
    cerebro.broker.setcash(100_000.0)
    cerebro.broker.setcommission(commission=0.001)
    with tempfile.TemporaryDirectory() as folder:
        audit = Path(folder) / "audit.jsonl"
        cerebro.addstrategy(
            RandomTargets, protection=case.profile, audit_path=str(audit), script=case.script
        )
        cerebro.addanalyzer(OrderRecorder, _name="orders")
        strategy = cerebro.run()[0]
        records = list(read_audit(audit, drop_wall=True))
    decisions: dict[int, dict[str, Any]] = {}
    for record in records:
        if record["kind"] == "decision":
            attempt = record["metadata"]["attempt"]
            assert attempt not in decisions, f"attempt {attempt} has two decisions"
            decisions[attempt] = record
    orders = strategy.analyzers.orders.to_frame()
    calendar = next(iter(frames.values())).index
    log = {
        "kinds": strategy.kinds,
        "parents": strategy.parents,
        "cancelled": strategy.cancelled,
        "ended": strategy.ended,
    }
    kinds = Counter(r["kind"] for r in records)
    return Outcome(orders, decisions, calendar, kinds, log, strategy.values)


# --------------------------------------------------------------------------- the replay


Point = tuple[int, pd.Timestamp]  # (bar index, date)


@dataclass
class Book:
    """One asset as the fills left it: position, when it was opened, its exits, its FIFO lots
    and the largest position it ever had."""

    position: float = 0.0
    opened: Point | None = None
    exits: list[Point] = field(default_factory=list)
    lots: list[list[Any]] = field(default_factory=list)
    peak: float = 0.0

    def fill(self, size: float, now: Point) -> None:
        before, after = self.position, self.position + size
        spec_lots(self.lots, before, after, now)
        self.peak = max(self.peak, abs(after))
        if before != 0 and (after == 0 or (before > 0) != (after > 0)):
            self.exits.append(now)
        if after == 0:
            self.opened = None
        elif before == 0 or (before > 0) != (after > 0):
            self.opened = now
        self.position = after


@dataclass(frozen=True)
class Moment:
    """What the portfolio brakes look at when an order is decided: whether the drawdown guard
    is tripped (by hand, from the broker's values) and the fills of every asset so far."""

    reduce_only: bool
    fills: tuple[Point, ...]


def broken_rules(
    profile: dict[str, Any],
    book: Book,
    asset: str,
    move: tuple[float, float],
    now: Point,
    moment: Moment,
) -> set[str]:
    """The checked systems whose rule forbids moving `asset` from `move[0]` to `move[1]`."""
    blocks = profile["protections"]
    broken = set()
    current, target = move
    action = spec_action(current, target)
    core = blocks.get("core_asset_immunity")
    if core and asset in core["assets"] and action in core["protect"]:
        floor = core.get("keep", 1.0) * max(book.peak, abs(current))
        kept = target != 0 and (target > 0) == (current > 0) and abs(target) >= floor
        if "keep" not in core or not kept:
            broken.add("core_asset_immunity")
    hold = blocks.get("holding_period")
    opened = book.opened
    if hold and action in hold["protect"] and opened:
        if "lots" in hold:
            ripe = sum(n for n, at in book.lots if spec_elapsed(hold["min_hold"], at, now))
            same_side = (current > 0) == (book.position > 0)
            committed = sum(n for n, _ in book.lots) - abs(current) if same_side else math.inf
            eligible = max(0.0, ripe - max(0.0, committed))
            crosses = target == 0 or (target > 0) != (current > 0)
            if (abs(current) if crosses else abs(current) - abs(target)) > eligible + 1e-9:
                broken.add("holding_period")
        elif not spec_elapsed(hold["min_hold"], opened, now):
            broken.add("holding_period")
    adds = action in ("open", "increase", "reverse")
    if blocks.get("drawdown_guard") and adds and moment.reduce_only:
        broken.add("drawdown_guard")
    budget = blocks.get("turnover_budget")
    if budget:
        recent = [f for f in moment.fills if not spec_elapsed(budget["window"], f, now)]
        if len(recent) >= budget["max_trades"]:
            broken.add("turnover_budget")
    whip = blocks.get("whipsaw_protection")
    if whip and action in ("open", "reverse"):
        recent = [e for e in book.exits if not spec_elapsed(whip["window"], e, now)]
        cycles = len(recent)  # round trips completed so far
        too_soon = bool(book.exits) and not spec_elapsed(whip["min_reentry"], book.exits[-1], now)
        if cycles >= whip["max_cycles"] or too_soon:
            broken.add("whipsaw_protection")
    return broken


CHECKED = (
    "core_asset_immunity",
    "holding_period",
    "whipsaw_protection",
    "drawdown_guard",
    "turnover_budget",
)


def live_size(outcome: Outcome, rows: dict[int, Any], row: Any, bar: int, bar_of: Any) -> float:
    """What the live orders of `row.asset` add at the decision of `row` (at `bar`): earlier
    orders let through, not yet filled, cancelled (by the strategy or an OCO sibling's fill) or
    refused for margin; exempt stops and
    bracket legs are contingent and count for nothing."""
    log = outcome.log
    total = 0.0
    for attempt in range(1, row.attempt):
        other = rows[attempt]
        if other.asset != row.asset or other.protection == "denied":
            continue
        if other.protection == "exempt" and log["kinds"][attempt] in CONTINGENT:
            continue
        if other.filled and bar_of[pd.Timestamp(other.executed)] <= bar:
            continue
        if log["cancelled"].get(attempt, row.attempt) < row.attempt:
            continue
        if log["ended"].get(attempt, bar + 1) <= bar:
            continue
        total += other.size  # unfilled at the decision: fills come at one bar, whole
    return total


def check(case: Case, outcome: Outcome, tally: Counter[str]) -> None:
    """Every promise of the module docstring, for one run; counts what was checked."""
    orders, decisions, calendar = outcome.orders, outcome.decisions, outcome.calendar
    shadow = case.profile["mode"] == "shadow"
    count = len(orders)
    assert list(orders["attempt"]) == list(range(1, count + 1))
    assert sorted(decisions) == list(range(1, count + 1)), "an attempt without one decision"
    assert outcome.audit_kinds["decision"] == count
    bar_of = {day: i for i, day in enumerate(calendar)}
    last_bar = len(calendar) - 1

    events = []
    for row in orders.itertuples():
        created = pd.Timestamp(row.created)
        events.append(((bar_of[created], 1, row.attempt), (bar_of[created], created), row))
        if row.filled:
            executed = pd.Timestamp(row.executed)
            events.append(((bar_of[executed], 0, row.attempt), (bar_of[executed], executed), row))
    books: dict[str, Book] = {t: Book() for t in TICKERS}
    fills: list[Point] = []
    guard = case.profile["protections"].get("drawdown_guard")
    values = [((bar, calendar[bar]), outcome.values[bar]) for bar in sorted(outcome.values)]
    assert [point[0] for point, _ in values] == list(range(len(calendar))), "a bar without value"
    reduce_only = [
        bool(guard) and spec_reduce_only(guard, values[: bar + 1], spec_elapsed)
        for bar in range(len(values))
    ]
    rows = {row.attempt: row for row in orders.itertuples()}
    kinds, parents = outcome.log["kinds"], outcome.log["parents"]
    for (_, phase, _), now, row in sorted(events, key=lambda e: e[0]):
        book = books[row.asset]
        if phase == 0:
            book.fill(row.filled, now)
            fills.append(now)
            continue
        decision = decisions[row.attempt]
        where = f"order {row.attempt} ({row.asset} on {row.created}, case {case})"
        # one decision per order, about that order, at that moment, on the replayed position
        # and the live orders of the asset
        assert decision["asset"] == row.asset, where
        assert decision["bar"] == now[0] and pd.Timestamp(decision["time"]) == now[1], where
        current = book.position + live_size(outcome, rows, row, now[0], bar_of)
        parent = rows.get(parents.get(row.attempt, 0))
        orphan = parent is not None and parent.protection == "denied"
        if orphan:  # judged on the position its refused parent would have left
            current += parent.size
        assert abs(decision["current_size"] - current) < 1e-9, where
        requested = decision["target_size"] - decision["current_size"]
        assert abs(requested - row.requested) < 1e-9, where
        action = spec_action(current, current + row.requested)
        assert decision["action"] == action, where
        label = (
            "exempt"
            if decision["exempt"]
            else "partial"
            if decision["partial"]
            else "approved"
            if decision["approved"]
            else "denied"
        )
        assert row.protection == label, where
        # the order sent is the approved part: the request whole, or the part a system allowed
        allowed = decision["approved_target"]
        if label == "denied":
            assert row.approved == 0 and row.size == row.requested, where
        else:
            assert row.size == row.approved and abs(row.size - (allowed - current)) < 1e-9, where
        assert decision["would_block"] == bool(decision["blocking_systems"]), where
        kind = kinds[row.attempt]
        safety = kind in CONTINGENT and action in ("close", "decrease") and not orphan
        assert decision["exempt"] == (kind == "exempt_close" or safety), where
        if orphan:
            assert label == "denied" and not decision["blocking_systems"], where
            assert decision["reason"].startswith("Rejected with its bracket parent"), where
            tally["orphans"] += 1
        tally["orders"] += 1
        tally[label] += 1

        moment = Moment(reduce_only[now[0]], tuple(fills))
        broken = broken_rules(
            case.profile, book, row.asset, (current, current + row.requested), now, moment
        )
        lifted = set(decision["overridden_systems"])
        blocking = set(decision["blocking_systems"])
        # the audit's verdict of each checked system is the rule's verdict
        for system in CHECKED:
            if system in case.profile["protections"]:
                said = {r["system"]: r["allowed"] for r in decision["results"]}[system]
                assert said == (system not in broken), f"{where}: {system} said {said}"
        assert orphan or blocking & set(CHECKED) == broken - lifted, where
        assert lifted <= set(LIFTABLE) and "core_asset_immunity" not in lifted, where
        tally["overridden"] += bool(lifted)

        if label == "denied":  # never executed, never reached the broker's book
            assert not shadow, where
            assert row.status == "Rejected" and row.filled == 0, where
            assert blocking or orphan, where
            continue
        # approved or exempt: it reached the broker
        assert row.status != "Rejected", where
        market = kind not in CONTINGENT
        if (
            market
            and label in ("approved", "partial")
            and row.created != calendar[-1].date().isoformat()
        ):
            assert row.status in ("Completed", "Margin"), where  # a market order, processed
        if shadow:
            assert decision["approved"], where
            tally["shadow_would_block"] += bool(blocking)
            continue
        if label == "partial":  # the allowed part obeys every rule the whole one broke
            sent = broken_rules(case.profile, book, row.asset, (current, allowed), now, moment)
            assert not sent - lifted, f"{where}: sent against {sent}"
            tally["partial_checked"] += 1
            assert not row.filled or row.filled == row.size, where
        if label in ("approved", "partial") and row.filled:
            for system in CHECKED:
                if system in case.profile["protections"] and label == "approved":
                    assert system not in broken - lifted, f"{where}: executed against {system}"
                    tally[f"executed_checked_{system}"] += 1
    assert last_bar >= 149
    for kind in CHECKED:
        tally[f"denied_{kind}"] += sum(
            kind in d["blocking_systems"] and not d["approved"] for d in decisions.values()
        )
    tally["runs"] += 1


# --------------------------------------------------------------------------- the test

HOLD_AND_WHIPSAW = {
    "name": "random",
    "mode": "enforce",
    "protections": {
        "core_asset_immunity": {"enabled": True, "assets": ["AAPL"], "protect": ["close"]},
        "holding_period": {"enabled": True, "min_hold": "10 bars", "protect": ["close", "reverse"]},
        "whipsaw_protection": {
            "enabled": True,
            "max_cycles": 1,
            "window": "3 weeks",
            "min_reentry": "5 days",
        },
    },
    "regime": {"data": "AAPL", **FAST_REGIME},
}
# Churn: opens, early closes, reversals, re-entries, exempt exits, stops, stop entries,
# brackets (some with a denied parent), close+sell in one bar, cancels.
CHURN = tuple(
    (bar, kind, asset, value)
    for bar in range(2, 140, 3)
    for kind, asset, value in (
        ("target", "AMZN", 0.2 if bar % 2 else -0.15),
        ("close" if bar % 4 else "target", "AAPL", 0.1),
        ("exempt_close" if bar % 9 == 0 else "stop", "NVDA", 0.0),
        ("buy", "NVDA", 5.0),
        ("bracket" if bar % 2 else "close_sell", "META", 5.0),
        ("cancel" if bar % 5 == 0 else "stop_entry", "META", -3.0),
    )
)
OVERRIDES = {
    **HOLD_AND_WHIPSAW,
    "protections": {
        **HOLD_AND_WHIPSAW["protections"],
        "regime_override": {
            "enabled": True,
            "window": "10 bars",
            "cooldown": "0 bars",
            "can_override": {s: list(LIFTABLE) for s in SEVERITIES},
        },
    },
}
# Every clipping system with partial: true, and both portfolio brakes.
PARTIAL = {
    **HOLD_AND_WHIPSAW,
    "protections": {
        "core_asset_immunity": {
            "enabled": True,
            "assets": ["AMZN"],
            "protect": ["close", "decrease", "reverse"],
            "keep": 0.5,
            "partial": True,
        },
        "holding_period": {
            "enabled": True,
            "min_hold": "10 bars",
            "protect": ["close", "decrease", "reverse"],
            "lots": "fifo",
            "partial": True,
        },
        "drawdown_guard": {
            "enabled": True,
            "max_drawdown": 0.03,
            "resume": {"after": "8 bars", "recover": 0.5},
            "partial": True,
        },
        "turnover_budget": {"enabled": True, "window": "5 bars", "max_trades": 6},
    },
}
EXAMPLES = (
    Case(HOLD_AND_WHIPSAW, 300, 200, CHURN, True, True),
    Case(OVERRIDES, 500, 200, CHURN, False, False),
    Case({**HOLD_AND_WHIPSAW, "mode": "shadow"}, 700, 160, CHURN, True, False),
    Case(PARTIAL, 980, 200, CHURN, True, True),  # Dec 2019 to Sep 2020: the crash
)


def test_random_order_streams_keep_every_promise() -> None:
    tally: Counter[str] = Counter()

    @PROPERTY
    @given(case=cases())
    @example(case=EXAMPLES[0])
    @example(case=EXAMPLES[1])
    @example(case=EXAMPLES[2])
    @example(case=EXAMPLES[3])
    def prop(case: Case) -> None:
        check(case, run_case(case), tally)

    prop()
    assert tally["runs"] >= MAX_EXAMPLES + len(EXAMPLES)
    assert tally["orders"] >= MIN_ORDERS
    # the checks are not vacuous: every kind of decision and every rule was exercised
    keys = ("approved", "denied", "exempt", "overridden", "shadow_would_block", "orphans")
    for key in (*keys, "partial", "partial_checked"):
        assert tally[key] > 0, (key, tally)
    for system in CHECKED:
        assert tally[f"executed_checked_{system}"] > 0, (system, tally)
        assert tally[f"denied_{system}"] > 0, (system, tally)


def test_the_replay_catches_an_order_that_broke_a_rule() -> None:
    """The checker is not blind: a shadow run (every order approved, would-blocks reported)
    judged as if it had been enforced fails on the first executed order that broke a rule."""
    shadow = run_case(Case({**HOLD_AND_WHIPSAW, "mode": "shadow"}, 300, 200, CHURN))
    with pytest.raises(AssertionError, match="executed against"):
        check(Case(HOLD_AND_WHIPSAW, 300, 200, CHURN), shadow, Counter())
