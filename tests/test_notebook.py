"""The notebooks run headless from the repository root without an error."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import nbformat
from conftest import PROJECT_ROOT
from nbclient import NotebookClient

NOTEBOOKS = PROJECT_ROOT / "notebooks"


def _execute(notebook: Any) -> list[Any]:
    """Run `notebook` from the project root; return every output, none an error."""
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=120,
        resources={"metadata": {"path": str(PROJECT_ROOT)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    return outputs


def _with(outputs: list[Any], mime: str) -> list[Any]:
    return [o for o in outputs if mime in o.get("data", {})]


def test_compare_profiles_notebook_executes() -> None:
    notebook = nbformat.read(NOTEBOOKS / "compare_profiles.ipynb", as_version=4)
    # the kernel must run this interpreter (the kernelspec's `python` becomes sys.executable)
    notebook.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    *outputs, check = _execute(notebook)
    assert check["text"].strip() == sys.executable
    assert len(_with(outputs, "image/png")) >= 4, "equity, drawdown, denials, the comparison"
    html = [o["data"]["text/html"] for o in _with(outputs, "text/html")]
    assert len(html) >= 4, "the comparison, two attribution tables and the report"
    report = [page for page in html if page.startswith("<iframe srcdoc=")]
    assert len(report) == 1 and "vegaEmbed" in report[0] and "chart-denials" in report[0]


def test_own_strategy_notebook_compares_a_class_defined_in_a_cell(tmp_path: Path) -> None:
    notebook = nbformat.read(NOTEBOOKS / "own_strategy.ipynb", as_version=4)
    out = tmp_path / "cmp"
    for cell in notebook.cells:
        cell.source = cell.source.replace('"runs/notebook-own-strategy"', repr(str(out)))
    outputs = _execute(notebook)
    table = [o["data"]["text/html"] for o in _with(outputs, "text/html")]
    assert len(table) == 1 and "denied_holding_period" in table[0]
    assert outputs[-1]["text"] == "__main__:Breakout {'period': 30}\n"
    assert _with(outputs, "image/png")
    for name in ("off", "balanced"):
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["fingerprint"]["strategy_params"] == {"period": 30}
        assert summary["orders_attempted"] > 0
    assert json.loads((out / "balanced" / "summary.json").read_text())["orders_denied"] > 0


def test_walk_forward_notebook_executes() -> None:
    outputs = _execute(nbformat.read(NOTEBOOKS / "walk_forward.ipynb", as_version=4))
    assert len(_with(outputs, "image/png")) >= 2, "the OOS equity and the parameters per fold"
    assert len(_with(outputs, "text/html")) >= 4, "folds, trials, arms and bootstrap"
    sentence = _with(outputs, "text/plain")[0]["data"]["text/plain"]
    assert "folds tuned protection beat off out of sample in" in sentence
