"""`bt-protection strategies`: the strategy names `--strategy` accepts besides module:Class."""

from __future__ import annotations

import argparse

from bt_protection.strategies_registry import GROUP, registered_strategies


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command takes no arguments."""


def run(args: argparse.Namespace) -> int:
    names = registered_strategies()
    width = max((len(name) for name in names), default=0)
    for name, target in names.items():
        print(f"{name.ljust(width)}  {target}")
    if not names:
        print(f"no strategy is registered in the entry-point group {GROUP}.")
    return 0
