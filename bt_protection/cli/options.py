"""Options that `run` and `compare` share: the strategy, the data and the broker of a backtest."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from bt_protection.engine import Execution
from bt_protection.errors import UserError
from bt_protection.job import RunSpec

STRATEGY_HELP = (
    "a registered name (see `bt-protection strategies`), package.module:Class or "
    "path/to/file.py:Class"
)


SAMPLE_HELP = "folder of <TICKER>.csv files, or `sample` (default: the shipped sample)"


def add_strategy_arguments(parser: argparse.ArgumentParser, default: str | None) -> None:
    """`--strategy` (required when `default` is None) and repeatable `--param key=value`."""
    parser.add_argument(
        "--strategy",
        required=default is None,
        default=default,
        help=STRATEGY_HELP + (f" (default: {default})" if default else ""),
    )
    parser.add_argument(
        "--param",
        action="append",
        metavar="KEY=VALUE",
        help="a strategy param, converted to the type of its default (repeatable)",
    )


def job_of(args: argparse.Namespace, profile: str = "", **fields: Any) -> RunSpec:
    """The job the strategy and backtest options describe (`fields`: its other fields). As
    with `python -m`, modules of the current directory can be named (package.module:Class)."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    names = ("data", "regime_data", "start", "end", "cash", "commission", "slippage")
    return RunSpec(
        args.strategy,
        profile,
        params=parse_param_args(args.param),
        **{name: getattr(args, name) for name in names},
        **fields,
    )


def execution_of(args: argparse.Namespace) -> Execution:
    """`--jobs` and `--scheduler`; the progress bar shows on a terminal."""
    return Execution(args.jobs, args.scheduler)


def parse_param_args(items: list[str] | None) -> dict[str, str]:
    """`--param key=value` arguments as a mapping; each key once."""
    found: dict[str, str] = {}
    for item in items or ():
        key, equals, value = item.partition("=")
        key = key.strip()
        if not equals or not key:
            raise UserError(f"--param expects key=value, not {item!r}.")
        if key in found:
            raise UserError(f"--param {key} is given twice; give each param once.")
        found[key] = value
    return found


def add_backtest_arguments(parser: argparse.ArgumentParser, data_help: str) -> None:
    """`--data --regime-data --start --end --cash --commission --slippage`, defaults from
    `RunSpec`."""
    parser.add_argument("--data", metavar="DIR", help=data_help)
    parser.add_argument(
        "--regime-data",
        metavar="TICKER",
        help="ticker the regime indicator watches (default: the profile's regime.data, else "
        "the only ticker, else an equal-weight composite of all; docs/regime.md)",
    )
    parser.add_argument("--start", help="first day, YYYY-MM-DD (default: first common date)")
    parser.add_argument("--end", help="last day, YYYY-MM-DD (default: last common date)")
    parser.add_argument(
        "--cash", type=float, default=RunSpec.cash, help=f"starting cash ({RunSpec.cash:g})"
    )
    parser.add_argument(
        "--commission",
        type=float,
        default=RunSpec.commission,
        help=f"commission as a fraction of each fill's value ({RunSpec.commission:g})",
    )
    parser.add_argument(
        "--slippage",
        type=float,
        default=RunSpec.slippage,
        help=f"slippage as a fraction of the price ({RunSpec.slippage:g})",
    )


def add_report_argument(parser: argparse.ArgumentParser) -> None:
    """`--no-report`: skip report.html (written by default)."""
    parser.add_argument(
        "--no-report",
        dest="report",
        action="store_false",
        help="do not write report.html (docs/report.md)",
    )
