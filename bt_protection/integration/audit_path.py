"""The audit file of a protected strategy: `audit_path` with its placeholders filled in.

Placeholders: `{profile}` (the profile's name), `{strategy}` (the strategy's class name),
`{params}` (the strategy's own params, `name=value` joined by `_`, the mixin's left out) and
`{run}` (`<process id>-<n>`, n counting the protected runs of the process from 1).
`claim` refuses a file another live run of the process writes.
"""

from __future__ import annotations

import itertools
import os
import re
import string
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bt_protection.errors import UserError

PLACEHOLDERS = ("profile", "strategy", "params", "run")
_RUNS = itertools.count(1)
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")
_WRITERS: weakref.WeakValueDictionary[Path, Any] = weakref.WeakValueDictionary()


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


def claim(path: str, strategy: Any) -> None:
    """Make `strategy` the writer of the audit file `path`, before it is opened (opening
    empties it). Refused with a sentence while another strategy of this process writes it: one
    of the same cerebro, or one whose run started and has not ended. A file left open by a run
    that never started (its cerebro failed while creating its strategies) is closed and taken.
    """
    key = Path(path).resolve()
    other = _WRITERS.get(key)
    audit = getattr(getattr(other, "protection", None), "audit", None)
    if other is not None and audit is not None and not audit.closed:
        if other.env is strategy.env or other._protection_started:
            raise UserError(
                f"cannot write the audit log {path} for {type(strategy).__name__}: "
                f"{type(other).__name__}, another run of this process, is writing it; give "
                "each run its own file (audit_path placeholders {profile}, {strategy}, "
                "{params} and {run})."
            )
        audit.close()
    _WRITERS[key] = strategy
