"""`regime.factors`: parsing and its errors, the stress rule, the cross-feed factors (breadth,
correlation, credit) on real ETF data: no look-ahead and the same values in every run mode."""

from __future__ import annotations

import math
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from bt_protection.errors import ProfileError, UserError
from bt_protection.integration.mixin import ProtectionMixin
from bt_protection.integration.regime import (
    FACTOR_LINES,
    ClockRegime,
    RegimeIndicator,
    RegimeState,
)
from bt_protection.profile import RegimeConfig, load_profile
from bt_protection.regime_factors import DEFAULT_FACTORS, Breadth, Correlation, Credit, Factor

ETF = Path(__file__).resolve().parents[1] / "data" / "etf17"
NAMES = ("SPY", "QQQ", "EEM", "JNK", "TLT")
FACTORS = [
    "trend",
    "volatility",
    "drawdown",
    {"breadth": {"period": 50}},
    {"correlation": {"window": 20}},
    {"credit": {"risky": "JNK", "safe": "TLT", "period": 20}},
]
Rows = list[tuple[date, int, tuple[float | None, ...]]]


def config(factors: list[Any]) -> RegimeConfig:
    return load_profile({"name": "f", "regime": {"factors": factors}}).regime


# --- the profile form and its errors -----------------------------------------------------------


def test_default_factors_are_todays_three() -> None:
    assert RegimeConfig().factors == DEFAULT_FACTORS
    assert config(["trend", "volatility", "drawdown"]) == RegimeConfig()
    full = config(FACTORS).factors
    assert full[3] == Factor.of("breadth", {"period": 50})
    assert full[5].risky == "JNK" and full[5].safe == "TLT" and full[5].period == 20


@pytest.mark.parametrize(
    ("factors", "line", "message"),
    [
        ("[trend, trendy]", 4, "unknown regime factor 'trendy'; valid factors: trend,"),
        ("[{breadth: {perod: 50}}]", 4, "factor breadth has no parameter 'perod'"),
        ("[{breadth: {period: 1}}]", 4, "breadth period must be a whole number of at least 3"),
        ("[{correlation: {margin: 2}}]", 4, "correlation margin must be a number between 0 and 1"),
        ("[{credit: {risky: JNK}}]", 4, "factor credit needs safe: the name of a feed"),
        ("[{credit: {risky: JNK, safe: JNK}}]", 4, "needs two feeds, not JNK twice"),
        ("[trend, trend]", 4, "factors lists trend more than once"),
        ("[]", 4, "factors is empty"),
        ("[{trend: 3}]", 4, "the parameters of factor trend must be a mapping"),
        ("[3]", 4, "a factor is a name or a one-key mapping"),
    ],
)
def test_bad_factors_are_refused_with_file_and_line(
    tmp_path: Path, factors: str, line: int, message: str
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(f"name: p\nregime:\n  confirm_bars: 3\n  factors: {factors}\n")
    with pytest.raises(ProfileError) as raised:
        load_profile(path)
    assert f"p.yaml:{line}:" in str(raised.value)
    assert message in str(raised.value)


# --- the rule ----------------------------------------------------------------------------------


def test_each_stressed_factor_moves_the_raw_code_one_step_bounded_at_crisis() -> None:
    for stressed, expected in ((0, 1), (1, 2), (2, 3), (3, 3)):
        state = RegimeState(RegimeConfig(confirm_bars=1))
        assert state.update(100.0, stressed) == expected  # neutral while warming up, plus


def test_left_out_base_factors_count_as_calm() -> None:
    falling = [100.0 * 0.97**k for k in range(60)]  # a 80% drawdown
    kept = RegimeState(RegimeConfig(confirm_bars=1))
    dropped = RegimeState(config(["trend"]))
    assert [kept.update(c) for c in falling][-1] == 3
    assert [dropped.update(c) for c in falling][-1] == 2  # trend only: bear, not crisis


# --- each factor against a direct computation ----------------------------------------------------


def test_breadth_correlation_and_credit_values() -> None:
    rng = np.random.default_rng(7)
    closes = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, size=(80, 3)), axis=0))
    breadth = Breadth(Factor.of("breadth", {"period": 10}), 3)
    corr = Correlation(Factor.of("correlation", {"window": 15}), 3)
    credit = Credit(Factor.of("credit", {"risky": "a", "safe": "b", "period": 10}), 0, 1)
    returns = np.diff(np.log(closes), axis=0)
    for t in range(80):
        row = list(closes[t])
        b, c, k = breadth.update(row), corr.update(row), credit.update(row)
        if t >= 9:
            means = closes[t - 9 : t + 1].mean(axis=0)
            assert b == pytest.approx(np.mean(closes[t] > means))
            ratio = closes[t - 9 : t + 1, 0] / closes[t - 9 : t + 1, 1]
            assert k == pytest.approx(ratio[-1] / ratio.mean() - 1.0)
        if t >= 15:
            m = np.corrcoef(returns[t - 15 : t].T)
            assert c == pytest.approx(np.mean(m[np.triu_indices(3, 1)]))
        else:
            assert c is None


# --- real runs on data/etf17 ---------------------------------------------------------------------


@cache
def frames(end: str = "2009-12-31") -> dict[str, pd.DataFrame]:
    out = {}
    for name in NAMES:
        df = pd.read_csv(ETF / f"{name}.csv", parse_dates=["Date"], index_col="Date")
        out[name] = pd.DataFrame({"close": df["Adj Close"]}).loc["2008-01-01":end]
    return out


class Watch(bt.Strategy):
    """Records (date, code, factor values) at every strategy bar from a `ClockRegime`, and
    (date, regime, raw, factor lines) of a `RegimeIndicator` on SPY at each of its bars."""

    params = (("factors", FACTORS),)

    def __init__(self) -> None:
        self.indicator = RegimeIndicator.from_config(
            self.datas[0], config(self.p.factors), self.datas
        )

    def start(self) -> None:
        markets = {d._name: d for d in self.datas}
        self.clock = ClockRegime([self.datas[0]], config(self.p.factors), markets)
        self.rows: Rows = []
        self.lines_seen: list[tuple[Any, ...]] = []

    def prenext(self) -> None:
        code = self.clock.update()
        values = tuple(self.clock.factors.values())
        self.rows.append((self.datas[0].datetime.date(0), code, values))
        ind = self.indicator
        lines = tuple(getattr(ind.lines, name)[0] for name in FACTOR_LINES)
        self.lines_seen.append(
            (self.datas[0].datetime.date(0), ind.regime[0], ind.raw[0], *map(_plain, lines))
        )

    next = prenext


def _plain(value: float) -> float | None:
    return None if math.isnan(value) else value


def cerebro_of(cut: str | None, ragged: bool = False, **kwargs: Any) -> bt.Cerebro:
    """The five ETFs from 2008; `ragged`: QQQ misses every 7th bar and TLT starts in June."""
    engine = bt.Cerebro(stdstats=False, **kwargs)
    for name, df in frames().items():
        df = df.loc[:cut] if cut else df
        if ragged and name == "QQQ":
            df = df.iloc[[k for k in range(len(df)) if k % 7 != 3]]
        if ragged and name == "TLT":
            df = df.loc["2008-06-02":]
        feed = bt.feeds.PandasData(
            dataname=df, open=None, high=None, low=None, volume=None, openinterest=None
        )
        engine.adddata(feed, name=name)
    return engine


def run(cut: str | None = None, **cerebro: Any) -> Rows:
    engine = cerebro_of(cut, **cerebro)
    engine.addstrategy(Watch)
    return engine.run()[0].rows


@cache
def reference() -> Rows:
    return run()


def test_factors_warm_up_then_vary_and_stress_the_label() -> None:
    rows = reference()
    last = rows[-1][2]
    assert all(v is not None and math.isfinite(v) for v in last)
    breadth = [r[2][0] for r in rows if r[2][0] is not None]
    assert min(breadth) == 0.0 and max(breadth) == 1.0  # 2008 crash and 2009 rebound
    base = [code for _, code, _ in run_base()]
    codes = [code for _, code, _ in rows]
    assert sum(codes) > sum(base)  # stressed factors only ever add stress
    assert len(codes) == len(base)


def run_base() -> Rows:
    engine = bt.Cerebro(stdstats=False)
    spy = frames()["SPY"]
    engine.adddata(
        bt.feeds.PandasData(
            dataname=spy, open=None, high=None, low=None, volume=None, openinterest=None
        ),
        name="SPY",
    )
    engine.addstrategy(Watch, factors=["trend", "volatility", "drawdown"])
    return engine.run()[0].rows


@pytest.mark.parametrize(("runonce", "preload"), [(True, True), (False, True), (False, False)])
def test_same_values_in_every_run_mode(runonce: bool, preload: bool) -> None:
    assert run(runonce=runonce, preload=preload) == reference()


@pytest.mark.parametrize("cut", ["2008-03-14", "2008-10-10", "2009-03-09", "2009-07-01"])
def test_no_look_ahead(cut: str) -> None:
    """Each factor and the label at each bar equal their values on the data cut after it."""
    short = run(cut)
    assert short and short == reference()[: len(short)]
    assert short[-1][0] <= date.fromisoformat(cut)


class Protected(ProtectionMixin, bt.Strategy):
    pass


def test_a_credit_feed_not_in_the_run_is_refused_at_start() -> None:
    profile = load_profile(
        {
            "name": "c",
            "protections": {"regime_override": {}},
            "regime": {"factors": ["trend", {"credit": {"risky": "JNK", "safe": "IEF"}}]},
        }
    )
    engine = bt.Cerebro(stdstats=False)
    for name in ("SPY", "JNK"):
        df = frames()[name]
        feed = bt.feeds.PandasData(
            dataname=df, open=None, high=None, low=None, volume=None, openinterest=None
        )
        engine.adddata(feed, name=name)
    engine.addstrategy(Protected, protection=profile, regime_data="SPY")
    with pytest.raises(UserError, match=r"credit reads feed IEF, which is not in the run"):
        engine.run()


# --- the indicator's lines: the label the protections follow, every factor's value ------------


def watch(cut: str | None = None, ragged: bool = False, **cerebro: Any) -> Watch:
    engine = cerebro_of(cut, ragged, **cerebro)
    engine.addstrategy(Watch)
    strategy: Watch = engine.run()[0]
    return strategy


@cache
def indicator_reference(ragged: bool) -> tuple[tuple[Any, ...], ...]:
    return tuple(watch(ragged=ragged).lines_seen)


@pytest.mark.parametrize("ragged", [False, True])
def test_indicator_lines_are_the_label_and_the_factors_the_protections_follow(
    ragged: bool,
) -> None:
    strategy = watch(ragged=ragged)
    assert len(strategy.rows) == len(strategy.lines_seen) > 400
    stressed_bars = 0
    for (day, code, values), (day2, regime, raw, *lines) in zip(
        strategy.rows, strategy.lines_seen, strict=True
    ):
        assert day == day2 and regime == code
        by_name = dict(zip(FACTOR_LINES, lines, strict=True))
        assert (by_name["breadth"], by_name["correlation"], by_name["credit"]) == values
        stressed_bars += raw > 0
    assert stressed_bars > 100
    base = [row[1] for row in watch_base().lines_seen]
    assert sum(row[1] for row in strategy.lines_seen) > sum(base)  # the factors add stress


@cache
def watch_base() -> Watch:
    engine = cerebro_of(None)
    engine.addstrategy(Watch, factors=["trend", "volatility", "drawdown"])
    return engine.run()[0]


def test_left_out_factors_are_nan_lines() -> None:
    for _, _, _, trend, vol, drawdown, breadth, corr, credit in watch_base().lines_seen[-5:]:
        assert None not in (trend, vol, drawdown)
        assert (breadth, corr, credit) == (None, None, None)


@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize(("runonce", "preload"), [(True, True), (False, True), (False, False)])
def test_indicator_lines_are_the_same_in_every_run_mode(
    ragged: bool, runonce: bool, preload: bool
) -> None:
    seen = watch(ragged=ragged, runonce=runonce, preload=preload).lines_seen
    assert tuple(seen) == indicator_reference(ragged)


@pytest.mark.parametrize("cut", ["2008-03-14", "2008-10-10", "2009-03-09"])
def test_indicator_lines_do_not_look_ahead(cut: str) -> None:
    """The label and every factor line at each bar equal their values on data cut after it."""
    for ragged in (False, True):
        short = watch(cut, ragged).lines_seen
        assert short and tuple(short) == indicator_reference(ragged)[: len(short)]


class Reads(ProtectionMixin, bt.Strategy):
    """Reads `self.regime` in `__init__`; records its line and the orchestrator's label."""

    def __init__(self) -> None:
        self.indicator = self.regime
        self.seen: list[tuple[str, str | None]] = []

    def next(self) -> None:
        self.seen.append((self.regime.label(), self.protection.regime))


@pytest.mark.parametrize("runonce", [True, False])
def test_self_regime_of_the_mixin_follows_the_extra_factors(runonce: bool) -> None:
    profile = load_profile(
        {"name": "f", "protections": {"regime_override": {}}, "regime": {"factors": FACTORS}}
    )
    engine = cerebro_of(None, ragged=True, runonce=runonce)
    engine.addstrategy(Reads, protection=profile, regime_data="SPY")
    strategy: Reads = engine.run()[0]
    assert len(strategy.indicator.datas) == 1 + len(NAMES)
    assert len(strategy.seen) > 400
    assert all(line == label for line, label in strategy.seen)
    assert {"bear", "crisis"} <= {line for line, _ in strategy.seen}


def test_self_regime_refuses_a_credit_feed_not_in_the_run() -> None:
    profile = load_profile(
        {"name": "c", "regime": {"factors": [{"credit": {"risky": "JNK", "safe": "IEF"}}]}}
    )
    engine = cerebro_of("2008-03-01")
    engine.addstrategy(Reads, protection=profile, regime_data="SPY")
    with pytest.raises(UserError, match=r"credit reads feed IEF, which is not in the run"):
        engine.run()
