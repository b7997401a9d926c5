"""`bt-protection validate FILE...`: check profiles, one line per file.

Exit code: 0 when every file is a valid profile, 1 when any is invalid, 2 when a file is missing.
A valid profile that can deny exits and has no `exit_safety` block gets a warning (still 0).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bt_protection.errors import ProfileError
from bt_protection.profile import Mode, Profile, load_profile
from bt_protection.shipped import PROFILES, shipped_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files", nargs="+", metavar="FILE", help="profile YAML files or shipped profile names"
    )


def run(args: argparse.Namespace) -> int:
    return max(_check(file) for file in args.files)


def _check(file: str) -> int:
    """Print the verdict on one file and return its exit code."""
    try:
        path = shipped_file(file, PROFILES, "profile")
    except ProfileError as error:  # a bare name that no shipped profile has
        print(error, file=sys.stderr)
        return 2
    if not Path(path).exists():
        print(f"{file}: no such file.", file=sys.stderr)
        return 2
    try:
        profile = load_profile(path)
    except ProfileError as error:
        print(error)
        return 1
    print(f"ok  {file} ({_summary(profile)})")
    deniers = profile.exit_deniers
    if deniers and profile.exit_safety is None:
        print(
            f"warning: {file}: {', '.join(deniers)} can deny exits and the profile has no "
            "exit_safety block, so nothing limits what a denied exit can cost; add one "
            "(max_position_loss, max_portfolio_drawdown: docs/profiles.md).",
            file=sys.stderr,
        )
    return 0


def _summary(profile: Profile) -> str:
    """`balanced: core_asset_immunity, regime_override, ...` (the mode when it is shadow)."""
    systems = ", ".join(profile.enabled_systems) or "no protection enabled"
    mode = ", shadow mode" if profile.mode is Mode.SHADOW else ""
    return f"{profile.name}{mode}: {systems}"
