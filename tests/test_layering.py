"""The core (models, durations, protections, orchestrator, profile, audit) needs no backtrader;
the library leaves the process to its caller (no prints, no global logging or sys.path changes,
errors that name parameters, not CLI flags)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bt_protection.cli import as_flags, main
from bt_protection.compare import run_comparison
from bt_protection.errors import UserError
from bt_protection.runner import RunSpec, execute_run

CORE = (
    "bt_protection",
    "bt_protection.models",
    "bt_protection.durations",
    "bt_protection.protections",
    "bt_protection.orchestrator",
    "bt_protection.profile",
    "bt_protection.audit",
    "bt_protection.demo",
    "bt_protection.integration.gate",
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


def _imported(module: str) -> set[str]:
    """The bt_protection modules `module` imports, lazily or not."""
    path = Path(__file__).resolve().parents[1] / (module.replace(".", "/") + ".py")
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("bt_protection")}


def test_the_mixin_and_the_rebalancer_form_no_import_cycle() -> None:
    mixin, rebalancer = "bt_protection.integration.mixin", "bt_protection.integration.rebalancer"
    assert rebalancer in _imported(mixin)
    assert mixin not in _imported(rebalancer)
    assert mixin not in _imported("bt_protection.integration.gate")


# --------------------------------------------------------------------------- the library's manners

PACKAGE = Path(__file__).resolve().parents[1] / "bt_protection"
FLAG = re.compile(r"(?<![\w-])--[a-z]")


def library_modules() -> list[Path]:
    """Every module but the command line's (bt_protection/cli/), which owns the process."""
    return sorted(p for p in PACKAGE.rglob("*.py") if "cli" not in p.relative_to(PACKAGE).parts)


def _docstrings(tree: ast.AST) -> set[int]:
    nodes = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, nodes)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def manners(path: Path) -> list[str]:
    """What `path` does that only the CLI may: print, change global logging or sys.path, or
    write a CLI flag into a message (library errors name parameters as `name`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            if name == "print" or name.endswith(("basicConfig", "set_verbosity", ".setLevel")):
                found.append(f"{where}: calls {name}")
            if name.startswith("sys.path."):
                found.append(f"{where}: calls {name}")
        if isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(ast.unparse(t).startswith("sys.path") for t in targets):
                found.append(f"{where}: assigns sys.path")
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and FLAG.search(node.value)
        ):
            found.append(f"{where}: names a flag in {node.value!r}")
    return found


def test_the_library_does_not_speak_cli() -> None:
    modules = library_modules()
    assert PACKAGE / "compare.py" in modules and PACKAGE / "tune" / "walk.py" in modules
    assert [line for path in modules for line in manners(path)] == []


def test_the_cli_writes_each_parameter_a_library_error_names_as_its_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(UserError) as raised:
        run_comparison("sma_crossover", ["off"], jobs=0, out=tmp_path / "c")
    assert str(raised.value) == "`jobs` must be 1 or more, not 0."
    assert main(["compare", "--profiles", "off", "--jobs", "0", "--out", str(tmp_path)]) == 2
    assert (
        capsys.readouterr().err
        == "bt-protection compare: error: --jobs must be 1 or more, not 0.\n"
    )
    spec = RunSpec("sma_crossover", "off", start="2020-01-01", end="2019-01-01", regime_data="X")
    with pytest.raises(UserError, match=r"^`end` 2019-01-01 is before `start` 2020-01-01; "):
        execute_run(spec, tmp_path / "run")
    flags = {"regime_data": "--regime-data", "params": "--param"}
    assert as_flags("`regime_data` X; `params`; `key` stays", flags) == (
        "--regime-data X; --param; `key` stays"
    )
