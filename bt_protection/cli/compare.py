"""`bt-protection compare`: one strategy under several profiles, side by side (docs/compare.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bt_protection.cli.options import (
    SAMPLE_HELP,
    add_backtest_arguments,
    add_report_argument,
    add_strategy_arguments,
    execution_of,
    job_of,
)
from bt_protection.compare import (
    DEFAULT_PROFILES,
    DEFAULT_STRATEGY,
    OUTPUT_FILES,
    CompareSpec,
    execute_comparison,
    markdown_table,
)
from bt_protection.costs import parse_costs
from bt_protection.report import REPORT_FILE, write_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_strategy_arguments(parser, default=DEFAULT_STRATEGY)
    parser.add_argument(
        "--profiles",
        nargs="+",
        metavar="FILE",
        help=f"profile YAML files or shipped names, one run each (default: "
        f"{' '.join(DEFAULT_PROFILES)})",
    )
    add_backtest_arguments(parser, SAMPLE_HELP)
    parser.add_argument(
        "--ablate",
        action="store_true",
        help="also run each profile once per enabled protection switched off",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="worker processes (default: one per run, at most one per CPU; 1: no workers)",
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on the Dask cluster at tcp://HOST:PORT (docs/scaling.md)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="comparison folder (default: runs/compare-<strategy>)",
    )
    parser.add_argument(
        "--allow-mixed-data",
        action="store_true",
        help="put runs on different data (tickers or dates) in one table",
    )
    parser.add_argument(
        "--costs",
        metavar="BPS,...",
        help="also run each profile at each cost (basis points of traded value per trade, "
        "replacing commission and slippage) and write costs.csv and the break-even cost",
    )
    add_report_argument(parser)


def run(args: argparse.Namespace) -> int:
    costs = parse_costs(args.costs) if args.costs is not None else None
    comparison = execute_comparison(
        CompareSpec(
            job_of(args),
            None if args.profiles is None else tuple(args.profiles),
            args.ablate,
            None if costs is None else tuple(costs),
            args.allow_mixed_data,
            args.out,
            execution_of(args),
        )
    )
    total = len(comparison.runs) + len(comparison.costs) + len(comparison.failed)  # a row a run
    if comparison.runs:
        print(markdown_table(comparison.table))
        if args.report:
            write_report(comparison.path)
        files = (*OUTPUT_FILES, REPORT_FILE)
        written = [name for name in files if (comparison.path / name).exists()]
        print(
            f"{comparison.path}/: {', '.join(written)} and {len(comparison.runs)} run "
            f"folder{'s' if len(comparison.runs) != 1 else ''}."
        )
    if comparison.failed:
        print(
            f"bt-protection compare: {len(comparison.failed)} of {total} runs failed: "
            f"{', '.join(comparison.failed)}.",
            file=sys.stderr,
        )
        return 1
    return 0
