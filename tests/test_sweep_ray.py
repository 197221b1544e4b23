"""Sweeps: Ray and local processes give identical tables; ``resume`` skips points already done."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import kvsim
from kvsim.errors import KvsimError

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "scenarios" / "examples" / "quickstart.yaml"
GRID = {"workload.rate_req_s": [1, 2.5], "engine.block_size": [8, 64]}
SET = ["workload.num_requests=120"]


def _csv(df: pd.DataFrame, path: Path) -> str:
    df.to_csv(path, index=False)
    return path.read_text()


def test_ray_and_local_sweeps_give_identical_tables(tmp_path):
    ray = pytest.importorskip("ray")
    local = kvsim.sweep(QUICK, GRID, SET, jobs=2)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = kvsim.sweep(QUICK, GRID, SET, backend="ray")
    finally:
        ray.shutdown()
    assert len(local) == 4 and (local.error == "").all()
    assert _csv(local, tmp_path / "a.csv") == _csv(remote, tmp_path / "b.csv")


def test_resume_skips_points_already_in_sweep_csv(tmp_path, monkeypatch):
    out = tmp_path / "sweep.csv"
    first = kvsim.sweep(QUICK, {"workload.rate_req_s": [1, 2.5], "engine.block_size": [8]}, SET, jobs=1)
    first.to_csv(out, index=False)
    import kvsim.sweeps as sw
    ran = []
    real = sw._run_point
    monkeypatch.setattr(sw, "_run_point", lambda t: ran.append(t[2]) or real(t))
    both = sw.sweep(QUICK, GRID, SET, jobs=1, resume=out)
    assert ran == [{"workload.rate_req_s": 1, "engine.block_size": 64},
                   {"workload.rate_req_s": 2.5, "engine.block_size": 64}]
    fresh = kvsim.sweep(QUICK, GRID, SET, jobs=1)
    assert _csv(both, tmp_path / "a.csv") == _csv(fresh, tmp_path / "b.csv")


def test_cli_sweep_out_resumes(tmp_path):
    cmd = [sys.executable, "-m", "kvsim.cli", "sweep", str(QUICK), "--grid", "engine.block_size=8,16",
           "--set", SET[0], "--out", str(tmp_path), "--quiet", "--jobs", "1"]
    assert subprocess.run(cmd, capture_output=True, timeout=120, cwd=ROOT).returncode == 0
    before = (tmp_path / "sweep.csv").read_text()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0 and (tmp_path / "sweep.csv").read_text() == before
    assert "sweep:" not in r.stderr                  # nothing left to run: no progress bar
    with pytest.raises(KvsimError):
        kvsim.sweep(QUICK, GRID, SET, backend="dask")
