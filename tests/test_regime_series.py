"""`regime_series`: the regime of a preloaded feed worked out at once equals `RegimeState` fed
bar by bar, bit for bit, and `ClockRegime` gives the same labels in every backtrader mode."""

from __future__ import annotations

import dataclasses
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import backtrader as bt
import numpy as np
import pandas as pd
import pytest
from conftest import SAMPLE_DATA

from bt_protection.data import load_universe
from bt_protection.integration.regime import ClockRegime, RegimeState
from bt_protection.integration.regime_series import regime_series
from bt_protection.profile import RegimeConfig, load_profile
from bt_protection.regime_factors import FactorName

ETF = Path(__file__).resolve().parents[1] / "data" / "etf17"
BALANCED = load_profile("balanced").regime


def one_by_one(closes: np.ndarray, config: RegimeConfig) -> tuple[list[int], list[Any]]:
    state = RegimeState(config)
    codes, ratios = [], []
    for close in closes.tolist():
        codes.append(state.update(close))
        ratios.append(state.vol_ratio)
    return codes, ratios


def gappy(closes: np.ndarray) -> np.ndarray:
    """Missing, non-positive and infinite closes scattered through a real series."""
    out = closes.copy()
    out[::37] = np.nan
    out[5::91] = -1.0
    out[7::101] = np.inf
    out[11::53] = 0.0
    return out


@cache
def etf_closes() -> dict[str, np.ndarray]:
    return {t: f["close"].to_numpy() for t, f in load_universe(ETF).items()}


def test_equal_to_the_state_bar_by_bar_on_every_bundled_feed() -> None:
    sample = {t: f["close"].to_numpy() for t, f in load_universe(SAMPLE_DATA).items()}
    feeds = {**etf_closes(), **sample}
    for k, (name, closes) in enumerate(sorted(feeds.items())):
        series = gappy(closes) if k % 2 else closes
        got = regime_series(series, BALANCED)
        codes, ratios = one_by_one(series, BALANCED)
        assert got.codes == codes, name
        assert got.vol_ratios == ratios, name  # exact floats: the same operations in order
        assert len(set(codes)) >= 3, name  # the labels move: the comparison means something


def short_windows() -> RegimeConfig:
    return dataclasses.replace(
        BALANCED, fast_period=5, slow_period=12, vol_period=4, confirm_bars=1, drawdown_period=9
    )


@pytest.mark.parametrize(
    "config",
    [
        load_profile("conservative").regime,
        load_profile("aggressive").regime,
        short_windows(),
        *(
            dataclasses.replace(BALANCED, factors=tuple(f for f in BALANCED.factors if f.name != n))
            for n in (FactorName.TREND, FactorName.VOLATILITY, FactorName.DRAWDOWN)
        ),
    ],
    ids=["conservative", "aggressive", "short", "no-trend", "no-volatility", "no-drawdown"],
)
def test_equal_to_the_state_for_other_settings(config: RegimeConfig) -> None:
    for closes in (etf_closes()["EEM"], gappy(etf_closes()["JNK"])):
        got = regime_series(closes, config)
        assert (got.codes, got.vol_ratios) == one_by_one(closes, config)


def test_short_and_empty_series() -> None:
    for closes in ([], [np.nan], [100.0], [100.0, 0.0, 101.0], [100.0] * 30):
        array = np.asarray(closes, dtype=float)
        got = regime_series(array, short_windows())
        assert (got.codes, got.vol_ratios) == one_by_one(array, short_windows())


def test_no_look_ahead_in_the_series() -> None:
    closes = etf_closes()["SPY"]
    full = regime_series(closes, BALANCED)
    for cut in (30, 250, 700, 1500):
        short = regime_series(closes[:cut], BALANCED)
        assert short.codes == full.codes[:cut] and short.vol_ratios == full.vol_ratios[:cut]


# --- on backtrader's clock -----------------------------------------------------------------------

Rows = list[tuple[date, int, float | None]]


def frames(cut: str | None = None) -> dict[str, pd.DataFrame]:
    """SPY drives the clock; the watched QQQ starts later and misses 60 days (ragged)."""
    out = {}
    for name in ("SPY", "QQQ"):
        df = pd.read_csv(ETF / f"{name}.csv", parse_dates=["Date"], index_col="Date")
        out[name] = pd.DataFrame({"close": df["Adj Close"]}).loc["2007-01-01":cut]
    qqq = out["QQQ"].loc["2007-06-01":]
    out["QQQ"] = qqq.drop(qqq.index[300:360])
    return out


class Watch(bt.Strategy):
    """Records (date, code, volatility ratio) of a `ClockRegime` on QQQ at every bar."""

    def start(self) -> None:
        self.clock = ClockRegime([self.getdatabyname("QQQ")], BALANCED)
        self.rows: Rows = []

    def prenext(self) -> None:
        code = self.clock.update()
        self.rows.append((self.datas[0].datetime.date(0), code, self.clock.vol_ratio))

    next = prenext


def run(cut: str | None = None, **cerebro: Any) -> Watch:
    engine = bt.Cerebro(stdstats=False, **cerebro)
    for name, df in frames(cut).items():
        feed = bt.feeds.PandasData(
            dataname=df, open=None, high=None, low=None, volume=None, openinterest=None
        )
        engine.adddata(feed, name=name)
    engine.addstrategy(Watch)
    strategy: Watch = engine.run()[0]
    return strategy


@cache
def bar_by_bar() -> Rows:
    """Without preload: the `RegimeState` updated at each bar."""
    strategy = run(preload=False, runonce=False)
    assert strategy.clock._series is None  # the bar-by-bar path ran
    return strategy.rows


@pytest.mark.parametrize(
    ("runonce", "preload", "exactbars"),
    [(True, True, 0), (False, True, 0), (False, True, -1), (False, True, -2), (False, False, -1)],
)
def test_same_labels_in_every_mode(runonce: bool, preload: bool, exactbars: int) -> None:
    # (exactbars=1 is left out: plain backtrader fails on a feed that starts later with it)
    strategy = run(runonce=runonce, preload=preload, exactbars=exactbars)
    assert (strategy.clock._series is not None) == preload  # precomputed only when preloaded
    assert strategy.rows == bar_by_bar()
    assert {code for _, code, _ in strategy.rows} == {0, 1, 2, 3}  # 2008 is in it


@pytest.mark.parametrize("cut", ["2007-09-14", "2008-10-10", "2009-03-09"])
def test_no_look_ahead_on_the_clock(cut: str) -> None:
    """The label at each bar of a preloaded run equals its value on the data cut after it."""
    short = run(cut).rows
    assert short and short == bar_by_bar()[: len(short)]
