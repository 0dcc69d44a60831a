"""The trace notebook runs end to end, so it cannot silently rot as the code moves."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

import pytest

pytestmark = pytest.mark.slow  # end to end: subprocesses, a kernel or a sweep

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "analysis" / "notebooks" / "traces.ipynb"


def test_traces_notebook_executes():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # Run from the repo root, as a user starting Jupyter there: relative trace paths resolve.
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum(o.output_type == "display_data" and "image/png" in o.get("data", {}) for o in outputs) >= 5
    last = nb.cells[-1].outputs
    assert any("depthwise" in str(o.get("data", {}).get("text/plain", "")) for o in last)
