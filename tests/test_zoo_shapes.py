"""The zoo's run shapes (issue 17): feeds and set-ups people really use, each checked three
ways on real sample data, modified (tests/zoo/frames.py):

- no mixin, `off` and `shadow` give the same fills and final value (the plugin changes
  nothing a strategy sees);
- under `balanced` and the strict profile the independent checker finds no rule broken in the
  broker's executed orders;
- the regime label at each bar is the one given when the data is cut just after that bar.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import backtrader as bt
import pandas as pd
import pytest
from test_zoo import STRICT
from zoo import frames as zf
from zoo.checker import Executions, violations
from zoo.plain import (
    Accumulator,
    Crossing,
    HoldFromDate,
    StartOrder,
    TickTrader,
    protected,
)
from zoo.strategies import OptimisedCrossing

from bt_protection.audit import read_audit
from bt_protection.errors import UserError
from bt_protection.integration.analyzer import ProtectionAnalyzer
from bt_protection.integration.mixin import ProtectionMixin
from bt_protection.profile import load_profile
from bt_protection.shipped import PROFILES

CONFIGS = PROFILES
OFF = str(CONFIGS / "off.yaml")
SHADOW = str(CONFIGS / "shadow.yaml")
BALANCED = str(CONFIGS / "balanced.yaml")
ENFORCING = {"balanced": BALANCED, "strict": STRICT}
Frames = dict[str, pd.DataFrame]


# --------------------------------------------------------------------------- running a shape


class Fills(bt.Analyzer):
    """Every executed bit the strategy was told of (asset, date, size, price), and the
    regime label the protection held at each bar (None without the mixin)."""

    def create_analysis(self) -> None:
        self.fills: list[tuple[str, float, float, str]] = []
        self.labels: list[tuple[float, str | None]] = []
        self.bars: dict[pd.Timestamp, int] = {}  # each date's bar (a replayed bar spans days)

    def notify_order(self, order: Any) -> None:
        for bit in order.executed.iterpending():
            if bit.size:
                self.fills.append((order.data._name, bit.dt, bit.size, repr(bit.price)))

    def next(self) -> None:
        protection = getattr(self.strategy, "protection", None)
        label = protection.regime if protection is not None else None
        self.labels.append((self.strategy.datetime[0], label))
        day = pd.Timestamp(bt.num2date(self.strategy.datetime[0])).normalize()
        self.bars[day] = len(self.strategy) - 1

    def get_analysis(self) -> dict[str, Any]:
        return {"fills": self.fills, "labels": self.labels, "bars": self.bars}


def daily_feeds(cerebro: bt.Cerebro, frames: Frames) -> None:
    for name in sorted(frames):
        cerebro.adddata(bt.feeds.PandasData(dataname=frames[name]), name=name)


def replayed_weeks(cerebro: bt.Cerebro, frames: Frames) -> None:
    for name in sorted(frames):
        feed = bt.feeds.PandasData(dataname=frames[name])
        cerebro.replaydata(feed, timeframe=bt.TimeFrame.Weeks, name=name)


def daily_and_weekly(cerebro: bt.Cerebro, frames: Frames) -> None:
    cerebro.adddata(bt.feeds.PandasData(dataname=frames["AAPL"]), name="AAPL")
    weekly = bt.feeds.PandasData(dataname=frames["NVDA"], timeframe=bt.TimeFrame.Weeks)
    cerebro.adddata(weekly, name="NVDA")


@dataclass(frozen=True)
class Shape:
    strategy: type
    frames: Callable[[], Frames]
    feeds: Callable[[bt.Cerebro, Frames], None] = daily_feeds
    engine: dict[str, Any] = field(default_factory=dict)
    broker: Callable[[bt.Cerebro], None] | None = None
    params: dict[str, Any] = field(default_factory=dict)


def partial_filler(cerebro: bt.Cerebro) -> None:
    cerebro.broker.set_filler(bt.broker.fillers.FixedSize(size=30))


SHAPES = {
    "replay": Shape(TickTrader, zf.sample, replayed_weeks),
    "ragged": Shape(Crossing, zf.ragged),
    "daily and weekly": Shape(Crossing, zf.daily_and_weekly, daily_and_weekly),
    "NaN closes": Shape(Crossing, zf.with_nan_closes),
    "order in start": Shape(StartOrder, zf.sample),
    "tz-aware": Shape(Crossing, zf.in_new_york),
    "partial fills": Shape(Accumulator, zf.sample, broker=partial_filler),
}


def run(
    shape: Shape,
    profile: Any = None,
    frames: Frames | None = None,
    engine: dict[str, Any] | None = None,
    **params: Any,
) -> Any:
    """One backtest of `shape`: the plain strategy when `profile` is None, else protected."""
    cerebro = bt.Cerebro(stdstats=False, **{**shape.engine, **(engine or {})})
    shape.feeds(cerebro, frames if frames is not None else shape.frames())
    if shape.broker is not None:
        shape.broker(cerebro)
    cerebro.broker.setcash(100_000.0)
    params = {**shape.params, **params}
    if profile is None:
        cerebro.addstrategy(shape.strategy, **params)
    else:
        cerebro.addstrategy(protected(shape.strategy), protection=profile, **params)
        cerebro.addanalyzer(Executions, _name="executions")
    cerebro.addanalyzer(Fills, _name="fills")
    strategy = cerebro.run()[0]
    strategy.final_value = repr(cerebro.broker.getvalue())
    return strategy


def outcome(strategy: Any) -> tuple[list[Any], str]:
    return strategy.analyzers.fills.get_analysis()["fills"], strategy.final_value


def bar_calendar(strategy: Any) -> dict[pd.Timestamp, int]:
    """Each calendar date of the run's bars and the strategy's bar index on it."""
    return dict(strategy.analyzers.fills.get_analysis()["bars"])


# --------------------------------------------------------------------------- the three checks


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_off_and_shadow_change_nothing(shape: str) -> None:
    plain = outcome(run(SHAPES[shape]))
    assert plain[0], f"{shape}: the plain strategy executed nothing"
    for profile in (OFF, SHADOW):
        assert outcome(run(SHAPES[shape], profile)) == plain, (shape, profile)


@pytest.mark.parametrize("profile", sorted(ENFORCING))
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_the_checker_finds_no_broken_rule(shape: str, profile: str) -> None:
    strategy = run(SHAPES[shape], ENFORCING[profile])
    analysis = strategy.analyzers.executions.get_analysis()
    found = violations(analysis, load_profile(ENFORCING[profile]), bar_calendar(strategy))
    assert not found, found[:5]
    assert analysis["decisions"], f"{shape} placed no order"


def labels_of(strategy: Any) -> list[tuple[float, str | None]]:
    return list(strategy.analyzers.fills.get_analysis()["labels"])


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_the_regime_label_at_a_bar_needs_no_later_data(shape: str) -> None:
    """The labels of a run on data cut just after a bar equal the full run's up to it."""
    full = labels_of(run(SHAPES[shape], BALANCED))
    assert len({label for _, label in full}) > 1, "the regime moves on these data"
    frames = SHAPES[shape].frames()
    for k in (len(full) // 3, 2 * len(full) // 3):
        number = full[k][0]
        last = pd.Timestamp(bt.num2date(number)).normalize()
        zone = next(iter(frames.values())).index.tz
        if zone is not None:
            last = last.tz_localize(zone)
        short = labels_of(run(SHAPES[shape], BALANCED, frames=zf.cut(frames, last)))
        assert short == [point for point in full if point[0] <= number], (shape, last)


# --------------------------------------------------------------------------- ragged calendars

MODES = [
    {"runonce": runonce, "preload": preload}
    for runonce in (True, False)
    for preload in (True, False)
] + [{"exactbars": -1}, {"exactbars": -2}]  # exactbars=1: backtrader's broker fails on it


@pytest.mark.parametrize(
    ("shape", "regime_data"), [("ragged", None), ("ragged", "NVDA"), ("daily and weekly", None)]
)
def test_ragged_calendars_decide_alike_in_every_mode(shape: str, regime_data: str | None) -> None:
    """runonce, preload and exactbars change neither labels, nor decisions, nor fills; the
    feed NVDA, watched alone, starts half a year late: neutral until its first bar."""
    runs = [run(SHAPES[shape], BALANCED, engine=mode, regime_data=regime_data) for mode in MODES]
    first = runs[0]
    decisions = [
        [(d.asset, d.date, d.approved, d.reason) for d in r.analyzers.executions.get_analysis()
         ["decisions"]]
        for r in runs
    ]  # fmt: skip
    for mode, other, decided in zip(MODES[1:], runs[1:], decisions[1:], strict=True):
        assert labels_of(other) == labels_of(first), mode
        assert decided == decisions[0], mode
        assert outcome(other) == outcome(first), mode
    if regime_data == "NVDA":
        start = pd.Timestamp("2018-07-02")
        before = {lab for n, lab in labels_of(first) if bt.num2date(n) < start}
        assert before == {"neutral"}
    if shape == "ragged" and regime_data is None:
        late = pd.Timestamp("2019-10-15")
        after = {lab for n, lab in labels_of(first) if bt.num2date(n) > late}
        assert len(after) > 1, "the label moves on after AAPL ends"


class RegimeReader(ProtectionMixin, bt.Strategy):
    """Reads `self.regime` (the indicator on the composite) at every bar."""

    def __init__(self) -> None:
        self.indicator = self.regime
        self.rows: list[tuple[float, str, str | None]] = []

    def prenext(self) -> None:
        self.next()

    def next(self) -> None:
        self.rows.append((self.datetime[0], self.indicator.label(), self.protection.regime))


def test_the_regime_indicator_on_ragged_calendars_runs_alike_in_every_mode() -> None:
    """`self.regime` on feeds of different calendars: no IndexError, the same labels in every
    mode, and the protection's labels while its first feed (AAPL) trades."""
    rows = []
    for mode in MODES:
        cerebro = bt.Cerebro(stdstats=False, **mode)
        daily_feeds(cerebro, zf.ragged())
        cerebro.addstrategy(RegimeReader, protection=OFF)
        rows.append(cerebro.run()[0].rows)
    assert all(other == rows[0] for other in rows[1:])
    end = bt.date2num(pd.Timestamp("2019-10-15"))
    trading = [(a, b) for n, a, b in rows[0] if n <= end]
    assert all(a == b for a, b in trading) and len({a for a, _ in trading}) > 1


# --------------------------------------------------------------------------- one-off shapes


def test_a_nan_close_never_stops_portfolio_guard() -> None:
    guarded = run(SHAPES["NaN closes"], str(CONFIGS / "portfolio_guard.yaml"))
    assert outcome(guarded)[0]


def test_two_strategies_on_one_feed() -> None:
    """Under off and shadow two protected strategies run as plain backtrader runs them;
    a profile that may deny is refused at start, naming the feed and both strategies."""

    class Slow(Crossing):
        params = (("fast", 10), ("slow", 30))

    def both(profile: Any) -> list[Any]:
        cerebro = bt.Cerebro(stdstats=False)
        daily_feeds(cerebro, zf.sample())
        for strategy in (Crossing, Slow):
            if profile is None:
                cerebro.addstrategy(strategy)
            else:
                cerebro.addstrategy(protected(strategy), protection=profile)
        cerebro.addanalyzer(Fills, _name="fills")
        done = cerebro.run()
        return [s.analyzers.fills.get_analysis()["fills"] for s in done] + [
            cerebro.broker.getvalue()
        ]

    plain = both(None)
    assert both(OFF) == plain and both(SHADOW) == plain
    with pytest.raises(UserError, match=r"Crossing and Slow .* feed AAPL"):
        both(BALANCED)


def test_a_refused_pair_leaves_its_audit_files_free(tmp_path: Path) -> None:
    """After the refusal (its cerebro still referenced, as a notebook's traceback keeps it)
    each audit file can be written again by a new run."""
    paths = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    refused = bt.Cerebro(stdstats=False)
    daily_feeds(refused, zf.sample())
    for strategy, path in zip((Crossing, StartOrder), paths, strict=True):
        refused.addstrategy(protected(strategy), protection=BALANCED, audit_path=str(path))
    with pytest.raises(UserError, match=r"feed AAPL"):
        refused.run()
    assert list(read_audit(paths[0]))[-1]["kind"] == "run_failed"
    for path in paths:
        cerebro = bt.Cerebro(stdstats=False)
        daily_feeds(cerebro, zf.sample())
        cerebro.addstrategy(protected(Crossing), protection=BALANCED, audit_path=str(path))
        cerebro.run()
        assert list(read_audit(path))[-1]["kind"] == "run_end"
    assert refused.runningstrats


def test_the_analyzer_beside_a_plain_strategy_analyses_the_protected_one() -> None:
    cerebro = bt.Cerebro(stdstats=False)
    daily_feeds(cerebro, zf.sample())
    cerebro.addstrategy(Crossing)
    cerebro.addstrategy(protected(HoldFromDate), protection=BALANCED, entry=date(2018, 3, 1))
    cerebro.addanalyzer(ProtectionAnalyzer, _name="protection")
    plain, guarded = cerebro.run()
    assert plain.analyzers.protection.get_analysis() == {}
    assert guarded.analyzers.protection.get_analysis()["decisions_processed"] > 0


def test_partly_filled_orders_count_their_unfilled_rest() -> None:
    """The sell placed while a buy of 100 is partly filled is judged on the broker's position
    plus the buy's unfilled rest, not its whole size."""
    strategy = run(SHAPES["partial fills"], OFF)
    checked = [(o, position, rest) for o, position, rest in strategy.seen if 0 < rest < 100]
    assert len(checked) >= 5
    for order, position, rest in checked:
        decision = order.info.protection
        assert decision.current_size == position + rest, (position, rest)
        assert decision.target_size == position + rest - 20


def test_a_day_duration_ends_on_the_same_session_with_a_time_zone() -> None:
    """ "14 days" from a fill before the spring DST change: the close is approved on the same
    session whether the index is naive or America/New_York."""
    hold = {
        "name": "hold",
        "protections": {"holding_period": {"enabled": True, "min_hold": "14 days"}},
    }
    shape = Shape(HoldFromDate, zf.sample)
    exits = []
    for frames in (zf.sample(), zf.in_new_york()):
        fills = outcome(run(shape, hold, frames=frames, entry=date(2018, 3, 1)))[0]
        assert len(fills) == 2
        exits.append(bt.num2date(fills[1][1]).date())
        opened = bt.num2date(fills[0][1]).date()
    assert exits[0] == exits[1]
    assert opened == date(2018, 3, 2) and exits[0] == date(2018, 3, 19)


# --------------------------------------------------------------------------- the optimiser


def test_optstrategy_on_two_processes_with_a_loaded_profile(tmp_path: Path) -> None:
    """maxcpus=2 with loaded Profiles: each parameter set writes its own audit file
    (`{params}`); the results equal those of one process, and under `off` and `shadow` those
    of the strategy without the mixin."""
    balanced, off, shadow = (load_profile(p) for p in (BALANCED, OFF, SHADOW))
    assert pickle.loads(pickle.dumps(balanced)) == balanced

    def optimise(cpus: int, folder: Path, profile: Any = None) -> dict[int, list[Any]]:
        cerebro = bt.Cerebro(stdstats=False, maxcpus=cpus)
        daily_feeds(cerebro, zf.sample())
        if profile is None:
            cerebro.optstrategy(Crossing, fast=[3, 5, 8])
        else:
            cerebro.optstrategy(
                OptimisedCrossing,
                protection=[profile],
                audit_path=[str(folder / "audit_{profile}_{strategy}_{params}.jsonl")],
                fast=[3, 5, 8],
            )
        cerebro.addanalyzer(Fills, _name="fills")
        return {r[0].p.fast: r[0].analyzers.fills.get_analysis()["fills"] for r in cerebro.run()}

    two = optimise(2, tmp_path / "two", balanced)
    one = optimise(1, tmp_path / "one", balanced)
    assert two == one and len(two) == 3
    plain = optimise(2, tmp_path)
    assert optimise(2, tmp_path / "off", off) == plain
    assert optimise(2, tmp_path / "shadow", shadow) == plain
    assert plain != two, "balanced changes this strategy's trades"
    files = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert files == [f"audit_balanced_OptimisedCrossing_fast={n}_slow=15.jsonl" for n in (3, 5, 8)]
    for name in files:
        records = list(read_audit(tmp_path / "two" / name))
        assert records[0]["kind"] == "header" and records[-1]["kind"] == "run_end"


def test_one_audit_file_for_every_parameter_set_is_refused(tmp_path: Path) -> None:
    cerebro = bt.Cerebro(stdstats=False, maxcpus=1)
    daily_feeds(cerebro, zf.sample())
    cerebro.optstrategy(
        protected(Crossing),
        protection=[BALANCED],
        audit_path=[str(tmp_path / "audit_{profile}.jsonl")],
        fast=[3, 5],
    )
    with pytest.raises(UserError, match=r"add \{params\} or \{run\}"):
        cerebro.run()


def test_two_live_runs_never_share_an_audit_file(tmp_path: Path) -> None:
    path = str(tmp_path / "audit_{run}.jsonl")
    cerebro = bt.Cerebro(stdstats=False)
    daily_feeds(cerebro, zf.sample())
    cerebro.addstrategy(protected(Crossing), protection=OFF, audit_path=path)
    cerebro.addstrategy(protected(HoldFromDate), protection=OFF, audit_path=path,
                        entry=date(2018, 3, 1))  # fmt: skip
    cerebro.run()
    assert len(list(tmp_path.iterdir())) == 2  # {run}: one file each
    cerebro = bt.Cerebro(stdstats=False)
    daily_feeds(cerebro, zf.sample())
    for strategy in (Crossing, StartOrder):
        cerebro.addstrategy(
            protected(strategy), protection=OFF, audit_path=str(tmp_path / "same.jsonl")
        )
    with pytest.raises(UserError, match=r"Crossing, another run of this process, is writing"):
        cerebro.run()
    # that cerebro never started: a new run takes the file it left open
    single = bt.Cerebro(stdstats=False)
    daily_feeds(single, zf.sample())
    single.addstrategy(protected(Crossing), protection=OFF, audit_path=str(tmp_path / "same.jsonl"))
    single.run()
    assert next(read_audit(tmp_path / "same.jsonl"))["kind"] == "header"
    with pytest.raises(UserError, match=r"unknown placeholder \{ticker\}"):
        run(SHAPES["ragged"], OFF, audit_path=str(tmp_path / "{ticker}.jsonl"))


def test_writer_output_is_the_same_under_off_and_shadow() -> None:
    import io

    outputs = []
    for profile in (None, OFF, SHADOW):
        cerebro = bt.Cerebro()
        daily_feeds(cerebro, zf.sample())
        if profile is None:
            cerebro.addstrategy(Crossing)
        else:
            cerebro.addstrategy(protected(Crossing), protection=profile)
        out = io.StringIO()
        cerebro.addwriter(bt.WriterFile, out=out, csv=True)
        cerebro.run()
        outputs.append(out.getvalue())
    assert outputs[0] == outputs[1] == outputs[2]
    assert protected(Crossing).lines._getlines() == ("datetime",)


def test_values_are_numbers() -> None:
    value = float(run(SHAPES["ragged"], BALANCED).final_value)
    assert math.isfinite(value)
