"""benchmarks/engine/lone_prefill_probe.py (a GPU probe) keeps working: its plumbing on the CPU with a tiny model."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "engine" / "lone_prefill_probe.py"


def test_cpu_plumbing_times_joiners_arrivals_and_kept_parts(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), "--model", "tiny-opt", "--device", "cpu", "--rows", "4",
                        "--rounds", "1", "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads((tmp_path / "lone_prefill_probe.json").read_text())
    assert doc["gpu"] == "cpu" and doc["rows"] == 4
    assert [x["way"] for x in doc["runs"]] == ["joiners", "arrivals", "joiners, kept parts"]
    for row in doc["runs"]:
        assert row["throughput_req_s"] > 0 and row["lone_prefills"] >= 0
        if row["lone_prefills"]:
            assert row["tokens_median"] <= 128 and row["step_over_grid_ms"] is not None


def test_arrivals_replace_the_closed_loop_with_a_poisson_stream():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import lone_prefill_probe as P
    finally:
        sys.path.pop(0)
    from kvsim.calibrate.serving_fit import serving_scenario_doc
    doc = serving_scenario_doc({"model": "tiny-opt", "dtype": "fp16"}, 16, 4, "cpu", cuda_graphs=False)
    sc = P.arrival_scenario(doc, 2.5)
    assert sc.workload.arrival == "poisson" and sc.workload.rate_req_s == 2.5 and sc.workload.max_concurrency is None
    assert sc.workload.num_requests == doc["workload"]["num_requests"]
    assert "max_concurrency" in doc["workload"]              # the closed loop's document is left as it was
