"""The regime label reaches the orchestrator at the first bar and when it changes (SPEC 5).

Each bar between changes used to carry it too; a run that still pushes it every bar (the
former contract) is the reference: the same audit records (wall times aside, trace ids
included), the same fills and the same final value, for windows counted in decisions, bars and
days, and two strategies (scores and regime, daily signals).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import backtrader as bt
import pandas as pd
import pytest
import yaml

from bt_protection.audit import read_audit
from bt_protection.data import load_universe
from bt_protection.integration.feeds import add_feeds
from bt_protection.shipped import PROFILES, SAMPLE_DATA
from bt_protection.strategies.momentum_rotation import MomentumRotation
from bt_protection.strategies.sma_crossover import SmaCrossover

BALANCED = yaml.safe_load((PROFILES / "balanced.yaml").read_text())


def balanced(window: str, cooldown: str = "10 bars") -> dict[str, Any]:
    """`balanced.yaml` with another override window (and cooldown)."""
    profile = {**BALANCED, "name": f"balanced, window {window}"}
    override = {**BALANCED["protections"]["regime_override"], "window": window}
    override["cooldown"] = cooldown
    profile["protections"] = {**BALANCED["protections"], "regime_override": override}
    return profile


@cache
def frames() -> dict[str, pd.DataFrame]:
    return load_universe(SAMPLE_DATA, start="2017-06-01", end="2020-12-31")


def push_every_bar(strategy: type) -> type:
    """`strategy` reporting the label at every bar, as the mixin did before."""

    def _notify_each_bar(self: Any, qorders: Any = (), qtrades: Any = ()) -> None:
        self.protection.regime_each_bar = True
        strategy._notify_each_bar(self, list(qorders), list(qtrades))

    return type(f"EveryBar{strategy.__name__}", (strategy,), {"_notify_each_bar": _notify_each_bar})


def run(
    strategy: type, profile: dict[str, Any], audit: Path, runonce: bool
) -> tuple[Any, list[Any], float]:
    calls: list[tuple[int, str, bool]] = []
    cerebro = bt.Cerebro(stdstats=False, runonce=runonce)
    add_feeds(cerebro, frames())
    cerebro.broker.setcash(100_000)
    cerebro.addstrategy(strategy, protection=profile, audit_path=str(audit))

    class Spy(bt.Analyzer):  # every on_regime call: (bar, label, a system wanted it each bar)
        def start(self) -> None:
            orch = self.strategy.protection
            original = orch.on_regime

            def on_regime(date: Any, regime: str, bar: int | None = None) -> None:
                calls.append((int(bar or 0), regime, orch.regime_each_bar))
                original(date, regime, bar=bar)

            orch.on_regime = on_regime  # type: ignore[method-assign]

    cerebro.addanalyzer(Spy)
    strat = cerebro.run()[0]
    fills = [
        (o.data._name, bt.num2date(o.executed.dt), o.executed.size, o.executed.price)
        for o in strat._orders
        if o.status == o.Completed
    ]
    return calls, fills, cerebro.broker.getvalue()


CASES = [
    (MomentumRotation, "2 decisions", "10 bars", True),
    (MomentumRotation, "3 bars", "1 bars", False),
    (SmaCrossover, "2 decisions", "10 bars", True),
    (SmaCrossover, "5 bars", "2 bars", True),
    (SmaCrossover, "10 days", "5 days", False),
]


@pytest.mark.parametrize(("strategy", "window", "cooldown", "runonce"), CASES)
def test_on_change_equals_every_bar(
    tmp_path: Path, strategy: type, window: str, cooldown: str, runonce: bool
) -> None:
    profile = balanced(window, cooldown)
    calls, fills, value = run(strategy, profile, tmp_path / "change.jsonl", runonce)
    every = push_every_bar(strategy)
    _, every_fills, every_value = run(every, profile, tmp_path / "every.jsonl", runonce)
    audit = list(read_audit(tmp_path / "change.jsonl", drop_wall=True))
    every = list(read_audit(tmp_path / "every.jsonl", drop_wall=True))
    assert audit == every
    assert (fills, value) == (every_fills, every_value)
    kinds = {r["kind"] for r in audit}
    assert {"regime_change", "override_window_opened", "override_window_closed"} <= kinds
    # at the first bar, then only on a change or while an open window asked for each bar
    bars = len(next(iter(frames().values())))
    assert calls[0][0] == 0
    last = calls[0][1]
    for (bar, label, wanted), before in zip(calls[1:], calls, strict=False):
        assert bar > before[0]
        assert label != last or wanted, (bar, label)
        last = label
    assert len(calls) < bars / 3, f"{len(calls)} calls in {bars} bars"
