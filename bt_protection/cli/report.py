"""`bt-protection report`: report.html for a run, comparison or tune folder (docs/report.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bt_protection.report import folder_kind, write_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", type=Path, metavar="DIR", help="a run, comparison or tune folder")
    parser.add_argument(
        "--data",
        metavar="DIR",
        help="price folder of a lone run, for the moves after its denials "
        "(default: the shipped sample)",
    )


def run(args: argparse.Namespace) -> int:
    kind = folder_kind(args.folder)
    path = write_report(args.folder, args.data)
    print(f"{path}: the {kind} report ({path.stat().st_size / 1e6:.1f} MB); open it in a browser.")
    return 0
