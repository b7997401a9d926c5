"""`bt-protection systems`: the protection systems profiles can name, built-in and plugins."""

from __future__ import annotations

import argparse
from dataclasses import fields

from bt_protection.protections.base import Protection, registry, system_sources


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command takes no arguments."""


def run(args: argparse.Namespace) -> int:
    sources = system_sources()
    rows = [("priority", "system", "overridable", "source", "profile keys")]
    for key, cls in registry().items():
        keys = ", ".join(f.name for f in fields(cls.config_class) if f.init and f.name != "enabled")
        lifts_others = cls.overrides is not Protection.overrides
        overridable = "yes" if cls.can_be_overridden and not lifts_others else "no"
        rows.append((str(cls.priority), key, overridable, sources[key], keys))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0
