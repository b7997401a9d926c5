"""The README's example strategy runs as written, from any folder; its test command is CI's."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import PROJECT_ROOT

from bt_protection.audit import read_audit


def readme_example() -> str:
    text = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Use it in your strategy", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README: no python example under 'Use it in your strategy'"
    return match.group(1)


def test_the_readme_example_runs_and_shows_denials(tmp_path: Path) -> None:
    code = readme_example()
    audit = tmp_path / "runs" / "my_audit.jsonl"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,  # the shipped profile and sample load by name, far from the checkout
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


def test_the_readme_test_command_is_what_ci_runs() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    ci = (PROJECT_ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    command = next(
        line
        for line in readme.splitlines()
        if line.startswith("python3 -m venv") and "[test]" in line
    )
    steps = [step.strip() for step in command.split("&&")][2:]  # after the venv and activate
    ran = [
        line.split("#")[0].strip()
        for line in ci
        if line.startswith(("python -m pip install", "ruff", "mypy", "python -m pytest"))
    ]
    assert [s.replace("pip install", "python -m pip install --quiet") for s in steps] == [
        r for r in ran if "--upgrade" not in r
    ]
