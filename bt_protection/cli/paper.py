"""`bt-protection paper`: run or resume a strategy on replayed data with a saved paper broker."""

from __future__ import annotations

import argparse
from pathlib import Path

from bt_protection.cli.options import add_run_arguments, job_of
from bt_protection.outfolder import Kind, default_out
from bt_protection.paper import run_paper
from bt_protection.profile import load_profile


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(
        parser,
        "folder of <TICKER>.csv files replayed as a live feed, or "
        "`sample` (default: the shipped sample)",
    )
    parser.add_argument(
        "--state",
        required=True,
        type=Path,
        metavar="FILE",
        help="the protection_state file: created on the first start, resumed after",
    )
    parser.add_argument(
        "--until", metavar="DATE", help="stop after the bar of this day (YYYY-MM-DD)"
    )
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="folder (default: runs/paper-<strategy>-<profile>)"
    )


def run(args: argparse.Namespace) -> int:
    spec = job_of(args, args.profile)
    out = args.out or default_out(Kind.PAPER, spec.strategy, load_profile(spec.profile).name)
    result = run_paper(spec, args.state, out, args.until)
    if result.last is None:
        print(
            f"{result.out}: nothing to run; the state file {args.state} is saved through "
            f"{result.resumed_after}{' (the end of the data)' if result.done else ''}."
        )
        return 0
    start = "started" if result.resumed_after is None else f"resumed after {result.resumed_after}"
    end = "the end of the data" if result.done else str(result.last)
    print(f"{result.out}: {start}, ran through {end}; {result.orders} orders in orders.csv.")
    return 0
