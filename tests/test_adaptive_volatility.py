"""Values scaled by volatility (SPEC 16): the arithmetic, the boundaries, and a real backtest in
which the value in force at each bar is the one computed from past closes only."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from bt_protection.adaptive import ByVolatility, Scale
from bt_protection.audit import read_audit
from bt_protection.data import load_universe
from bt_protection.durations import Duration
from bt_protection.integration.feeds import add_feeds
from bt_protection.integration.mixin import ProtectionMixin
from bt_protection.metrics import TRADING_DAYS
from bt_protection.orchestrator import ProtectionOrchestrator
from bt_protection.shipped import SAMPLE_DATA
from tests.helpers import Clock, profile

SCALED = {"base": "20 bars", "scale": "volatility", "min": "5 bars", "max": "60 bars"}
SCALED_CYCLES = {"base": 3, "scale": "inverse_volatility", "min": 1, "max": 8}


def _bars(n: int) -> Duration:
    return Duration(n, Duration.parse("1 bars").unit)


@pytest.mark.parametrize(
    ("scale", "ratio", "expected"),
    [
        (Scale.VOLATILITY, None, 20),
        (Scale.VOLATILITY, 1.0, 20),
        (Scale.VOLATILITY, 1.5, 30),
        (Scale.VOLATILITY, 1.025, 21),  # 20.5 rounds up
        (Scale.VOLATILITY, 4.0, 60),  # clipped at max
        (Scale.VOLATILITY, 0.1, 5),  # clipped at min
        (Scale.INVERSE_VOLATILITY, 1.5, 13),  # 13.33
        (Scale.INVERSE_VOLATILITY, 0.5, 40),
        (Scale.INVERSE_VOLATILITY, 0.0, 20),  # no volatility: the base
    ],
)
def test_a_scaled_duration_is_base_times_the_ratio_clipped_and_rounded(
    scale: Scale, ratio: float | None, expected: int
) -> None:
    spec = ByVolatility(_bars(20), scale, _bars(5), _bars(60))
    assert spec.resolve("min_hold", "bull", ratio).value == _bars(expected)


def test_scaled_numbers_keep_their_type() -> None:
    whole = ByVolatility(4, Scale.VOLATILITY, 1, 10).resolve("max_cycles", None, 1.3)
    assert whole.value == 5 and isinstance(whole.value, int)
    fraction = ByVolatility(0.2, Scale.INVERSE_VOLATILITY, 0.05, 0.4).resolve("x", None, 2.0)
    assert fraction.value == pytest.approx(0.1)
    assert fraction.describe() == "x scaled by volatility x0.50 from 0.2: 0.1"


@pytest.mark.parametrize(("ratio", "hold"), [(1.5, 30), (0.5, 10), (None, 20)])
def test_a_scaled_hold_frees_the_close_exactly_where_the_same_fixed_hold_would(
    ratio: float | None, hold: int
) -> None:
    scaled = Clock(ProtectionOrchestrator(profile(holding_period={"min_hold": SCALED})), True)
    fixed = Clock(
        ProtectionOrchestrator(profile(holding_period={"min_hold": f"{hold} bars"})), True
    )
    for c in (scaled, fixed):
        c.fill("A", 0, 0, 10)
    for at in (hold - 1, hold):
        scaled.orch.on_volatility(scaled.point(at)[0], ratio, bar=at)
        got, want = scaled.ask("A", at, 10, 0), fixed.ask("A", at, 10, 0)
        assert got.approved == want.approved == (at == hold)
        if not got.approved:
            assert f"{hold - 1} of {hold} bars" in got.reason and "(min_hold " in got.reason


def test_on_volatility_refuses_a_ratio_that_is_not_a_finite_number() -> None:
    orch = ProtectionOrchestrator(profile(holding_period={"min_hold": SCALED}))
    assert orch.uses_volatility and orch.uses_regime
    with pytest.raises(ValueError, match="volatility ratio must be a finite number"):
        orch.on_volatility("2024-01-02", float("nan"), bar=0)


# --- a real backtest: the value in force at each bar, from past closes only ------------------


class Recorder(ProtectionMixin, bt.Strategy):
    """Records the holding period's min_hold in force at each bar."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def next(self) -> None:
        bar = len(self) - 1
        status = self.protection.get_protection_status(
            "AAPL", self.datas[0].datetime.datetime(0), bar=bar
        )
        self.seen.append(status["protections"]["holding_period"]["min_hold"])


def _in_force(frame: pd.DataFrame) -> list[str]:
    cerebro = bt.Cerebro(stdstats=False)
    add_feeds(cerebro, {"AAPL": frame})
    cerebro.addstrategy(
        Recorder, protection={"protections": {"holding_period": {"min_hold": SCALED}}}
    )
    strategy: Any = cerebro.run()[0]
    return list(strategy.seen)


def _expected(frame: pd.DataFrame, period: int = 20) -> list[str]:
    """The formula on the closes, with pandas: rolling realised volatility over its expanding
    median, times 20 bars, clipped to 5..60 and rounded (halves up); 20 bars while warming up."""
    returns = np.log(frame["close"]).diff()
    vol = returns.rolling(period).std(ddof=1) * np.sqrt(TRADING_DAYS)
    ratio = vol / vol.expanding().median()
    held = np.floor(np.clip(20 * ratio, 5, 60) + 0.5)
    return [f"{20 if np.isnan(h) else int(h)} bars" for h in held]


def test_the_scaled_value_at_each_bar_is_computed_from_past_closes_only() -> None:
    frame = load_universe(SAMPLE_DATA, ["AAPL"], end="2014-12-31")["AAPL"]
    full = _in_force(frame)
    assert full == _expected(frame)
    assert len(set(full)) > 5  # it moves with the market
    for n in (25, 90, 200, 400):
        assert _in_force(frame.iloc[:n]) == full[:n], n


def test_the_audit_records_each_result_as_decided_while_values_keep_changing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    blocks = {"whipsaw_protection": {"max_cycles": SCALED_CYCLES, "min_reentry": SCALED}}
    orch = ProtectionOrchestrator(profile(**blocks), audit=path)
    clock = Clock(orch, True)
    decided = []
    for bar in range(200):
        orch.on_volatility(clock.point(bar)[0], 0.3 + (bar * 7 % 23) / 10, bar=bar)
        gc.collect()  # constants of earlier values must not be freed and their ids reused
        decided.append(clock.ask(f"A{bar % 3}", bar, 0, 10))
        if bar % 5 == 0:
            clock.fill(f"A{bar % 3}", bar, 0, 10)
            clock.fill(f"A{bar % 3}", bar, 10, 0)
    orch.close()
    audited = [r for r in read_audit(path) if r["kind"] == "decision"]
    assert [[x["reason"] for x in r["results"]] for r in audited] == [
        [x.reason for x in d.results] for d in decided
    ]
    assert len({d.results[0].reason for d in decided}) > 10
