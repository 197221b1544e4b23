"""benchmarks/engine/swap_steps.py (a GPU probe) keeps working: its whole code path on the CPU with a tiny model,
and the rows it writes (directions, block counts, layouts, transfers = 2 x layers x runs, or runs when staged)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "engine" / "swap_steps.py"


@pytest.fixture(scope="module", params=[False, True], ids=["per-layer", "staged"])
def doc(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("swap_steps")
    r = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--model", "Tiny-Llama", "--blocks", "1,3",
                        "--rows", "2,3", "--ctx", "24", "--reps", "2", "--out", str(out)]
                       + (["--staged"] if request.param else []),
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "ms/xfer" in r.stdout and " ratio " in r.stdout      # the printed table's header
    return json.loads((out / "swap_steps.json").read_text())


def test_metadata(doc):
    assert doc["model"] == "Tiny-Llama" and "not a measurement" in doc["gpu"]
    assert doc["block_bytes"] > 0 and doc["layers"] >= 1 and doc["block_size"] == 16


def test_rows_cover_every_direction_layout_block_count_and_batch(doc):
    rows = doc["rows"]
    assert {(r["n"], r["ms"] > 0) for r in rows if r["kind"] == "profile"} == {(1, True), (3, True)}
    iso = {(r["direction"], r["layout"], r["n"]) for r in rows if r["kind"] == "isolated"}
    assert iso == {(d, lay, n) for d in ("out", "in") for lay in ("scattered", "contiguous") for n in (1, 3)}
    steps = [r for r in rows if r["kind"] == "step"]
    assert {(r["rows"], r["n"], r["direction"], r["layout"]) for r in steps} == (
        {(b, n, "none", "-") for b in (2, 3) for n in (1, 3)}
        | {(b, n, d, lay) for b in (2, 3) for n in (1, 3) for d in ("out", "in") for lay in ("scattered", "contiguous")})
    assert all(r["ms"] > 0 for r in rows)


def test_transfers_are_two_per_layer_per_run(doc):
    """Per layer: K and V of each layer, each run of blocks. Staged: one copy per run of CPU blocks, all layers."""
    per_run = 1 if doc["staged"] else 2 * doc["layers"]
    for r in doc["rows"]:
        if r["kind"] == "profile" or r["direction"] == "none":
            continue
        assert r["runs"] == (r["n"] if r["layout"] == "scattered" else 1), r
        assert r["transfers"] == per_run * r["runs"], r


def test_summary_is_the_step_rows_against_their_alone_step(doc):
    steps = {(r["rows"], r["n"], r["direction"], r["layout"]): r["ms"] for r in doc["rows"] if r["kind"] == "step"}
    assert len(doc["summary"]) == 2 * 2 * 2 * 2
    for s in doc["summary"]:
        alone = steps[(s["rows"], s["n"], "none", "-")]
        assert s["in_step_extra_ms"] == pytest.approx(steps[(s["rows"], s["n"], s["direction"], s["layout"])] - alone)
        assert s["extra_per_transfer_ms"] == pytest.approx(s["in_step_extra_ms"] / s["transfers"])
        assert s["isolated_ms"] > 0 and s["profile_out_ms"] > 0
