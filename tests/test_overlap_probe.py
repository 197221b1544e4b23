"""benchmarks/engine/overlap_probe.py (a GPU probe) keeps working: its plumbing on the CPU, its shape parsing."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "engine" / "overlap_probe.py"


def test_cpu_plumbing_writes_one_row_per_shape(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), "--model", "tiny-llama", "--cpu", "--shapes", "3x40+8,2x64+16",
                        "--layers", "1", "--reps", "2", "--out", str(tmp_path)], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "overlap_probe.json").read_text())
    assert [(x["rows"], x["ctx"], x["chunk"]) for x in doc["rows"]] == [(3, 40, 8), (2, 64, 16)]
    assert "not a measurement" in doc["card"] and doc["model"] == "Tiny-Llama"
    for row in doc["rows"]:
        assert row["gemm_ms_per_layer"] > 0 and row["attn_ms_per_layer"] > 0
        assert row["concurrent_over_sequential"] > 0


@pytest.mark.parametrize("bad", ["64x1024", "64x1024+", "ax1+2", "0x10+5"])
def test_bad_shapes_are_one_line_errors(bad):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import overlap_probe
    finally:
        sys.path.pop(0)
    with pytest.raises(SystemExit) as e:
        overlap_probe.parse_shapes(bad)
    assert str(e.value).startswith("error: --shapes:") and "\n" not in str(e.value)
    assert overlap_probe.parse_shapes("64x1024+448, 2x3+4") == [(64, 1024, 448), (2, 3, 4)]
