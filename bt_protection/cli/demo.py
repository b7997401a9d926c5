"""`bt-protection demo`: the six scenarios of the original system, as a table."""

from __future__ import annotations

import argparse

from bt_protection.demo import demo_table, run_demo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo takes no arguments."""


def run(args: argparse.Namespace) -> int:
    scenarios = run_demo()
    table = demo_table(scenarios).reset_index().astype(str)
    widths = {c: max(len(c), table[c].str.len().max()) for c in table.columns}
    print("  ".join(c.ljust(widths[c]) for c in table.columns).rstrip())
    for _, row in table.iterrows():
        print("  ".join(row[c].ljust(widths[c]) for c in table.columns).rstrip())
    approved = sum(s.decision.approved for s in scenarios)
    print(f"\nApproval rate: {approved} of {len(scenarios)} ({approved / len(scenarios):.1%})")
    return 0
