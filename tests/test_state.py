"""Persisted state (SPEC 14): a run cut at a date and continued from its state file decides the
later bars as an uninterrupted run; refusals of files that do not fit; reconciliation."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections import deque
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import backtrader as bt
import pytest

from bt_protection.audit import read_audit
from bt_protection.cli import main
from bt_protection.data import load_universe
from bt_protection.durations import ClockPoint
from bt_protection.errors import UserError
from bt_protection.integration.feeds import add_feeds
from bt_protection.integration.mixin import ProtectionMixin
from bt_protection.orchestrator import ProtectionOrchestrator
from bt_protection.profile import load_profile
from bt_protection.shipped import SAMPLE_DATA
from bt_protection.state import StateFile, dumps, encode, loads, read_state, reset_state
from bt_protection.strategies.momentum_rotation import MomentumRotation
from bt_protection.strategies.sma_crossover import SmaCrossover

TICKERS = ["AAPL", "NVDA"]
CASH = 100_000.0


class Recorded(SmaCrossover):
    """SmaCrossover that keeps the broker's executions and its positions after each bar."""

    def __init__(self) -> None:
        super().__init__()
        self.fills: list[tuple[str, str, float, float]] = []
        self.flat_days: list[str] = []
        self.order_days: set[str] = set()

    def notify_order(self, order: Any) -> None:
        if order.status == order.Completed:
            day = bt.num2date(order.executed.dt).date().isoformat()
            self.fills.append((day, order.data._name, order.executed.size, order.executed.price))

    def notify_protection(self, decision: Any) -> None:
        self.order_days.add(decision.date.date().isoformat())

    def next(self) -> None:
        super().next()
        day = self.datas[0].datetime.date(0).isoformat()
        if all(not self.getposition(d).size for d in self.datas):
            self.flat_days.append(day)


def backtest(
    tmp: Path,
    name: str,
    profile: Any,
    end: str | None = None,
    cash: float = CASH,
    start: str | None = None,
    **kw: Any,
) -> tuple[Any, float]:
    engine = bt.Cerebro(stdstats=False)
    add_feeds(engine, load_universe(SAMPLE_DATA, TICKERS, start=start, end=end))
    engine.broker.setcash(cash)
    engine.addstrategy(Recorded, protection=profile, audit_path=str(tmp / f"{name}.jsonl"), **kw)
    strategy = engine.run()[0]
    return strategy, engine.broker.getvalue()


def decisions_after(path: Path, day: str) -> list[dict[str, Any]]:
    """The decision, fill and regime records after `day`, without what differs by session."""
    out = []
    for record in read_audit(path, drop_wall=True):
        if record["kind"] in ("header", "run_end") or str(record["time"])[:10] <= day:
            continue
        for key in ("seq", "session_id"):
            record.pop(key, None)
        out.append(record)
    return out


def quiet_cut(whole: Any) -> str:
    """A day past the middle where the strategy is flat and placed no order for a week around
    it: nothing is in flight at the cut."""
    days = whole.flat_days
    quiet = [
        d
        for i, d in enumerate(days)
        if i > len(days) // 2 and not any(x in whole.order_days for x in days[i - 6 : i + 2])
    ]
    assert quiet, "the sample run has no flat, quiet day to cut at"
    return quiet[0]


@pytest.mark.parametrize("profile", ["balanced", "portfolio_guard"])
def test_cut_and_continue_decides_like_an_uninterrupted_run(tmp_path: Path, profile: str) -> None:
    whole, _ = backtest(tmp_path, "whole", profile)
    cut = quiet_cut(whole)
    later = [f for f in whole.fills if f[0] > cut]
    assert later, "nothing happens after the cut: the test would prove nothing"
    state = tmp_path / "state.db"
    first, cash = backtest(tmp_path, "first", profile, end=cut, protection_state=str(state))
    assert first.fills == [f for f in whole.fills if f[0] <= cut]
    second, _ = backtest(tmp_path, "second", profile, cash=cash, protection_state=str(state))
    assert [f for f in second.fills if f[0] > cut] == later
    assert [f for f in second.fills if f[0] <= cut] == []  # the backfill sent nothing
    assert decisions_after(tmp_path / "second.jsonl", cut) == decisions_after(
        tmp_path / "whole.jsonl", cut
    )
    assert (
        second.protection.get_performance_metrics()["decisions_processed"]
        == whole.protection.get_performance_metrics()["decisions_processed"]
    )


def test_a_short_backfill_keeps_counting_bars_from_the_saved_bar(tmp_path: Path) -> None:
    # a live feed backfills a few months, not the whole history: bar indexes restart at 0, yet
    # the later bars carry the uninterrupted run's indexes (a holding period in bars relies on it)
    whole, _ = backtest(tmp_path, "whole", HOLD)
    cut = quiet_cut(whole)
    state = tmp_path / "state.db"
    _, cash = backtest(tmp_path, "first", HOLD, end=cut, protection_state=str(state))
    backfill = (date.fromisoformat(cut) - timedelta(days=150)).isoformat()
    second, _ = backtest(
        tmp_path, "second", HOLD, cash=cash, start=backfill, protection_state=str(state)
    )
    later = decisions_after(tmp_path / "whole.jsonl", cut)
    assert later and later[0]["bar"] > 200
    assert decisions_after(tmp_path / "second.jsonl", cut) == later
    assert [f for f in second.fills if f[0] > cut] == [f for f in whole.fills if f[0] > cut]


def test_an_order_on_a_handled_bar_is_denied_and_sent_nowhere(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    first, _ = backtest(tmp_path, "first", "balanced", protection_state=str(state))
    assert first.fills
    again, _ = backtest(tmp_path, "again", "balanced", protection_state=str(state))
    assert again.fills == []
    denied = [r for r in read_audit(tmp_path / "again.jsonl") if r["kind"] == "decision"]
    assert denied and all(not r["approved"] for r in denied)
    assert all("was handled before the restart" in r["reason"] for r in denied)


@pytest.mark.parametrize("profile", ["portfolio_guard", "adaptive"])
def test_the_state_round_trips_through_its_encoding(tmp_path: Path, profile: str) -> None:
    """`adaptive`: the values in force follow the restored regime and volatility."""
    first, _ = backtest(tmp_path, "first", profile)
    state = first.protection.state()
    text = dumps(state)
    assert dumps(loads(text)) == text  # deterministic and complete
    # the direct writer gives the bytes of the plain encoding, JSON-dumped with sorted keys
    assert text == json.dumps(encode(state), sort_keys=True, separators=(",", ":"))
    assert dumps(state) == text  # again, with the texts of immutable objects reused
    fresh = ProtectionOrchestrator(profile)
    fresh.restore(loads(text))
    assert dumps(fresh.state()) == text
    day = first.protection.state()["now"].date
    for asset in TICKERS:
        assert fresh.get_protection_status(asset, day) == first.protection.get_protection_status(
            asset, day
        )


def test_a_reused_text_follows_every_change_of_its_container() -> None:
    start = datetime(2020, 1, 1)
    points = {f"A{i:03d}": ClockPoint(start + timedelta(days=i), i) for i in range(40)}
    window = deque((ClockPoint(start, i), float(i)) for i in range(40))
    state = {"points": points, "window": window, "sizes": dict.fromkeys(points, 1.0)}

    def plain() -> str:
        return json.dumps(encode(state), sort_keys=True, separators=(",", ":"))

    for change in (
        lambda: None,
        lambda: points.__setitem__("A003", ClockPoint(start, 99)),  # a new value
        lambda: points.__setitem__("A999", ClockPoint(start, 1)),  # a new key
        lambda: points.pop("A000"),
        lambda: window.append((ClockPoint(start, 41), 41.0)),
        lambda: window.popleft(),
        lambda: state["sizes"].__setitem__("A001", 1),  # an int where a float was: "1"
        lambda: state["sizes"].__setitem__("A001", True),
    ):
        change()
        assert dumps(state) == plain()
        assert dumps(state) == plain()  # the reused text


def test_a_file_of_another_profile_or_other_assets_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    backtest(tmp_path, "first", "balanced", end="2016-06-30", protection_state=str(state))
    before = state.read_bytes()
    with pytest.raises(UserError, match="written under profile hash"):
        backtest(tmp_path, "other", "conservative", protection_state=str(state))
    with pytest.raises(UserError, match="holds assets AAPL, NVDA, not AAPL, AMZN, NVDA"):
        StateFile.open(state, load_profile("balanced"), ["AAPL", "AMZN", "NVDA"])
    assert state.read_bytes() == before
    # a reset starts anew under the new profile, which then reads the file
    hash_before = read_state(state)[0]["profile_hash"]
    reset = {"protection_state": str(state), "protection_state_reset": True}
    backtest(tmp_path, "reset", "conservative", end="2016-06-30", **reset)
    meta, saved = read_state(state)
    assert saved is not None and meta["profile_hash"] != hash_before
    backtest(tmp_path, "after", "conservative", end="2016-07-29", protection_state=str(state))


@pytest.mark.parametrize("earlier", ["1", "2"])
def test_a_file_of_an_earlier_format_is_refused_and_kept(tmp_path: Path, earlier: str) -> None:
    state = tmp_path / "state.db"
    backtest(tmp_path, "first", "balanced", end="2016-06-30", protection_state=str(state))
    with sqlite3.connect(state) as db:  # format 2 kept the whole state in one meta row
        db.execute("UPDATE meta SET value = ? WHERE key = 'format'", (earlier,))
        db.execute("DROP TABLE state")
        db.execute("INSERT INTO meta(key, value) VALUES ('state', '{}')")
    db.close()
    before = state.read_bytes()
    with pytest.raises(
        UserError, match=rf"has format '{earlier}'; this version reads format 3; reset"
    ):
        StateFile.open(state, load_profile("balanced"), ["AAPL", "NVDA"])
    assert state.read_bytes() == before
    reset_state(state)  # what the sentence says to do: the next start begins anew
    backtest(tmp_path, "anew", "balanced", end="2016-06-30", protection_state=str(state))
    assert read_state(state)[1] is not None


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_or_truncated_file_is_refused_and_kept(tmp_path: Path, damage: str) -> None:
    state = tmp_path / "state.db"
    backtest(tmp_path, "first", "balanced", end="2016-06-30", protection_state=str(state))
    whole = state.read_bytes()
    broken = b"this is no database" * 100 if damage == "garbage" else whole[: len(whole) // 3]
    state.write_bytes(broken)
    with pytest.raises(UserError, match=r"state\.db is corrupt or truncated|cannot be read"):
        backtest(tmp_path, "again", "balanced", protection_state=str(state))
    assert state.read_bytes() == broken


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(UserError, match="cannot be opened or written"):
            StateFile.open(folder / "state.db", load_profile("balanced"), ["AAPL"])
    finally:
        folder.chmod(0o700)


def test_an_unwritable_file_is_refused_with_a_sentence(tmp_path: Path) -> None:
    folder = tmp_path / "state.db"
    folder.mkdir()  # a folder where the file should be: sqlite cannot open it
    with pytest.raises(UserError, match="cannot be opened or written"):
        StateFile.open(folder, load_profile("balanced"), ["AAPL"])


def test_sqlite_file_of_another_kind_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t(x)")
    with pytest.raises(UserError, match="not a bt-protection state file"):
        StateFile.open(other, load_profile("balanced"), ["AAPL"])


class SeededBroker(bt.brokers.BackBroker):
    """A broker that starts with a position, as a live account does after a restart."""

    seed: tuple[Any, float, float] | None = None

    def start(self) -> None:
        super().start()
        if self.seed is not None:
            data, size, price = self.seed
            self.positions[data] = bt.Position(size, price)


class CloseOnce(ProtectionMixin, bt.Strategy):
    """Closes AAPL on every bar after `after` (a date) while it holds it; keeps the orders."""

    params = (("after", "9999-12-31"),)

    def __init__(self) -> None:
        self.closes: list[tuple[str, int, str]] = []  # (day, status, reason)

    def next(self) -> None:
        data = self.getdatabyname("AAPL")
        day = data.datetime.date(0).isoformat()
        if day > self.p.after and self.getposition(data).size:
            order = self.close(data=data)
            self.closes.append((day, order.status, order.info.get("protection").reason))


HOLD = {"name": "hold", "protections": {"holding_period": {"enabled": True, "min_hold": "5 bars"}}}


def seeded_run(tmp: Path, name: str, state: Path, size: float, after: str, end: str | None = None):
    engine = bt.Cerebro(stdstats=False)
    feeds = add_feeds(engine, load_universe(SAMPLE_DATA, TICKERS, end=end))
    broker = SeededBroker()
    broker.seed = (feeds[0], size, 10.0) if size else None
    engine.broker = broker
    engine.broker.setcash(CASH)
    engine.addstrategy(
        CloseOnce,
        protection=HOLD,
        after=after,
        protection_state=str(state),
        audit_path=str(tmp / f"{name}.jsonl"),
    )
    return engine.run()[0]


def test_a_broker_position_that_differs_is_recorded_and_taken(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    seeded_run(tmp_path, "first", state, 0, after="9999-12-31", end="2016-06-30")
    assert read_state(state)[1]["orchestrator"]["positions"] == {}
    # the broker holds 100 AAPL the saved state does not know of
    second = seeded_run(tmp_path, "second", state, 100, after="2016-06-30")
    records = list(read_audit(tmp_path / "second.jsonl"))
    reconciled = [r for r in records if r["kind"] == "state_reconciled"]
    assert [(r["asset"], r["saved"], r["broker"]) for r in reconciled] == [("AAPL", 0.0, 100.0)]
    first_bar = reconciled[0]["time"][:10]
    assert first_bar > "2016-06-30"  # the first bar after those handled before
    # the holding clock starts there: the closes of the next 5 bars are denied, then one passes
    denied = [c for c in second.closes if c[1] == bt.Order.Rejected]
    assert len(denied) == 5 and denied[0][0] == first_bar
    assert all(
        "holding_period" in r["blocking_systems"]
        for r in records
        if r["kind"] == "decision" and not r["approved"]
    )
    assert second.closes[5][1] != bt.Order.Rejected
    assert second.protection.position("AAPL") == 0.0  # the close filled and was booked


def test_state_show_and_reset_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.db"
    first, _ = backtest(
        tmp_path, "first", "balanced", end="2016-06-30", protection_state=str(state)
    )
    assert main(["state", "show", str(state)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["profile"] == "balanced" and shown["last_bar"]["date"].startswith("2016-06-30")
    assert sorted(shown["assets"]) == TICKERS
    day = first.protection.state()["now"].date
    for asset in TICKERS:  # as get_protection_status gives it, from the file alone
        expected = json.loads(json.dumps(first.protection.get_protection_status(asset, day)))
        assert shown["assets"][asset] == expected
    assert main(["state", "reset", str(state)]) == 0
    assert "cleared" in capsys.readouterr().out
    assert main(["state", "show", str(state)]) == 2
    assert "was reset and no run saved into it" in capsys.readouterr().err
    backtest(tmp_path, "other", "conservative", end="2016-06-30", protection_state=str(state))


@pytest.mark.parametrize(
    ("argv", "sentence"),
    [
        (["state", "show", "{missing}"], "missing.db does not exist."),
        (["state", "reset", "{missing}"], "missing.db does not exist."),
        (["state", "show", "{garbage}"], "garbage.db is corrupt or truncated"),
        (["state", "drop", "{garbage}"], "invalid choice: 'drop'"),
    ],
)
def test_state_command_bad_input_is_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], sentence: str
) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"no database here" * 200)
    paths = {"missing": str(tmp_path / "missing.db"), "garbage": str(garbage)}
    with contextlib.suppress(SystemExit):
        code = main([a.format(**paths) for a in argv])
        assert code == 2
    err = capsys.readouterr().err
    assert sentence in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert garbage.read_bytes() == b"no database here" * 200


class Checked(MomentumRotation):
    """MomentumRotation that reads its state file back after each save (a save writes only the
    rows of the assets an event touched) and compares it with the orchestrator's whole state."""

    def __init__(self) -> None:
        super().__init__()
        self.saves = 0

    def _protection_save(self, when: datetime, bar: int) -> None:
        super()._protection_save(when, bar)
        store = self._protection_store
        assert store is not None
        saved = store.load()
        assert saved is not None and saved["bar"] == (when, bar)
        assert dumps(saved["orchestrator"]) == dumps(self.protection.state()), when
        self.saves += 1


@pytest.mark.parametrize("profile", ["balanced", "portfolio_guard", "conservative"])
def test_each_save_leaves_the_whole_state_on_file(tmp_path: Path, profile: str) -> None:
    engine = bt.Cerebro(stdstats=False)
    frames = load_universe(SAMPLE_DATA, None, start="2016-01-01", end="2018-06-30")
    add_feeds(engine, frames)
    engine.broker.setcash(CASH)
    state = tmp_path / "state.db"
    engine.addstrategy(Checked, protection=profile, protection_state=str(state))
    strategy = engine.run()[0]
    counts = strategy.protection.get_performance_metrics()
    assert strategy.saves > 600 and counts["decisions_processed"] > 30
    with sqlite3.connect(state) as db:  # one row per asset, written only when it changed
        rows = [key for (key,) in db.execute("SELECT key FROM state WHERE key LIKE 'a:%'")]
    db.close()
    assert sorted(rows) == [f"a:{ticker}" for ticker in sorted(frames)]


def test_a_moving_window_is_written_as_json_writes_it() -> None:
    # a deque's text is kept and, as items leave on the left and come on the right, only the
    # new ones are written: the text stays that of the plain encoding at every step
    window: deque[tuple[ClockPoint, float]] = deque()
    start = datetime(2020, 1, 1)
    for step in range(40):
        window.append((ClockPoint(start + timedelta(days=step), step), float(step)))
        if step % 3 == 0:
            window.popleft()
        if step % 7 == 0:
            window.extend([(ClockPoint(start, 0), 0.5)] * 2)
        if step == 20:
            window.clear()
        plain = json.dumps(encode(window), sort_keys=True, separators=(",", ":"))
        assert dumps(window) == plain, step


def test_rows_give_everything_at_first_and_then_only_what_events_touched() -> None:
    orch = ProtectionOrchestrator(load_profile("portfolio_guard"))
    day = datetime(2020, 1, 1)
    for i, asset in enumerate(["AAPL", "AMZN", "NVDA"]):
        orch.on_fill(asset, day, 0.0, 10.0 + i, bar=0, price=100.0)
    orch.state()  # a look at the state between saves changes nothing of what is written
    first = orch.state_rows("orchestrator")
    assert sorted(first.assets) == ["AAPL", "AMZN", "NVDA"]
    assert dumps(first.join()["orchestrator"]) == dumps(orch.state())
    orch.on_portfolio(day + timedelta(days=1), 99_000.0, bar=1)
    orch.on_fill("AMZN", day + timedelta(days=1), 11.0, 0.0, bar=1, price=101.0)
    second = orch.state_rows("orchestrator")
    assert sorted(second.assets) == ["AMZN"]  # one asset row, not three
    assert "orchestrator/protections/drawdown_guard/_watch" in second.parts  # on_portfolio
    assert "orchestrator/protections/regime_override/_window" not in second.parts  # no event
