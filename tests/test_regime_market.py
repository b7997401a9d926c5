"""The regime watches the market: which prices it reads, and what an override does on real data.

Real backtests on the bundled data: the shipped sample (six stocks, the composite) and `data/etf17`
(ETFs with SPY, the 2008 crisis).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import backtrader as bt
import numpy as np
import pandas as pd
import pytest
from conftest import PROJECT_ROOT, SAMPLE_DATA

from bt_protection.audit import read_audit
from bt_protection.compare import run_comparison
from bt_protection.data import load_universe
from bt_protection.errors import UserError
from bt_protection.integration.feeds import add_feeds
from bt_protection.integration.regime import CompositeIndex, RegimeIndicator
from bt_protection.regimes import regime_source
from bt_protection.runner import RunSpec, execute_run
from bt_protection.shipped import PROFILES

ETF17 = PROJECT_ROOT / "data" / "etf17"
EXITS = ("close", "decrease", "reverse")


def test_regime_source_is_the_named_feed_the_only_feed_or_the_composite() -> None:
    feeds = ["AAPL", "AMZN", "NVDA"]
    assert regime_source("AMZN", feeds).label == "AMZN"
    assert regime_source(None, ["SPY"]).label == "SPY"
    composite = regime_source(None, feeds)
    assert composite.feed is None and composite.label == "composite(AAPL,AMZN,NVDA)"
    with pytest.raises(UserError) as error:
        regime_source("SPY", feeds)
    assert str(error.value) == (
        "regime data 'SPY' is not a feed of this run; feeds: AAPL, AMZN, NVDA."
    )


class _Composite(bt.Strategy):
    """Records the composite of every feed and the regime the indicator reads from it."""

    def __init__(self) -> None:
        self.index = CompositeIndex(*self.datas)
        self.regime = RegimeIndicator(self.index)
        self.values: list[tuple[float, float]] = []

    def next(self) -> None:
        self.values.append((self.index.close[0], self.regime.regime[0]))


def _composite(frames: dict[str, pd.DataFrame], **cerebro: bool) -> list[tuple[float, float]]:
    engine = bt.Cerebro(stdstats=False, **cerebro)
    add_feeds(engine, frames)
    engine.addstrategy(_Composite)
    return engine.run()[0].values


@pytest.fixture(scope="module")
def three_stocks() -> dict[str, pd.DataFrame]:
    frames = load_universe(SAMPLE_DATA, ["AAPL", "NFLX", "NVDA"], end="2016-12-31")
    holes = frames["NFLX"].copy()
    holes.iloc[[10, 11, 200], holes.columns.get_loc("close")] = float("nan")  # no bar there
    frames["NFLX"] = holes
    return frames


@pytest.mark.parametrize("runonce", [True, False])
def test_composite_is_the_chained_mean_of_the_feeds_returns(
    three_stocks: dict[str, pd.DataFrame], runonce: bool
) -> None:
    values = [value for value, _ in _composite(three_stocks, runonce=runonce)]
    closes = pd.DataFrame({t: f["close"] for t, f in three_stocks.items()})
    returns = closes / closes.ffill().shift() - 1  # from each feed's last valid close
    expected = 100 * (1 + returns.mean(axis=1, skipna=True).fillna(0)).cumprod()
    assert values == pytest.approx(list(expected), rel=1e-12)
    assert values[0] == 100.0


@pytest.mark.parametrize("runonce", [True, False])
@pytest.mark.parametrize("preload", [True, False])
def test_composite_regime_has_no_look_ahead(
    three_stocks: dict[str, pd.DataFrame], runonce: bool, preload: bool
) -> None:
    """The composite and its regime on the feeds cut at random bars equal the full run's."""
    full = _composite(three_stocks)
    assert len({code for _, code in full}) > 1  # the regime does move on these stocks
    for n in sorted(np.random.default_rng(7).integers(60, len(full), size=2)):
        cut = {t: f.iloc[:n] for t, f in three_stocks.items()}
        assert _composite(cut, runonce=runonce, preload=preload) == full[:n], n


def _run(tmp: Path, profile: str, data: Path, **kwargs: Any) -> Path:
    spec = RunSpec("momentum_rotation", str(PROFILES / f"{profile}.yaml"), data=str(data), **kwargs)
    return execute_run(spec, tmp / profile)


def test_run_names_the_regime_source_in_the_header_and_the_summary(tmp_path: Path) -> None:
    composite = _run(tmp_path / "a", "off", SAMPLE_DATA, end="2014-12-31")
    named = _run(tmp_path / "b", "off", SAMPLE_DATA, end="2014-12-31", regime_data="NVDA")
    for folder, label in (
        (composite, "composite(AAPL,AMZN,GOOG,META,NFLX,NVDA)"),
        (named, "NVDA"),
    ):
        summary = json.loads((folder / "summary.json").read_text())
        header = next(read_audit(folder / "audit.jsonl"))
        assert summary["regime_data"] == header["regime_data"] == label
    # the watched prices differ, so the regime changes differ
    changes = [
        [
            (r["time"], r["to"])
            for r in read_audit(f / "audit.jsonl")
            if r["kind"] == "regime_change"
        ]
        for f in (composite, named)
    ]
    assert changes[0] and changes[1] and changes[0] != changes[1]


def test_a_shipped_profile_lets_exits_through_in_the_2008_crisis(tmp_path: Path) -> None:
    """balanced on the bundled ETFs watching SPY: the bear->crisis change of September 2008
    opens a critical window; a grace denial before it, an exit it approves, both audited."""
    folder = _run(tmp_path, "balanced", ETF17, end="2009-06-30", regime_data="SPY")
    records = list(read_audit(folder / "audit.jsonl"))
    assert records[0]["regime_data"] == "SPY"
    opened = next(
        r
        for r in records
        if r["kind"] == "override_window_opened" and r["transition"] == "bear->crisis"
    )
    assert opened["time"][:7] == "2008-09" and opened["severity"] == "critical"
    assert "grace_period" in opened["lifts"]
    closed = next(
        r for r in records if r["kind"] == "override_window_closed" and r["seq"] > opened["seq"]
    )
    decisions = [r for r in records if r["kind"] == "decision" and r["action"] in EXITS]
    before = [r for r in decisions if r["seq"] < opened["seq"]]
    inside = [r for r in decisions if opened["seq"] < r["seq"] < closed["seq"]]
    denied = [r for r in before if not r["approved"] and "grace_period" in r["blocking_systems"]]
    lifted = [r for r in inside if r["approved"] and "grace_period" in r["overridden_systems"]]
    assert denied, "no exit was denied by the grace period before the window"
    assert lifted, "no exit was approved by lifting the grace period inside the window"
    assert all(r["blocking_systems"] == [] for r in lifted)
    assert "the regime override lifts grace_period" in lifted[0]["reason"]
    # the broker executed the lifted exits
    orders = pd.read_csv(folder / "orders.csv", keep_default_na=False)
    for record in lifted:
        row = orders[(orders["attempt"] == record["metadata"]["attempt"])].iloc[0]
        assert (
            row["status"] == "Completed" and row["filled"] < 0 and row["protection"] == "approved"
        )


def test_on_the_main_job_every_shipped_profile_binds_and_two_override_in_a_crash(
    tmp_path: Path,
) -> None:
    """`bt-protection compare` (momentum_rotation on the shipped sample under the five default
    profiles): every protected profile trades differently from `off`, and at least two apply
    overrides in the 2020 crash or the 2022 bear market, read from their audits."""
    comparison = run_comparison(out=tmp_path / "cmp", jobs=1, progress=False)
    equity = {name: (run.path / "equity.csv").read_text() for name, run in comparison.runs.items()}
    assert set(equity) == {"off", "conservative", "balanced", "aggressive", "portfolio_guard"}
    assert all(equity[name] != equity["off"] for name in equity if name != "off")
    in_crash = {}
    for name, run in comparison.runs.items():
        in_crash[name] = [
            (r["time"][:10], r["asset"], r["overridden_systems"])
            for r in read_audit(run.path / "audit.jsonl")
            if r["kind"] == "decision"
            and r["overridden_systems"]
            and ("2020-02-19" <= r["time"][:10] <= "2020-06-30" or r["time"][:4] == "2022")
        ]
    assert sum(bool(found) for found in in_crash.values()) >= 2, in_crash
