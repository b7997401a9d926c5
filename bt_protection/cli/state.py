"""`bt-protection state show|reset FILE`: read or clear a state file (docs/live.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bt_protection.orchestrator import ProtectionOrchestrator
from bt_protection.state import StateError, read_state, reset_state, saved_profile


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=("show", "reset"),
        help="show: each asset's protection status as saved; reset: clear the file",
    )
    parser.add_argument("file", type=Path, metavar="FILE", help="a protection_state file")


def run(args: argparse.Namespace) -> int:
    if args.action == "reset":
        reset_state(args.file)
        print(f"{args.file}: cleared; the next run starts anew, under any profile.")
        return 0
    print(json.dumps(describe(args.file), indent=2, default=str))
    return 0


def describe(path: Path) -> dict[str, Any]:
    """The file's profile, last bar and, per asset, `get_protection_status` as saved."""
    meta, saved = read_state(path)
    if not meta:
        raise StateError(f"state file {path} is empty: it was reset and no run saved into it.")
    profile = saved_profile(meta, path)
    orchestrator = ProtectionOrchestrator(profile)
    out: dict[str, Any] = {
        "file": str(path),
        "profile": profile.name,
        "profile_hash": meta["profile_hash"],
        "last_bar": None,
        "attempts": None,
        "counts": None,
        "assets": {},
    }
    assets = json.loads(meta["assets"])
    if saved is None:
        return out
    orchestrator.restore(saved["orchestrator"])
    when, bar = saved["bar"]
    out["last_bar"] = {"date": when.isoformat(), "bar": bar}
    out["attempts"] = saved["attempts"]
    metrics = orchestrator.get_performance_metrics()
    out["counts"] = {k: metrics[k] for k in ("decisions_processed", "approved", "denied")}
    out["assets"] = {a: orchestrator.get_protection_status(a, when, bar) for a in assets}
    return out
