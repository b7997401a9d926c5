"""A user's own strategy: from a file outside the project, from a module on sys.path, or as a
class; with params; a plain `bt.Strategy` composed with the mixin decides as a hand-written
mixin subclass does."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import backtrader as bt
import pandas as pd
import pytest
from conftest import SAMPLE_DATA

from bt_protection.audit import read_audit
from bt_protection.cli import main
from bt_protection.data import load_universe
from bt_protection.errors import UserError
from bt_protection.integration.feeds import add_feeds
from bt_protection.integration.mixin import ProtectionMixin
from bt_protection.models import ProtectionDecision
from bt_protection.runner import RunSpec, execute_run
from bt_protection.shipped import PROFILES as CONFIGS
from bt_protection.strategies.sma_crossover import SmaCrossover, SmaCrossoverSignals
from bt_protection.strategies_registry import (
    convert_params,
    resolve_strategy,
    strategy_label,
    strategy_reference,
    with_protection,
)

START, END = "2019-01-01", "2019-12-31"
WINDOW = ["--data", str(SAMPLE_DATA), "--start", START, "--end", END]
PROFILES = [str(CONFIGS / "off.yaml"), str(CONFIGS / "balanced.yaml")]
TREND = textwrap.dedent(
    '''
    import backtrader as bt


    class Trend(bt.Strategy):
        """Hold `weight` of the portfolio in each asset closing above its `period`-bar SMA."""

        params = (("period", 50), ("weight", 0.1), ("long_only", True), ("tag", "t"),
                  ("cap", None), ("assets", ("AAPL",)))

        def __init__(self):
            self.above = [d.close > bt.ind.SMA(d.close, period=self.p.period) for d in self.datas]

        def next(self):
            for data, above in zip(self.datas, self.above):
                held = self.getposition(data).size
                if above[0] and not held:
                    self.order_target_percent(data=data, target=self.p.weight)
                elif not above[0] and held:
                    self.close(data=data)


    def helper():
        return None
    '''
)


class Holder:
    class Nested(bt.Strategy):
        """A nested class, named `module:Holder.Nested`."""


def orders(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "orders.csv", keep_default_na=False)


def first_weight(folder: Path) -> float:
    """The portfolio weight the run's first order bought (100,000 of starting cash)."""
    first = orders(folder).iloc[0]
    return float(first["filled"]) * float(first["price"]) / 100_000


def test_a_strategy_file_outside_the_project_runs_and_compares_with_params(
    tmp_path: Path,
) -> None:
    file = tmp_path / "elsewhere" / "trend_file.py"
    file.parent.mkdir()
    file.write_text(TREND)
    source = f"{file}:Trend"
    params = ["--param", "weight=0.3", "--param", "period=20"]
    run = tmp_path / "run"
    argv = ["run", "--strategy", source, "--profile", PROFILES[1], *params, *WINDOW]
    assert main([*argv, "--out", str(run)]) == 0
    fingerprint = json.loads((run / "summary.json").read_text())["fingerprint"]
    assert fingerprint["strategy"] == "trend_file.py:Trend"  # the same wherever the file lies
    assert fingerprint["strategy_params"] == {"period": 20, "weight": 0.3}
    assert first_weight(run) == pytest.approx(0.3, rel=0.02)  # the param reached the strategy

    out = tmp_path / "cmp"
    argv = ["compare", "--strategy", source, *params, "--profiles", *PROFILES, "--jobs", "2"]
    assert main([*argv, *WINDOW, "--out", str(out)]) == 0  # workers load the file themselves
    manifest = json.loads((out / "comparison.json").read_text())
    assert (manifest["strategy"], manifest["strategy_params"]) == (
        "trend_file.py:Trend",
        {"period": 20, "weight": 0.3},
    )
    assert (out / "balanced" / "orders.csv").read_bytes() == (run / "orders.csv").read_bytes()
    assert first_weight(out / "off") == pytest.approx(0.3, rel=0.02)


def test_a_module_on_sys_path_runs_and_compares_with_params(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "site" / "my_strategies"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "trend.py").write_text(TREND)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    source = "my_strategies.trend:Trend"
    spec = RunSpec(
        source,
        PROFILES[0],
        data=SAMPLE_DATA,
        start=START,
        end=END,
        params={"weight": 0.2, "long_only": "yes"},
    )
    run = execute_run(spec, tmp_path / "run")
    assert first_weight(run) == pytest.approx(0.2, rel=0.02)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["strategy"] == source
    assert summary["fingerprint"]["strategy_params"] == {"long_only": True, "weight": 0.2}

    out = tmp_path / "cmp"
    argv = ["compare", "--strategy", source, "--param", "weight=0.2", "--param", "long_only=yes"]
    assert main([*argv, "--profiles", *PROFILES, "--jobs", "2", *WINDOW, "--out", str(out)]) == 0
    assert (out / "off" / "orders.csv").read_bytes() == (run / "orders.csv").read_bytes()


def test_strategy_sources_resolve_to_the_same_class(tmp_path: Path) -> None:
    assert resolve_strategy("bt_protection.strategies.sma_crossover:SmaCrossover") is SmaCrossover
    assert resolve_strategy(SmaCrossoverSignals) is SmaCrossoverSignals
    file = tmp_path / "mine.py"
    file.write_text(TREND)
    loaded = resolve_strategy(f"{file}:Trend")
    assert resolve_strategy(f"{file}:Trend") is loaded  # a file loads once
    assert strategy_reference(loaded) == f"{file}:Trend"  # what workers are given
    assert strategy_reference(SmaCrossover) == "bt_protection.strategies.sma_crossover:SmaCrossover"

    class Local(bt.Strategy):
        pass

    assert strategy_reference(Local) is None  # only this process has it: runs in-process
    assert strategy_label(loaded) == "mine.py:Trend"  # as the workers, given the file, name it
    nested = "test_own_strategy:Holder.Nested"
    assert resolve_strategy(nested) is Holder.Nested
    assert strategy_reference(Holder.Nested) == nested


def test_params_are_converted_to_the_type_of_their_default(tmp_path: Path) -> None:
    file = tmp_path / "mine.py"
    file.write_text(TREND)
    trend = resolve_strategy(f"{file}:Trend")
    text = {"period": " 30", "weight": "0.25", "long_only": "off", "tag": "x y", "cap": "0.5"}
    assert convert_params(trend, text) == {
        "period": 30,
        "weight": 0.25,
        "long_only": False,
        "tag": "x y",
        "cap": 0.5,
    }
    assert convert_params(trend, {"cap": "null", "weight": 1, "assets": ("NVDA",)}) == {
        "cap": None,
        "weight": 1.0,
        "assets": ("NVDA",),
    }
    with pytest.raises(UserError, match=r"takes a whole number like its default 50, not 2.5"):
        convert_params(trend, {"period": 2.5})
    with pytest.raises(UserError, match="only to bool, int, float and str"):
        convert_params(trend, {"assets": "NVDA"})
    with pytest.raises(UserError, match="has no param 'protection'; its params: period"):
        convert_params(with_protection(trend), {"protection": "x"})  # the run sets it


# --------------------------------------------------------------------------- no edit needed


def decisions_of(strategy: type, frames: dict[str, pd.DataFrame]) -> list[ProtectionDecision]:
    engine = bt.Cerebro(stdstats=False)
    add_feeds(engine, frames)
    engine.broker.setcash(100_000.0)
    engine.addstrategy(strategy, protection=str(CONFIGS / "balanced.yaml"))
    found: list[ProtectionDecision] = []

    class Listen(bt.Analyzer):
        def start(self) -> None:
            self.strategy.add_protection_listener(found.append)

    engine.addanalyzer(Listen)
    engine.run()
    return found


def test_a_plain_strategy_decides_as_the_hand_written_mixin_subclass(tmp_path: Path) -> None:
    composed = with_protection(SmaCrossoverSignals)
    assert composed.__mro__[1:3] == (ProtectionMixin, SmaCrossoverSignals)
    assert with_protection(SmaCrossover) is SmaCrossover  # already protected: as it is
    frames = load_universe(SAMPLE_DATA, None, pd.Timestamp("2016-01-01"), pd.Timestamp(END))
    plain, written = decisions_of(composed, frames), decisions_of(SmaCrossover, frames)
    assert plain == written  # decision_time_us (wall clock) takes no part in equality
    assert sum(not d.approved for d in plain) > 0 and len(plain) > 50

    # through the runner: the same orders and audit decisions
    def run(strategy: Any, name: str) -> Path:
        spec = RunSpec(strategy, PROFILES[1], data=SAMPLE_DATA, start="2016-01-01", end=END)
        return execute_run(spec, tmp_path / name)

    runs = run(SmaCrossoverSignals, "plain"), run("sma_crossover", "mixin")
    assert (runs[0] / "orders.csv").read_bytes() == (runs[1] / "orders.csv").read_bytes()
    audits = [  # the session id derives from the header, which names the strategy
        [
            {k: v for k, v in r.items() if k != "session_id"}
            for r in read_audit(folder / "audit.jsonl", drop_wall=True)
            if r["kind"] != "header"
        ]
        for folder in runs
    ]
    assert audits[0] == audits[1]
    labels = [json.loads((f / "summary.json").read_text())["strategy"] for f in runs]
    assert labels == ["bt_protection.strategies.sma_crossover:SmaCrossoverSignals", "sma_crossover"]


@pytest.mark.parametrize("command", ["compare", "tune"])
def test_a_class_only_this_process_has_is_refused_for_a_dask_cluster(
    command: str, tmp_path: Path
) -> None:
    from bt_protection.compare import run_comparison
    from bt_protection.tune import walk_forward

    class Local(bt.Strategy):
        """Defined in a function: no other process can import it."""

    window = {"data": str(SAMPLE_DATA), "start": START, "end": END}
    with pytest.raises(UserError, match="a Dask cluster cannot load it") as caught:
        if command == "compare":
            run_comparison(
                Local, PROFILES, scheduler="tcp://127.0.0.1:1", out=tmp_path / "c", **window
            )
        else:
            walk_forward(
                Local,
                {"protections.holding_period.min_hold": ["5 bars", "10 bars"]},
                scheduler="tcp://127.0.0.1:1",
                out=tmp_path / "t",
                train="3m",
                test="3m",
                warmup=20,
                **window,
            )
    assert "Local" in str(caught.value)
    assert not any(tmp_path.iterdir()), "nothing written"
