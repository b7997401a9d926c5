"""The notebooks run headless from the repository root without an error."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
from conftest import PROJECT_ROOT
from nbclient import NotebookClient

NOTEBOOK = PROJECT_ROOT / "notebooks" / "compare_profiles.ipynb"


def test_compare_profiles_notebook_executes() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # the kernel must run this interpreter (the kernelspec's `python` becomes sys.executable)
    notebook.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=120,
        resources={"metadata": {"path": str(PROJECT_ROOT)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    *cells, check = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert check.outputs[0]["text"].strip() == sys.executable
    outputs = [output for cell in cells for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4, "equity, drawdown, denials and the comparison figure"
    tables = [o for o in outputs if "text/html" in o.get("data", {})]
    assert len(tables) >= 3, "the comparison table and the two attribution tables"



def test_own_strategy_notebook_compares_a_class_defined_in_a_cell(tmp_path: Path) -> None:
    notebook = nbformat.read(PROJECT_ROOT / "notebooks" / "own_strategy.ipynb", as_version=4)
    out = tmp_path / "cmp"
    for cell in notebook.cells:
        cell.source = cell.source.replace('"runs/notebook-own-strategy"', repr(str(out)))
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=120,
        resources={"metadata": {"path": str(PROJECT_ROOT)}},
    )
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    table = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert len(table) == 1 and "denied_holding_period" in table[0]
    assert outputs[-1]["text"] == "__main__:Breakout {'period': 30}\n"
    assert [o for o in outputs if "image/png" in o.get("data", {})]
    for name in ("off", "balanced"):
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["fingerprint"]["strategy_params"] == {"period": 30}
        assert summary["orders_attempted"] > 0
    assert json.loads((out / "balanced" / "summary.json").read_text())["orders_denied"] > 0
