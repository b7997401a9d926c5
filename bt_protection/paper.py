"""Paper trading from a state file: run a protected strategy bar by bar on data replayed as a
live feed, with a paper broker saved with the protection state, so that a run stopped (`until`)
or killed at any moment resumes after the last saved bar (docs/live.md).

The out folder holds `orders.csv` (docs/runs.md) and `audit.jsonl`; a resumed run appends to
them so that they equal an uninterrupted run's (the audit apart from `wall` and the records a
restart adds, marked `restart`), and `status.json`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import backtrader as bt
import pandas as pd

from bt_protection.audit import read_audit
from bt_protection.data import parse_date
from bt_protection.errors import UserError
from bt_protection.integration.paper import (
    BROKER_KEY,
    ORDER_PREFIX,
    LiveReplay,
    PaperOrders,
    PaperSession,
    SavedBroker,
    paper_strategy,
)
from bt_protection.integration.recorder import orders_frame
from bt_protection.outfolder import Kind, OutputFolder, write_json
from bt_protection.runner import CSV_FLOAT, RunPlan, RunSpec, plan_run
from bt_protection.state import StateError, StateFile


@dataclass(frozen=True)
class PaperResult:
    """Where a paper run stopped: the last bar run (None: every bar was saved before), whether
    the data is done, the bar it resumed after (None: a first start) and the orders so far."""

    out: Path
    last: date | None
    done: bool
    resumed_after: date | None
    orders: int


def run_paper(
    spec: RunSpec, state: str | os.PathLike[str], out: str | os.PathLike[str], until: str | None
) -> PaperResult:
    """Run or resume `spec` as a paper run saved in `state`, writing into `out`.

    Raises UserError (nothing written) for bad input: a state file of another profile or other
    assets, of no paper run, or whose audit log in `out` is gone.
    """
    folder = Path(out)
    paper_spec = RunSpec(**{**spec.__dict__, "runonce": False, "preload": False})
    plan = plan_run(paper_spec, OutputFolder(folder, Kind.PAPER))  # no other folder's files
    days = next(iter(plan.frames.values())).index
    stop = _last_day_through(days, until) if until else None
    Path(state).parent.mkdir(parents=True, exist_ok=True)
    saved, rows = _saved(state, plan)
    last_day = days[-1].date()
    through = None if saved is None else saved.time.date()
    if through is not None and (through >= last_day or (stop is not None and through >= stop)):
        return PaperResult(folder, None, through >= last_day, through, len(rows))  # nothing new
    if saved is not None and not (folder / "audit.jsonl").is_file():
        raise StateError(
            f"state file {state} was saved with the audit log {folder / 'audit.jsonl'}, which "
            "is gone; resume with the same `out`, or reset the state file."
        )
    if saved is not None:
        _check_same_inputs(folder / "audit.jsonl", plan, saved.time)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "status.json", {"status": "running"})
    session = PaperSession(str(state), saved, stop)
    strategy = _cerebro(plan, session, folder).run()[0]
    _write_orders(folder, rows, strategy.analyzers.orders.rows)
    last = None if session.last is None else session.last[0].date()
    done = last is not None and last >= last_day
    write_json(
        folder / "status.json",
        {"status": "complete" if done else "stopped", "last_bar": str(last)},
    )
    return PaperResult(folder, last, done, through, len({**rows, **strategy.analyzers.orders.rows}))


def _last_day_through(days: pd.Index, until: str) -> date:
    """The last day of the data at or before `until`: the bar the run stops after."""
    limit = parse_date(until, "`until`")
    before = days[days <= limit]
    if not len(before):
        raise UserError(f"`until` {until} is before the data's first day {days[0].date()}.")
    return pd.Timestamp(before[-1]).date()


def _check_same_inputs(audit: Path, plan: RunPlan, saved: datetime) -> None:
    """A resume runs on the inputs of the first start (the data may go on further): the
    audit's header names them, and the saved bar must be a bar of the data."""
    header = next(read_audit(audit), {})
    for key, value in plan.fingerprint.items():
        if key != "end" and json.loads(json.dumps(value)) != header.get(key):
            raise UserError(
                f"the paper run in {audit.parent} was started with {key} "
                f"{header.get(key)!r}, not {value!r}; resume it with the same inputs, or start "
                "anew with another `out` and state file."
            )
    days = next(iter(plan.frames.values())).index
    if pd.Timestamp(saved) not in days:
        raise UserError(
            f"the paper run in {audit.parent} is saved through {saved.date()}, which is not a "
            "day of the data; resume it on the same data."
        )


def _saved(
    path: str | os.PathLike[str], plan: RunPlan
) -> tuple[SavedBroker | None, dict[int, dict[str, Any]]]:
    """The paper broker and order rows the state file holds; refuses a file of another
    profile or other assets (StateFile.open), or a protection state saved by no paper run."""
    store = StateFile.open(path, plan.profile, list(plan.frames))
    try:
        state = store.load()
        records = store.records("paper.")
    finally:
        store.close()
    broker = records.pop(BROKER_KEY, None)
    if state is not None and broker is None:
        raise StateError(
            f"state file {path} holds a protection state but no paper broker: it was not "
            "written by bt-protection paper; use another file or reset it."
        )
    rows = {int(k[len(ORDER_PREFIX) :]): json.loads(v) for k, v in records.items()}
    return (None if broker is None else SavedBroker(json.loads(broker))), rows


def _cerebro(plan: RunPlan, session: PaperSession, folder: Path) -> bt.Cerebro:
    spec = plan.spec
    cerebro = bt.Cerebro(runonce=False, preload=False, stdstats=False)
    cerebro.broker.setcash(spec.cash)
    cerebro.broker.setcommission(commission=spec.commission)
    cerebro.broker.set_slippage_perc(spec.slippage, slip_open=True)
    cerebro.broker.set_coc(False)
    for ticker in sorted(plan.frames):
        cerebro.adddata(LiveReplay(dataname=plan.frames[ticker], name=ticker), name=ticker)
    cerebro.addstrategy(
        paper_strategy(plan.strategy, session),
        protection=plan.profile,
        regime_data=spec.regime_data,
        audit_path=str(folder / "audit.jsonl"),
        run_info=plan.fingerprint,
        protection_state=None if session.saved is not None else session.state,
        **plan.params,
    )
    cerebro.addanalyzer(PaperOrders, _name="orders")
    return cerebro


def _write_orders(
    folder: Path, saved: dict[int, dict[str, Any]], session: dict[int, dict[str, Any]]
) -> None:
    """orders.csv: the rows saved by earlier sessions, updated by this one's."""
    rows = {**saved, **session}
    frame = orders_frame([rows[attempt] for attempt in sorted(rows)])
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "orders.csv", index=False, float_format=CSV_FLOAT, lineterminator="\n")
