"""`bt-protection demo`: the six scenarios of the original system, as a table."""

from __future__ import annotations

import argparse

from bt_protection.demo import demo_table, run_demo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults()


def run(args: argparse.Namespace) -> int:
    scenarios = run_demo()
    table = demo_table(scenarios)
    with_reason = table.to_string(max_colwidth=90, justify="left")
    print(with_reason)
    approved = sum(s.decision.approved for s in scenarios)
    print(f"\nApproval rate: {approved} of {len(scenarios)} ({approved / len(scenarios):.1%})")
    return 0
