"""notebooks/compare_profiles.ipynb runs headless from the repository root without an error."""

from __future__ import annotations

import sys

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


WALK_FORWARD = PROJECT_ROOT / "notebooks" / "walk_forward.ipynb"


def test_walk_forward_notebook_executes() -> None:
    notebook = nbformat.read(WALK_FORWARD, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=120,
        resources={"metadata": {"path": str(PROJECT_ROOT)}},
    )
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2, "the out-of-sample equity and the parameters per fold"
    tables = [o for o in outputs if "text/html" in o.get("data", {})]
    assert len(tables) >= 4, "folds, trials, arms and bootstrap"
    sentence = next(o for o in outputs if "data" in o)["data"]["text/plain"]
    assert "folds tuned protection beat off out of sample in" in sentence
