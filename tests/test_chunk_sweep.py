"""benchmarks/engine/chunk_sweep.py's analysis (CPU): both interpolations it compares give the profile's own
measurements back at the mixed grid's points, and a measurement off the grid's line shows as an error."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from tests._scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "calibrate" / "profiles" / "H100" / "llama-3-8b-1206.json"


def _sweep():
    return load_script("benchmarks/engine/chunk_sweep.py")


def _doc_at_grid_points(rows=(1, 8, 32)) -> dict:
    from kvsim.cost.profile import load_profile
    prof = load_profile(str(PROFILE))
    xn, xc, xt, grid = prof.mixed_step[16]
    ci = list(xc).index(1024)
    return {"model": "Llama-3-8B", "gpu": "test", "block_size": 16,
            "mixed_step": {"decode": list(rows), "ctx": [1024], "chunk": [int(t) for t in xt],
                           "time_s": [[[float(grid[list(xn).index(n), ci, j]) for j in range(len(xt))]]
                                      for n in rows]}}


def test_both_interpolations_are_exact_at_the_mixed_grid_points():
    rows = _sweep().price_both(_doc_at_grid_points(), str(PROFILE))
    assert rows and {r["rows"] for r in rows} == {1, 8, 32}
    for r in rows:
        assert r["linear_abs"] == pytest.approx(0.0, abs=1e-12)
        assert r["shaped_abs"] == pytest.approx(0.0, abs=1e-12)


def test_a_point_off_the_line_shows_as_an_error():
    doc = _doc_at_grid_points(rows=(8,))
    slow = copy.deepcopy(doc)
    j = slow["mixed_step"]["chunk"].index(512)
    slow["mixed_step"]["time_s"][0][0][j] *= 1.25          # the engine took 25% longer there
    rows = {(r["lo"], r["hi"]): r for r in _sweep().price_both(json.loads(json.dumps(slow)), str(PROFILE))}
    assert rows[(257, 512)]["linear_mean"] == pytest.approx(1 / 1.25 - 1)
    assert rows[(1, 64)]["linear_abs"] == pytest.approx(0.0, abs=1e-12)
