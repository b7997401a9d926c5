"""notebooks/compare_profiles.ipynb runs headless from the repository root without an error."""

from __future__ import annotations

import sys

import nbformat
import pytest
from conftest import PROJECT_ROOT
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

NOTEBOOK = PROJECT_ROOT / "notebooks" / "compare_profiles.ipynb"


def test_kernel_runs_this_interpreter() -> None:
    """The `python3` kernel is launched as `python`, which jupyter_client replaces by
    sys.executable: the notebook sees the packages of the test's environment."""
    argv = KernelSpecManager().get_kernel_spec("python3").argv
    assert argv[0] in ("python", "python3", sys.executable)


def test_compare_profiles_notebook_executes() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=120,
        resources={"metadata": {"path": str(PROJECT_ROOT)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4, "equity, drawdown, denials and the comparison figure"
    tables = [o for o in outputs if "text/html" in o.get("data", {})]
    assert len(tables) >= 3, "the comparison table and the two attribution tables"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
