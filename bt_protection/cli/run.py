"""`bt-protection run`: one strategy under one profile, written to a run folder (docs/runs.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--strategy", required=True, help="strategy name, e.g. momentum_rotation")
    parser.add_argument("--profile", required=True, metavar="FILE", help="profile YAML file")
    parser.add_argument(
        "--data",
        metavar="DIR",
        help="folder of <TICKER>.csv files (default: data/sample/, or the fetch cache "
        "data/cache/ when --tickers is given)",
    )
    parser.add_argument("--tickers", nargs="+", metavar="T", help="tickers (default: every file)")
    parser.add_argument("--start", help="first day, YYYY-MM-DD (default: first common date)")
    parser.add_argument("--end", help="last day, YYYY-MM-DD (default: last common date)")
    parser.add_argument("--cash", type=float, default=100_000.0, help="starting cash (100000)")
    parser.add_argument(
        "--commission", type=float, default=0.001, help="commission per trade value (0.001)"
    )
    parser.add_argument(
        "--slippage", type=float, default=0.0005, help="slippage per fill, fraction (0.0005)"
    )
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
    from bt_protection.runner import RunSpec, default_out, execute_run  # backtrader: only here

    spec = RunSpec(
        strategy=args.strategy,
        profile=args.profile,
        data=args.data,
        tickers=tuple(args.tickers) if args.tickers else None,
        start=args.start,
        end=args.end,
        cash=args.cash,
        commission=args.commission,
        slippage=args.slippage,
        runonce=args.runonce,
        preload=args.preload,
    )
    out = execute_run(spec, args.out or default_out(spec))
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
