"""Re-execute the notebooks in place, so they are committed with their outputs (tables and inline plots).

    python notebooks/execute.py                 # all of them
    python notebooks/execute.py what_if_tour    # one

Needs the ``notebooks`` extra (nbclient, nbformat, ipykernel). The kernel imports this checkout's kvsim.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbclient
import nbformat

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def execute(path: Path) -> int:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:                      # no timestamps: re-running changes only what the outputs say
        cell.metadata.pop("execution", None)
    t0 = time.perf_counter()
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(HERE)}}).execute()
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    nbformat.write(nb, path)
    print(f"{path.name}: {time.perf_counter() - t0:.1f} s, {images} plot(s), {path.stat().st_size // 1024} KiB")
    return images


def main(names: list[str]) -> None:
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    paths = [HERE / f"{n.removesuffix('.ipynb')}.ipynb" for n in names] or sorted(HERE.glob("*.ipynb"))
    for p in paths:
        execute(p)


if __name__ == "__main__":
    main(sys.argv[1:])
