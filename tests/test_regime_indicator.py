"""RegimeIndicator: real backtrader runs on real daily data (the shipped sample, ../shared/data)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import fields
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import backtrader as bt
import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA, need_shared

from bt_protection.integration.regime import (
    RegimeIndicator,
    RegimeState,
    classify,
    label_of,
)
from bt_protection.profile import RegimeConfig
from bt_protection.protections.regime_override import RegimeOverrideConfig
from bt_protection.regimes import REGIME_LABELS
from bt_protection.shipped import SAMPLE_DATA

SAMPLE_AAPL = SAMPLE_DATA / "AAPL.csv"
SHARED_SPY = SHARED_DATA / "etf21_taa_dashboard" / "SPY.csv"
SHARED_GSPC = SHARED_DATA / "single" / "GSPC.csv"

Rows = list[tuple[date, int]]


@pytest.fixture(
    params=[
        pytest.param(SAMPLE_AAPL, id="sample-AAPL"),
        pytest.param(SHARED_SPY, id="shared-SPY", marks=pytest.mark.shared_data),
    ]
)
def csv_path(request: pytest.FixtureRequest) -> Path:
    return need_shared(request.param) if request.param != SAMPLE_AAPL else SAMPLE_AAPL


def yahoo(path: Path) -> bt.feeds.YahooFinanceCSVData:
    return bt.feeds.YahooFinanceCSVData(dataname=str(path), adjclose=True)


def frame(path: Path) -> pd.DataFrame:
    """The CSV as a PandasData-ready frame, close = adjusted close."""
    df = pd.read_csv(path, parse_dates=["Date"], index_col="Date")
    return pd.DataFrame({"close": df["Adj Close"].astype(float)}, index=df.index)


def pandas_feed(df: pd.DataFrame) -> bt.feeds.PandasData:
    return bt.feeds.PandasData(
        dataname=df, open=None, high=None, low=None, volume=None, openinterest=None
    )


class Record(bt.Strategy):
    """Records (date, code) on every bar of the watched feed, prenext included."""

    params = (("watch", 0), ("regime", None))

    def __init__(self) -> None:
        self.watched = self.datas[self.p.watch]
        self.regime = RegimeIndicator(self.watched, **(self.p.regime or {}))
        self.rows: Rows = []
        self.first_next_len: int | None = None
        self._last = 0

    def prenext(self) -> None:
        if len(self.watched) and len(self.watched) != self._last:
            self._last = len(self.watched)
            self.rows.append((self.watched.datetime.date(0), int(self.regime[0])))

    def next(self) -> None:
        if self.first_next_len is None:
            self.first_next_len = len(self)
        self.prenext()


def run_strategy(*feeds: bt.AbstractDataBase, **kwargs: Any) -> Record:
    cerebro_kw = {k: kwargs.pop(k) for k in ("runonce", "preload", "exactbars") if k in kwargs}
    cerebro = bt.Cerebro(stdstats=False, **cerebro_kw)
    for feed in feeds:
        cerebro.adddata(feed)
    cerebro.addstrategy(Record, **kwargs)
    return cerebro.run()[0]


def run(feed: bt.AbstractDataBase, **kwargs: Any) -> Rows:
    return run_strategy(feed, **kwargs).rows


@cache
def reference(path: Path) -> Rows:
    """Codes of the default run (runonce and preload on) on a Yahoo CSV."""
    return run(yahoo(path))


@cache
def pandas_reference(path: Path) -> Rows:
    """Codes of the default run on the CSV's adjusted closes as a PandasData feed."""
    return run(pandas_feed(frame(path)))


def test_params_are_the_regime_config_fields() -> None:
    expected = [(f.name, f.default) for f in fields(RegimeConfig) if f.name != "data"]
    assert list(RegimeIndicator.params._getitems()) == expected


def test_labels_match_the_default_regimes_and_label_of() -> None:
    assert REGIME_LABELS == RegimeOverrideConfig().regimes == ("bull", "neutral", "bear", "crisis")
    assert [label_of(c) for c in (0, 1, 2.0, 3.0)] == list(REGIME_LABELS)
    for bad in (4, -1, 1.5, math.nan, "bull"):
        with pytest.raises(ValueError, match="unknown regime code"):
            label_of(bad)  # type: ignore[arg-type]


def test_rules_in_priority_order() -> None:
    limits = dict(vol_high=0.25, vol_crisis=0.45, drawdown_bear=0.10, drawdown_crisis=0.20)
    assert classify(0.20, 0.10, 110, 105, 100, **limits) == 3  # deep drawdown
    assert classify(0.00, 0.45, 110, 105, 100, **limits) == 3  # extreme volatility
    assert classify(0.10, 0.10, 110, 105, 100, **limits) == 2  # drawdown
    assert classify(0.05, 0.10, 95, 98, 100, **limits) == 2  # below a falling trend
    assert classify(0.00, 0.10, 110, 105, 100, **limits) == 0  # calm uptrend
    assert classify(0.00, 0.30, 110, 105, 100, **limits) == 1  # uptrend, high volatility
    assert classify(0.00, 0.10, 95, 105, 100, **limits) == 1  # mixed trend
    assert classify(0.00, None, 110, 105, 100, **limits) == 1  # volatility not known yet
    assert classify(0.00, 0.10, 110, None, None, **limits) == 1  # trend not known yet


@pytest.mark.parametrize(
    "change",
    [{"fast_period": 200}, {"vol_period": 1}, {"drawdown_period": 0}, {"confirm_bars": 0}],
)
def test_bad_params_are_rejected(change: dict[str, int]) -> None:
    key = next(iter(change))
    with pytest.raises(ValueError, match=f"^{key}"):
        RegimeState(RegimeConfig(**change))
    with pytest.raises(ValueError, match=f"^{key}"):
        run(yahoo(SAMPLE_AAPL), regime=change)


def documented_labels(close: pd.Series, config: RegimeConfig) -> list[int]:
    """docs/regime.md computed with pandas, independently of RegimeState: the raw label of
    each bar from rolling windows, then the confirmation and the drawdown floor."""
    n = pd.Series(range(1, len(close) + 1), index=close.index)
    fast = close.rolling(config.fast_period, min_periods=1).mean().where(n > config.fast_period)
    slow = close.rolling(config.slow_period, min_periods=1).mean().where(n > config.fast_period)
    returns = pd.Series(np.log(close / close.shift()), index=close.index)
    vol = returns.rolling(config.vol_period).std() * math.sqrt(252)
    drawdown = 1 - close / close.rolling(config.drawdown_period, min_periods=1).max()
    crisis = (drawdown >= config.drawdown_crisis) | (vol >= config.vol_crisis)
    bear = (drawdown >= config.drawdown_bear) | ((close < slow) & (fast < slow))
    bull = (fast > slow) & (close > slow) & (vol < config.vol_high)
    raw = pd.Series(np.select([crisis, bear, bull], [3, 2, 0], default=1), index=close.index)
    calmest = raw.rolling(config.confirm_bars).min()
    most_stressed = raw.rolling(config.confirm_bars).max()
    floor = np.select(
        [drawdown >= config.drawdown_crisis, drawdown >= config.drawdown_bear], [3, 2], default=0
    )
    labels, code = [], 1
    for low, high, least in zip(calmest, most_stressed, floor, strict=True):
        if low > code:
            code = int(low)
        elif high < code:
            code = int(high)
        code = max(code, int(least))
        labels.append(code)
    return labels


@pytest.mark.parametrize("confirm_bars", [1, 8])
def test_labels_follow_the_documented_rules(csv_path: Path, confirm_bars: int) -> None:
    df = frame(csv_path)
    config = RegimeConfig(confirm_bars=confirm_bars)
    rows = run(pandas_feed(df), regime={"confirm_bars": confirm_bars})
    expected = documented_labels(df["close"], config)
    assert [code for _, code in rows] == expected
    changes = sum(a != b for a, b in zip(expected, expected[1:], strict=False))
    assert changes > 5  # the series does move between regimes
    if confirm_bars > 1:  # confirmation holds labels back: fewer changes than the raw labels
        raw = documented_labels(df["close"], RegimeConfig(confirm_bars=1))
        assert changes < sum(a != b for a, b in zip(raw, raw[1:], strict=False))


def test_a_code_on_every_bar_from_the_first(csv_path: Path) -> None:
    strategy = run_strategy(yahoo(csv_path))
    n_bars = len(frame(csv_path))
    assert strategy.first_next_len == 1  # the indicator does not delay the strategy
    assert len(strategy.rows) == n_bars
    assert {code for _, code in strategy.rows} <= {0, 1, 2, 3}
    warmup = [code for _, code in strategy.rows[: RegimeConfig().fast_period]]
    assert 0 not in warmup  # no bull call before the trend has been measured


@pytest.mark.parametrize("runonce", [True, False])
@pytest.mark.parametrize("preload", [True, False])
def test_same_values_in_every_run_mode(csv_path: Path, runonce: bool, preload: bool) -> None:
    assert run(yahoo(csv_path), runonce=runonce, preload=preload) == reference(csv_path)


def test_same_values_with_exactbars(csv_path: Path) -> None:
    """Rolling windows live in the indicator, so trimmed line buffers do not change anything."""
    assert run(yahoo(csv_path), runonce=False, exactbars=1) == reference(csv_path)


@pytest.mark.parametrize("runonce", [True, False])
@pytest.mark.parametrize("preload", [True, False])
def test_no_look_ahead(csv_path: Path, runonce: bool, preload: bool) -> None:
    """Labels of the series cut at random bars equal the full series' labels up to the cut."""
    df = frame(csv_path)
    full = pandas_reference(csv_path)
    cuts = np.random.default_rng(len(df)).integers(30, len(df), size=3)
    for n in sorted(cuts):
        rows = run(pandas_feed(df.iloc[:n]), runonce=runonce, preload=preload)
        assert rows == full[:n], n


def test_missing_closes_repeat_the_previous_code(csv_path: Path) -> None:
    df = frame(csv_path)
    holes = df.index[[5, 300, 301, 1500]]
    with_nan = df.copy()
    with_nan.loc[holes, "close"] = float("nan")
    rows = run(pandas_feed(with_nan))
    expected = dict(run(pandas_feed(df.drop(holes))))
    hole_days = {ts.date() for ts in holes}
    for i, (day, code) in enumerate(rows):
        assert code == (rows[i - 1][1] if day in hole_days else expected[day])


@pytest.mark.shared_data
@pytest.mark.parametrize("runonce", [True, False])
def test_watched_feed_on_its_own_calendar(runonce: bool) -> None:
    """A watched feed that starts later and skips days gets the values of a run on it alone."""
    spy = frame(need_shared(SHARED_SPY))
    aapl = frame(SAMPLE_AAPL)
    gappy = aapl.drop(aapl.index[100:400:7])
    together = run_strategy(pandas_feed(spy), pandas_feed(gappy), watch=1, runonce=runonce).rows
    assert together == run(pandas_feed(gappy))


def test_from_config_passes_the_profile_block(csv_path: Path) -> None:
    config = RegimeConfig(data="X", fast_period=20, slow_period=100, vol_crisis=0.6)
    seen: dict[str, Any] = {}

    class FromConfig(bt.Strategy):
        def __init__(self) -> None:
            self.regime = RegimeIndicator.from_config(self.data, config)
            seen.update(self.regime.p._getkwargs())

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(yahoo(csv_path))
    cerebro.addstrategy(FromConfig)
    cerebro.run()
    assert seen == {f.name: getattr(config, f.name) for f in fields(config) if f.name != "data"}


@pytest.mark.shared_data
def test_spy_crises_and_bull_years() -> None:
    spy_rows = reference(need_shared(SHARED_SPY))

    def labels(year: int, month: int | None = None) -> Counter[str]:
        return Counter(
            label_of(code)
            for day, code in spy_rows
            if day.year == year and (month is None or day.month == month)
        )

    assert labels(2008, 10)["crisis"] > 0
    assert labels(2020, 3)["crisis"] > 0
    for year in (2013, 2017):
        counts = labels(year)
        assert counts["bull"] >= 0.8 * sum(counts.values()), (year, counts)
        assert counts["crisis"] == 0


@pytest.mark.shared_data
def test_sp500_labels_are_stable_and_still_catch_both_bear_markets() -> None:
    """The targets of docs/regime.md on the S&P 500, 2000-2013, with the default parameters."""
    df = frame(need_shared(SHARED_GSPC))
    state = RegimeState(RegimeConfig())
    labels = pd.Series([state.update(c) for c in df["close"]], index=df.index)
    assert list(labels) == documented_labels(df["close"], RegimeConfig())
    period = labels.loc["2000":"2013"]
    changes = int((period != period.shift()).iloc[1:].sum())
    assert changes / 14 <= 6
    assert (labels.loc["2008-09-15":"2009-03-09"] >= 2).mean() >= 0.8
    for start, end in (("2000", "2002"), ("2007", "2009")):
        close, found = df["close"].loc[start:end], labels.loc[start:end]
        peak = close.idxmax()
        first_drawdown = close.loc[peak:][close.loc[peak:] <= 0.9 * close[peak]].index[0]
        entered = found.loc[peak:][found.loc[peak:] >= 2].index[0]
        assert close.index.get_loc(entered) - close.index.get_loc(first_drawdown) <= 30
