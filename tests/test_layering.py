"""The core (models, durations, protections, orchestrator, profile, audit) needs no backtrader."""

from __future__ import annotations

import subprocess
import sys

CORE = (
    "bt_protection",
    "bt_protection.models",
    "bt_protection.durations",
    "bt_protection.protections",
    "bt_protection.orchestrator",
    "bt_protection.profile",
    "bt_protection.audit",
    "bt_protection.demo",
)


def test_the_core_never_imports_backtrader():
    code = (
        "import sys\n"
        + "".join(f"import {module}\n" for module in CORE)
        + "from bt_protection.protections import registry\n"
        + "registry()\n"
        + "print('backtrader' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"
