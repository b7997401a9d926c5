"""`bt-protection run`: one strategy under one profile, written to a run folder (docs/runs.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bt_protection.cli.options import add_backtest_arguments, add_strategy_arguments, job_of
from bt_protection.runner import default_run_out, execute_run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_strategy_arguments(parser, default=None)
    parser.add_argument(
        "--profile",
        required=True,
        metavar="FILE",
        help="profile YAML file, or the name of a shipped profile (balanced, ...)",
    )
    add_backtest_arguments(
        parser,
        "folder of <TICKER>.csv files, or `sample` (default: the shipped sample, or the fetch "
        "cache data/cache/ when --tickers is given)",
    )
    parser.add_argument("--tickers", nargs="+", metavar="T", help="tickers (default: every file)")
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="run folder (default: runs/<strategy>-<profile>)"
    )
    parser.add_argument(
        "--runonce",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="backtrader's vectorised indicator mode (default: on)",
    )
    parser.add_argument(
        "--preload",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="load the feeds before the run (default: on)",
    )


def run(args: argparse.Namespace) -> int:
    spec = job_of(
        args,
        args.profile,
        tickers=tuple(args.tickers) if args.tickers else None,
        runonce=args.runonce,
        preload=args.preload,
    )
    out = execute_run(spec, args.out or default_run_out(spec))
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    print(
        f"{out}: total return {_pct(summary['total_return'])}, max drawdown "
        f"{_pct(summary['max_drawdown'])}, {summary['orders_attempted']} orders "
        f"({summary['orders_denied']} denied, {summary['orders_exempt']} exempt), "
        f"{summary['trades']} closed trades."
    )
    return 0


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"
