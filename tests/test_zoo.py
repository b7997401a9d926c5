"""The strategy zoo (issue 8): one real backtrader strategy per order shape, each run under
`balanced`, `conservative` and a strict custom profile, and checked from the outside by
`zoo.checker` (positions rebuilt from the broker's executed orders)."""

from __future__ import annotations

from functools import cache
from typing import Any

import backtrader as bt
import pandas as pd
import pytest
from conftest import SAMPLE_DATA
from zoo import strategies as zoo
from zoo.checker import Executions, violations

from bt_protection.data import load_universe
from bt_protection.integration.feeds import add_feeds
from bt_protection.profile import load_profile
from bt_protection.shipped import PROFILES as CONFIGS

TICKERS = ("AAPL", "AMZN", "NVDA")
STRICT = {
    "name": "strict",
    "protections": {
        "core_asset_immunity": {"enabled": True, "assets": ["NVDA"]},
        "grace_period": {"enabled": True, "duration": "3 bars"},
        "holding_period": {
            "enabled": True,
            "min_hold": "15 bars",
            "protect": ["close", "decrease", "reverse"],
        },
        "whipsaw_protection": {
            "enabled": True,
            "max_cycles": 1,
            "window": "30 days",
            "min_reentry": "8 bars",
        },
    },
}
PROFILES = {
    "balanced": str(CONFIGS / "balanced.yaml"),
    "conservative": str(CONFIGS / "conservative.yaml"),
    "strict": STRICT,
}


@cache
def frames() -> dict[str, pd.DataFrame]:
    return load_universe(SAMPLE_DATA, list(TICKERS), "2018-01-01", "2019-12-31")


def weekly(cerebro: bt.Cerebro, feeds: list[Any]) -> None:
    cerebro.resampledata(feeds[0], timeframe=bt.TimeFrame.Weeks)  # no name: never traded


# shape -> (strategy, Cerebro params, set-up of the engine after the feeds are added)
SHAPES: dict[str, tuple[type, dict[str, Any], Any]] = {
    "bracket breakout": (zoo.BracketBreakout, {}, None),
    "buy-stop entries": (zoo.StopEntryBreakout, {}, None),
    "close+sell reversal": (zoo.CloseSellReversal, {}, None),
    "SignalStrategy LONGSHORT": (zoo.SignalLongShort, {}, None),
    "stop-and-reverse shorts": (zoo.StopAndReverse, {}, None),
    "cheat-on-close": (zoo.CheatOnClose, {}, lambda c, f: c.broker.set_coc(True)),
    "cheat-on-open": (zoo.CheatOnOpen, {"cheat_on_open": True}, None),
    "unnamed weekly resample": (zoo.WeeklyFilter, {}, weekly),
    "target percent with a Sizer": (
        zoo.TargetPercentPortfolio,
        {},
        lambda c, f: c.addsizer(zoo.FractionSizer),
    ),
    "timers": (zoo.WeeklyTimer, {}, None),
}


def run_shape(shape: str, profile: Any, **params: Any) -> Any:
    strategy, engine_params, setup = SHAPES[shape]
    cerebro = bt.Cerebro(stdstats=False, **engine_params)
    feeds = add_feeds(cerebro, frames())
    if setup is not None:
        setup(cerebro, feeds)
    cerebro.broker.setcash(100_000.0)
    cerebro.addstrategy(strategy, protection=profile, **params)
    cerebro.addanalyzer(Executions, _name="executions")
    return cerebro.run()[0]


@cache
def zoo_analysis(shape: str, profile: str) -> dict[str, Any]:
    """The executions of `shape` under the zoo profile `profile`, run once per process."""
    analysis: dict[str, Any] = run_shape(
        shape, PROFILES[profile]
    ).analyzers.executions.get_analysis()
    return analysis


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_zoo_keeps_every_rule(shape: str, profile: str) -> None:
    analysis = zoo_analysis(shape, profile)
    calendar = frames()["AAPL"].index
    found = violations(analysis, load_profile(PROFILES[profile]), calendar)
    assert not found, found[:5]
    assert analysis["decisions"], f"{shape} placed no order"
    executed = [s for s in analysis["orders"].values() if s.fills]
    assert executed, f"{shape} executed no order"


def test_zoo_is_not_vacuous() -> None:
    """Under the zoo's profiles its orders are denied and exempted, not waved through (the
    runs are shared with the test above when both run in one process)."""
    decisions = [
        d
        for shape in SHAPES
        for profile in PROFILES
        for d in zoo_analysis(shape, profile)["decisions"]
    ]
    denied = sum(not d.approved for d in decisions)
    exempt = sum(d.exempt for d in decisions)
    assert denied > 50 and exempt > 10, (denied, exempt)


def test_the_checker_sees_a_broken_rule() -> None:
    """Without protection (`off`), the same reversals break the strict rules, and the
    checker says which."""
    strategy = run_shape("close+sell reversal", {"name": "off", "protections": {}})
    analysis = strategy.analyzers.executions.get_analysis()
    found = violations(analysis, load_profile(STRICT), frames()["AAPL"].index)
    assert {what for what, _, _ in found} >= {"minimum hold", "core immunity"}
