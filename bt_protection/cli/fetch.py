"""`bt-protection fetch`: download daily prices with yfinance into the local CSV cache."""

from __future__ import annotations

import argparse
from pathlib import Path

from bt_protection.data import DEFAULT_CACHE_DIR, LoadReport, fetch, parse_date


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tickers", nargs="+", metavar="TICKER", help="Yahoo symbols, e.g. SPY TLT")
    parser.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
    parser.add_argument("--end", required=True, help="last day (included), YYYY-MM-DD")
    parser.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE_DIR,
        help=f"folder of <TICKER>.csv files (default: {DEFAULT_CACHE_DIR})",
    )


def run(args: argparse.Namespace) -> int:
    start, end = parse_date(args.start, "--start"), parse_date(args.end, "--end")
    report = LoadReport()
    for path in fetch(args.tickers, start, end, args.cache, report=report):
        print(path)
    for line in report.repairs:
        print(f"repair: {line}")
    return 0
