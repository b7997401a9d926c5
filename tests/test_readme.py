"""The README's example strategy runs as written, from the project root."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import PROJECT_ROOT

from bt_protection.audit import read_audit


def readme_example() -> str:
    text = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Use it in your strategy", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README: no python example under 'Use it in your strategy'"
    return match.group(1)


def test_the_readme_example_runs_and_shows_denials():
    code = readme_example()
    audit = PROJECT_ROOT / "runs" / "my_audit.jsonl"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert any("Grace for AAPL starts now" in line for line in lines[:-1])
    assert "'grace_period': 2, 'holding_period': 0, 'whipsaw_protection': 1" in lines[-1]
    records = list(read_audit(audit))
    denied = [r for r in records if r["kind"] == "decision" and not r["approved"]]
    assert len(denied) == 3
    assert sum(len(d["blocking_systems"]) for d in denied) == 3
    # in AAPL's 2013 slide, regime override windows let closes through
    lifted = [r for r in records if r["kind"] == "decision" and r["overridden_systems"]]
    assert lifted and all(r["approved"] and r["action"] == "close" for r in lifted)
