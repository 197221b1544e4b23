"""The notebooks run headless, top to bottom, each within a minute, and show their plots inline.

They are committed executed (outputs kept small), so a reader sees the plots on GitHub without running them.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MAX_BYTES = 400_000   # committed with outputs: modest-dpi PNGs and short tables, no dumps


def _outputs(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def _images(nb):
    return [o for o in _outputs(nb) if "image/png" in o.get("data", {})]


def test_the_three_notebooks_exist():
    assert {p.name for p in NOTEBOOKS} >= {"what_if_tour.ipynb", "capacity_planning.ipynb",
                                            "block_size_tuning.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes_and_plots(path, monkeypatch):
    # the kernel is a subprocess: make it import this checkout's kvsim, not whichever one is installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    errors = [o for o in _outputs(nb) if o.get("output_type") == "error"]
    assert not errors
    assert _images(nb), f"{path.name} executed without showing a single plot (image/png output)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_executed_and_small(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), f"{path.name}: a code cell was not executed"
    assert _images(nb), f"{path.name} is committed without its plots"
    assert not [o for o in _outputs(nb) if o.get("output_type") == "error"]
    assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size} bytes"
