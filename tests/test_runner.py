"""`bt-protection run` and `bt_protection.runs.load_run`: real backtrader runs on real data.

The invariant tests read a run from the outside: orders.csv, profile.yaml, equity.csv (the data
calendar) and the audit, and replay the fills to check what the protections promise.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import backtrader as bt
import pandas as pd
import pytest
import yaml
from conftest import SAMPLE_DATA
from helpers import RUN_FILES, spec_action, spec_elapsed

from bt_protection.audit import read_audit
from bt_protection.cli import main
from bt_protection.errors import UserError
from bt_protection.integration.mixin import ProtectionMixin
from bt_protection.integration.recorder import ORDER_COLUMNS
from bt_protection.metrics import performance
from bt_protection.runner import RunSpec, execute_run
from bt_protection.runs import load_run
from bt_protection.shipped import PROFILES

START, END = "2016-01-01", "2019-12-31"
FILES = ("profile.yaml", "summary.json", "equity.csv", "trades.csv", "orders.csv", "audit.jsonl")
ETF17_TICKERS = ("DBA", "EEM", "GLD", "QQQ", "SPY", "TLT", "XLU")


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def run_of(tmp_path_factory: pytest.TempPathFactory):
    """Run a spec once per module (runs are shared between tests) and return its folder."""
    root = tmp_path_factory.mktemp("runs")
    done: dict[RunSpec, Path] = {}

    def run(spec: RunSpec) -> Path:
        if spec not in done:
            done[spec] = execute_run(spec, root / f"run{len(done)}")
        return done[spec]

    return run


@pytest.fixture(scope="module")
def strict_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """balanced, plus a static core asset and day-based hold and whipsaw durations.

    The core asset is AAPL, a feed of the sample; `strict_etf.yaml` beside it names SPY for
    the ETF universe (a core asset that names no feed of the run is refused at start)."""
    folder = tmp_path_factory.mktemp("profiles")
    shutil.copy(PROFILES / "balanced.yaml", folder)  # extends stays inside the profile's folder
    for file, core in (("strict.yaml", "AAPL"), ("strict_etf.yaml", "SPY")):
        (folder / file).write_text(
            yaml.safe_dump(
                {
                    "name": "strict",
                    "extends": "balanced.yaml",
                    "protections": {
                        "core_asset_immunity": {"assets": [core]},
                        "holding_period": {"min_hold": "30 days", "protect": ["close", "decrease"]},
                        "whipsaw_protection": {"max_cycles": 1, "window": "3 weeks"},
                    },
                }
            )
        )
    return folder / "strict.yaml"


def sample_spec(strategy: str, profile: str | Path, **kwargs: Any) -> RunSpec:
    profile = PROFILES / f"{profile}.yaml" if isinstance(profile, str) else profile
    return RunSpec(strategy, str(profile), data=str(SAMPLE_DATA), start=START, end=END, **kwargs)


def read_orders(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "orders.csv", keep_default_na=False, na_values={"price": [""]})


def decisions_by_attempt(folder: Path) -> dict[int, dict[str, Any]]:
    found: dict[int, dict[str, Any]] = {}
    for record in read_audit(folder / "audit.jsonl", drop_wall=True):
        if record["kind"] == "decision":
            attempt = record["metadata"]["attempt"]
            assert attempt not in found, f"attempt {attempt} has two decisions"
            found[attempt] = record
    return found


def cli_run(tmp: Path, *args: str) -> tuple[int, Path]:
    out = tmp / "out"
    return main(["run", *args, "--out", str(out)]), out


# --------------------------------------------------------------------------- the run folder


@pytest.mark.parametrize("strategy", ["momentum_rotation", "sma_crossover"])
@pytest.mark.parametrize("profile", ["off", "balanced"])
def test_run_folder_from_the_cli(tmp_path: Path, strategy: str, profile: str) -> None:
    profile_file = str(PROFILES / f"{profile}.yaml")
    window = ["--data", str(SAMPLE_DATA), "--start", START, "--end", END]
    code, out = cli_run(tmp_path, "--strategy", strategy, "--profile", profile_file, *window)
    assert code == 0
    assert all((out / name).is_file() for name in FILES)
    assert json.loads((out / "status.json").read_text()) == {"status": "complete"}
    assert not out.with_name("out.partial").exists()
    orders = read_orders(out)
    assert tuple(orders.columns) == ORDER_COLUMNS
    assert list(orders["attempt"]) == list(range(1, len(orders) + 1))

    decisions = decisions_by_attempt(out)
    assert sorted(decisions) == list(orders["attempt"])  # one decision per order, one-to-one
    for row in orders.itertuples():
        decision = decisions[row.attempt]
        assert decision["asset"] == row.asset
        assert decision["target_size"] - decision["current_size"] == row.size
        expected = (
            "exempt" if decision["exempt"] else "approved" if decision["approved"] else "denied"
        )
        assert row.protection == expected
        assert row.overridden_systems == ";".join(decision["overridden_systems"])
    denied = orders[orders["protection"] == "denied"]
    assert (denied["status"] == "Rejected").all() and (denied["filled"] == 0).all()
    assert (orders.loc[orders["filled"] != 0, "status"] == "Completed").all()

    summary = json.loads((out / "summary.json").read_text())
    counts = orders["protection"].value_counts()
    assert summary["orders_attempted"] == len(orders) > 0
    for label in ("approved", "denied", "exempt"):
        assert summary[f"orders_{label}"] == counts.get(label, 0)
    blocks = denied["blocking_systems"].str.split(";").explode().value_counts()
    assert {k: v for k, v in summary["denials_by_system"].items() if v} == blocks.to_dict()
    assert summary["trades"] == len(pd.read_csv(out / "trades.csv"))
    header = next(read_audit(out / "audit.jsonl"))
    assert {k: header[k] for k in summary["fingerprint"]} == summary["fingerprint"]
    assert summary["fingerprint"]["profile_hash"] == summary["profile_hash"]
    if profile == "off":
        assert summary["orders_denied"] == 0
    else:
        assert summary["orders_denied"] > 0


def test_summary_figures_follow_the_equity_curve(run_of) -> None:
    out = run_of(sample_spec("momentum_rotation", "balanced"))
    summary = json.loads((out / "summary.json").read_text())
    equity = pd.read_csv(out / "equity.csv", index_col="date", parse_dates=["date"])
    value = equity["value"]
    assert summary["total_return"] == pytest.approx(value.iloc[-1] / 100_000 - 1, rel=1e-8)
    assert summary["max_drawdown"] == pytest.approx((value / value.cummax() - 1).min(), rel=1e-8)
    assert summary["final_value"] == pytest.approx(value.iloc[-1], rel=1e-9)
    assert summary["commissions"] == pytest.approx(read_orders(out)["commission"].sum(), rel=1e-8)
    assert equity.index[0] == pd.Timestamp(summary["start"])
    assert equity.index[-1] == pd.Timestamp(summary["end"])


def test_performance_formulas_on_a_small_curve() -> None:
    equity = pd.DataFrame({"value": [100.0, 110.0, 99.0, 121.0]})
    orders = pd.DataFrame(
        {
            "filled": [1.0, -1.0, 0.0],
            "price": [100.0, 110.0, math.nan],
            "commission": [0.1, 0.11, 0.0],
        }
    )
    figures = performance(equity, orders, pd.DataFrame({"pnl": [10.0]}))
    returns = pd.Series([0.1, -0.1, 121 / 99 - 1])
    assert figures["total_return"] == pytest.approx(0.21)
    assert figures["cagr"] == pytest.approx(1.21 ** (252 / 3) - 1)
    assert figures["volatility"] == pytest.approx(returns.std() * math.sqrt(252))
    assert figures["sharpe"] == pytest.approx(returns.mean() / returns.std() * math.sqrt(252))
    assert figures["max_drawdown"] == pytest.approx(-0.1)
    assert figures["turnover"] == pytest.approx((100 + 110) / 2 / 107.5 / (3 / 252))
    assert figures["trades"] == 1
    assert figures["commissions"] == pytest.approx(0.21)
    flat = performance(pd.DataFrame({"value": [100.0, 100.0, 100.0]}), orders[:0], orders[:0])
    assert flat["sharpe"] is None and flat["volatility"] == 0.0 and flat["total_return"] == 0.0


# --------------------------------------------------------------------------- invariants


@dataclass
class _Asset:
    position: float = 0.0
    opened: tuple[int, pd.Timestamp] | None = None
    exits: list[tuple[int, pd.Timestamp]] = field(default_factory=list)


def check_invariants(folder: Path) -> dict[str, int]:
    """Replay orders.csv on the data calendar; fail on any broken promise, count the checks."""
    profile = yaml.safe_load((folder / "profile.yaml").read_text())["protections"]
    hold, whip, core = (
        profile[k] for k in ("holding_period", "whipsaw_protection", "core_asset_immunity")
    )
    calendar = pd.read_csv(folder / "equity.csv", parse_dates=["date"])["date"]
    bar_of = {day: i for i, day in enumerate(calendar)}
    orders = read_orders(folder)
    events = []
    for row in orders.itertuples():
        created = pd.Timestamp(row.created)
        events.append(((bar_of[created], 1, row.attempt), (bar_of[created], created), "order", row))
        if row.filled:
            executed = pd.Timestamp(row.executed)
            events.append(
                ((bar_of[executed], 0, row.attempt), (bar_of[executed], executed), "fill", row)
            )
    assets: dict[str, _Asset] = {}
    checks = {"closes": 0, "reentries": 0, "core": 0}
    for _, now, kind, row in sorted(events, key=lambda e: e[0]):
        state = assets.setdefault(row.asset, _Asset())
        if kind == "fill":
            after = state.position + row.filled
            if state.position == 0 or (after != 0 and (after > 0) != (state.position > 0)):
                state.opened = now
            if after == 0 or (state.position != 0 and (after > 0) != (state.position > 0)):
                state.exits.append(now)
            state.position = after
            continue
        if not row.filled or row.protection != "approved":
            continue  # denied orders did not trade; exempt ones may break the rules
        action = spec_action(state.position, state.position + row.size)
        lifted = row.overridden_systems.split(";")
        where = f"{folder.name}: order {row.attempt} ({action} {row.asset} on {row.created})"
        if core["enabled"] and row.asset in core["assets"] and action in core["protect"]:
            raise AssertionError(f"{where} reduced a core asset")
        if hold["enabled"] and action in hold["protect"] and "holding_period" not in lifted:
            assert spec_elapsed(hold["min_hold"], state.opened, now), f"{where} broke min_hold"
            checks["closes"] += 1
        reentry = action == "open" and state.exits
        if whip["enabled"] and reentry and "whipsaw_protection" not in lifted:
            assert spec_elapsed(whip["min_reentry"], state.exits[-1], now), (
                f"{where} broke min_reentry"
            )
            recent = [e for e in state.exits if not spec_elapsed(whip["window"], e, now)]
            assert len(recent) < whip["max_cycles"], f"{where} broke max_cycles"
            checks["reentries"] += 1
    for attempt, decision in decisions_by_attempt(folder).items():
        core_result = [r for r in decision["results"] if r["system"] == "core_asset_immunity"]
        if core_result and not core_result[0]["allowed"] and not decision["exempt"]:
            assert orders.loc[orders["attempt"] == attempt, "filled"].item() == 0
            checks["core"] += 1
    return checks


INVARIANT_PROFILES = ["conservative", "balanced", "aggressive", "strict"]


@pytest.mark.parametrize("strategy", ["momentum_rotation", "sma_crossover"])
def test_invariants_on_the_sample(run_of, strict_profile: Path, strategy: str) -> None:
    total = {"closes": 0, "reentries": 0, "core": 0}
    for name in INVARIANT_PROFILES:
        profile = strict_profile if name == "strict" else name
        checks = check_invariants(run_of(sample_spec(strategy, profile)))
        total = {k: total[k] + checks[k] for k in total}
    assert total["closes"] > 0 and total["core"] > 0  # the checks are not vacuous
    if strategy == "sma_crossover":
        assert total["reentries"] > 0


@pytest.mark.parametrize("strategy", ["momentum_rotation", "sma_crossover"])
def test_invariants_on_shared_etfs(
    run_of, strict_profile: Path, shared_data: Path, strategy: str
) -> None:
    folder = shared_data / "etf17_quantfiction"
    total = {"closes": 0, "reentries": 0, "core": 0}
    for name in ("balanced", "aggressive", "strict"):
        strict = strict_profile.with_name("strict_etf.yaml")
        profile = strict if name == "strict" else PROFILES / f"{name}.yaml"
        spec = RunSpec(
            strategy,
            str(profile),
            data=str(folder),
            tickers=ETF17_TICKERS,
            start="2011-01-01",
            end="2018-03-01",
        )
        checks = check_invariants(run_of(spec))
        total = {k: total[k] + checks[k] for k in total}
    assert total["closes"] > 0 and total["core"] > 0


def test_the_invariant_check_catches_a_broken_promise(tmp_path: Path, run_of) -> None:
    unprotected = run_of(sample_spec("sma_crossover", "off"))
    shutil.copytree(unprotected, tmp_path / "run")
    protected = run_of(sample_spec("sma_crossover", "balanced"))
    shutil.copy(protected / "profile.yaml", tmp_path / "run")
    with pytest.raises(AssertionError, match="broke"):
        check_invariants(tmp_path / "run")


# --------------------------------------------------------------------------- determinism


def _audit_without_wall(folder: Path) -> list[dict[str, Any]]:
    return list(read_audit(folder / "audit.jsonl", drop_wall=True))


def test_runs_are_deterministic_in_every_mode(tmp_path: Path, run_of) -> None:
    first = run_of(sample_spec("sma_crossover", "balanced"))
    others = [
        execute_run(sample_spec("sma_crossover", "balanced"), tmp_path / "again"),
        execute_run(sample_spec("sma_crossover", "balanced", runonce=False), tmp_path / "next"),
        execute_run(sample_spec("sma_crossover", "balanced", preload=False), tmp_path / "nopre"),
        execute_run(
            sample_spec("sma_crossover", "balanced", runonce=False, preload=False),
            tmp_path / "none",
        ),
    ]
    for other in others:
        for name in RUN_FILES:
            assert (other / name).read_bytes() == (first / name).read_bytes(), (
                f"{other.name}/{name}"
            )
        assert _audit_without_wall(other) == _audit_without_wall(first)


# --------------------------------------------------------------------------- bad input


@pytest.fixture
def bad_profile(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\nprotections:\n  holding_period:\n    enabled: true\n    min_hold: 20\n"
    )
    return path


BALANCED = str(PROFILES / "balanced.yaml")
SMA = ["--strategy", "sma_crossover", "--profile", BALANCED]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--strategy", "nope", "--profile", BALANCED],
            "unknown strategy 'nope'; valid names: momentum_rotation, sma_crossover (or "
            "package.module:Class, or path/to/file.py:Class).",
        ),
        (["--strategy", "sma_crossover", "--profile", "BAD"], "holding_period.min_hold"),
        ([*SMA, "--data", "no/such/dir"], "no/such/dir: folder not found"),
        ([*SMA, "--tickers", "AAPL", "ZZZZ"], "file not found for ticker ZZZZ; available: AAPL"),
        (
            [*SMA, "--start", "2020-01-01", "--end", "2019-01-01"],
            "--end 2019-01-01 is before --start 2020-01-01",
        ),
        (
            [*SMA, "--start", "2020-13-01"],
            "--start '2020-13-01' is not a date; expected YYYY-MM-DD.",
        ),
        ([*SMA, "--cash", "0"], "--cash must be above 0, not 0."),
        (
            [*SMA, "--data", str(SAMPLE_DATA), "--regime-data", "SPY"],
            "regime data 'SPY' is not a feed of this run; feeds: AAPL, AMZN, GOOG, META, NFLX, "
            "NVDA.",
        ),
        ([*SMA, "--commission", "-0.01"], "--commission must be 0 or more, not -0.01."),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    tmp_path: Path,
    bad_profile: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    args = [str(bad_profile) if a == "BAD" else a for a in args]
    if "--tickers" in args:
        args += ["--data", str(SAMPLE_DATA)]
    code, _ = cli_run(tmp_path, *args)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_out_that_is_not_a_run_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    code, _ = cli_run(tmp_path, *SMA)
    assert code == 2
    assert "exists and is not a run folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["notes.txt", "out"]


class _Boom(ProtectionMixin, bt.Strategy):
    """Trades the first feed every 20 bars, then raises at bar 300."""

    def next(self) -> None:
        if len(self) == 300:
            raise RuntimeError("boom at bar 300")
        if len(self) % 20 == 0:
            if self.position:
                self.close()
            else:
                self.buy(size=10)


@pytest.mark.parametrize("runonce", [True, False])
def test_a_strategy_that_raises_leaves_a_failed_folder(
    tmp_path: Path,
    run_of,
    capsys: pytest.CaptureFixture[str],
    runonce: bool,
) -> None:
    good = run_of(sample_spec("sma_crossover", "balanced"))
    out = tmp_path / "out"
    shutil.copytree(good, out)  # an earlier complete run stays until a new one succeeds
    mode = [] if runonce else ["--no-runonce"]
    code, _ = cli_run(
        tmp_path, "--strategy", "test_runner:_Boom", "--profile", BALANCED, "--start", START, *mode
    )
    err = capsys.readouterr().err
    assert code == 2
    assert f"run {out} failed: RuntimeError: boom at bar 300" in err and err.count("\n") == 1
    assert (out / "summary.json").read_bytes() == (good / "summary.json").read_bytes()
    failed = tmp_path / "out.failed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.failed"]
    assert json.loads((failed / "status.json").read_text()) == {
        "status": "failed",
        "error": "RuntimeError: boom at bar 300",
    }
    assert not (failed / "summary.json").exists()
    lines = (failed / "audit.jsonl").read_bytes().splitlines()
    records = list(read_audit(failed / "audit.jsonl"))
    assert len(records) == len(lines)
    assert records[0]["kind"] == "header" and records[-1]["kind"] == "run_failed"
    decisions = [r for r in records if r["kind"] == "decision"]
    assert [r["metadata"]["attempt"] for r in decisions] == list(range(1, 15))
    assert records[-1]["error"] == "RuntimeError: boom at bar 300"

    if runonce:  # a later successful run replaces both
        execute_run(sample_spec("sma_crossover", "off"), out)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
        assert json.loads((out / "summary.json").read_text())["profile"] == "off"


# --------------------------------------------------------------------------- defaults, load_run


def test_default_data_and_out_and_the_fetch_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # far from the checkout: the shipped sample is used
    args = ["run", "--strategy", "sma_crossover", "--profile", BALANCED, "--start", "2019-01-01"]
    assert main(args) == 0
    out = tmp_path / "runs" / "sma_crossover-balanced"
    assert json.loads((out / "summary.json").read_text())["data"] == sorted(
        p.stem for p in SAMPLE_DATA.glob("*.csv")
    )
    assert str(Path("runs/sma_crossover-balanced")) in capsys.readouterr().out

    assert main([*args, "--tickers", "AAPL"]) == 2  # --tickers alone reads the fetch cache
    assert "fetch cache data/cache/, which does not exist" in capsys.readouterr().err
    (tmp_path / "data" / "cache").mkdir(parents=True)
    for ticker in ("AAPL", "NVDA"):
        shutil.copy(SAMPLE_DATA / f"{ticker}.csv", tmp_path / "data" / "cache")
    assert main([*args, "--tickers", "NVDA", "AAPL"]) == 0
    assert json.loads((out / "summary.json").read_text())["data"] == ["AAPL", "NVDA"]


def test_load_run_gives_pandas_objects(run_of) -> None:
    out = run_of(sample_spec("momentum_rotation", "balanced"))
    run = load_run(out)
    assert run.path == out and run.profile["name"] == "balanced" == run.summary["profile"]
    assert isinstance(run.equity.index, pd.DatetimeIndex)
    assert list(run.equity.columns) == ["value", "cash"]
    assert len(run.equity) == len((out / "equity.csv").read_text().splitlines()) - 1
    assert len(run.orders) == run.summary["orders_attempted"] == len(run.decisions)
    assert tuple(run.orders.columns) == ORDER_COLUMNS
    assert list(run.decisions["attempt"]) == list(run.orders["attempt"])
    assert len(run.trades) == run.summary["trades"]
    assert pd.api.types.is_datetime64_any_dtype(run.trades["closed"])
    assert pd.api.types.is_datetime64_any_dtype(run.decisions["time"])


def test_load_run_refuses_a_failed_or_missing_run(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="status.json is missing"):
        load_run(tmp_path)
    (tmp_path / "status.json").write_text('{"status": "failed", "error": "RuntimeError: x"}')
    with pytest.raises(UserError, match="did not complete: RuntimeError: x"):
        load_run(tmp_path)
