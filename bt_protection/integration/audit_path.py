"""The audit file of a protected strategy: `audit_path` with its placeholders filled in.

Placeholders: `{profile}` (the profile's name), `{strategy}` (the strategy's class name),
`{params}` (the strategy's own params, `name=value` joined by `_`, the mixin's left out) and
`{run}` (`<process id>-<n>`, n counting the protected runs of the process from 1).
"""

from __future__ import annotations

import itertools
import os
import re
import string
from collections.abc import Mapping
from typing import Any

from bt_protection.errors import UserError

PLACEHOLDERS = ("profile", "strategy", "params", "run")
_RUNS = itertools.count(1)
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


def params_text(params: Mapping[str, Any], skip: tuple[str, ...]) -> str:
    """`name=value` of each param not in `skip`, joined by `_`, safe in a file name."""
    text = "_".join(f"{k}={v}" for k, v in params.items() if k not in skip)
    return _UNSAFE.sub("-", text) or "default"


def audit_file(template: str, values: Mapping[str, str], optimising: bool, strategy: str) -> str:
    """The path `template` names; `UserError` for an unknown placeholder, or when several
    parameter sets of `cerebro.optstrategy` would share one file."""
    used = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    unknown = sorted(used - set(PLACEHOLDERS))
    if unknown:
        raise UserError(
            f"audit_path {template!r} has the unknown placeholder {{{unknown[0]}}}; the known "
            f"ones are {', '.join('{' + p + '}' for p in PLACEHOLDERS)}."
        )
    if optimising and not used & {"params", "run"}:
        raise UserError(
            f"audit_path {template!r} of {strategy} would give every parameter set of "
            "cerebro.optstrategy the same file; add {params} or {run} to it."
        )
    run = f"{os.getpid()}-{next(_RUNS)}" if "run" in used else ""
    return template.format_map({**values, "run": run})
