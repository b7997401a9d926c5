"""`bt-protection tune`: walk-forward tuning of protection parameters (docs/tune.md)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path

from bt_protection.cli.options import (
    SAMPLE_HELP,
    add_backtest_arguments,
    add_report_argument,
    add_strategy_arguments,
    execution_of,
    job_of,
)
from bt_protection.compare import DEFAULT_STRATEGY
from bt_protection.report import write_report
from bt_protection.tune import walk as walk_module
from bt_protection.tune.result import WalkForward
from bt_protection.tune.search import TuneSettings
from bt_protection.tune.trials import Objective
from bt_protection.tune.walk import TuneSpec, execute_tune


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_strategy_arguments(parser, DEFAULT_STRATEGY)
    parser.add_argument(
        "--space",
        required=True,
        metavar="SPACE.yaml",
        help="space file (profile key paths mapped to candidate values or ranges), or the name "
        "of a shipped space (example)",
    )
    parser.add_argument(
        "--profile", metavar="BASE.yaml", help="base profile file or shipped name (balanced)"
    )
    add_backtest_arguments(parser, SAMPLE_HELP)
    parser.add_argument("--tickers", nargs="+", metavar="T", help="tickers of the data folder")
    parser.add_argument("--train", default=TuneSettings.train, help="train window (default: 3y)")
    parser.add_argument("--test", default=TuneSettings.test, help="test window (default: 1y)")
    parser.add_argument("--step", help="shift between folds (default: the test window)")
    parser.add_argument(
        "--anchored", action="store_true", help="train windows all start at the first day"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=TuneSettings.warmup,
        metavar="BARS",
        help=f"trading days before each window for indicators (default: {TuneSettings.warmup})",
    )
    parser.add_argument(
        "--objective",
        default="sharpe",
        metavar="NAME",
        help=f"what the search maximises: {', '.join(o.value for o in Objective)} "
        "(default: sharpe)",
    )
    parser.add_argument(
        "--sampler",
        default="grid",
        metavar="NAME",
        help="grid (every candidate, the default), random (--trials of them, seeded) or tpe "
        "(Optuna proposes --trials per fold)",
    )
    parser.add_argument(
        "--trials",
        type=int,
        default=TuneSettings.trials,
        metavar="N",
        help=f"candidates random draws, or tpe proposes per fold ({TuneSettings.trials})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of sampler and bootstrap")
    parser.add_argument(
        "--timing-shifts",
        type=int,
        default=TuneSettings.timing_shifts,
        metavar="N",
        help="circular shifts of the regime series in the timing permutation test "
        f"(default {TuneSettings.timing_shifts}; 0: no test; docs/tune.md)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="local worker processes (default: one per CPU; 1: no workers)",
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run trials on the Dask cluster at tcp://HOST:PORT (docs/scaling.md)",
    )
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="tune folder (default: runs/tune-<strategy>)"
    )
    add_report_argument(parser)


def run(args: argparse.Namespace) -> int:
    with _reported():
        walk = _walk(args)
    print(f"{walk.sentence}.")
    report = ""
    if args.report:
        write_report(walk.path)
        report = ", report.html"
    print(
        f"{walk.path}/: folds.csv, trials.csv, oos_equity.csv, verdict.json, report.md, "
        f"tune.png, recommended.yaml, fingerprint.json{report}."
    )
    return 0


@contextmanager
def _reported() -> Iterator[None]:
    """While the tune runs: its notes (`tune: reused ...`) on stderr, and Optuna's per-trial
    log lines (its INFO level) silenced. The library leaves logging to its caller."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("tune: %(message)s"))
    notes = logging.getLogger(walk_module.__name__)
    level = notes.level
    notes.addHandler(handler)
    notes.setLevel(logging.INFO)
    optuna = logging.getLogger("optuna")
    optuna_level = optuna.level
    optuna.setLevel(logging.WARNING)
    try:
        yield
    finally:
        notes.removeHandler(handler)
        notes.setLevel(level)
        optuna.setLevel(optuna_level)


def _walk(args: argparse.Namespace) -> WalkForward:
    settings = TuneSettings(**{f.name: getattr(args, f.name) for f in fields(TuneSettings)})
    job = job_of(args, tickers=tuple(args.tickers) if args.tickers else None)
    return execute_tune(
        TuneSpec(job, args.space, args.profile, settings, args.out, execution_of(args))
    )
