"""Planner: the max SLO rate is right (meets at r, misses at 1.1 r), searches are cached, the CLI writes a plan."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from kvsim.config import read_yaml
from kvsim.errors import KvsimError
from kvsim.plan import ProbeCache, find_max_rate, meets, parse_slo, pareto_mask, plan, run_at, violations

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "scenarios" / "examples" / "quickstart.yaml"


@pytest.mark.parametrize("slo", [{"normalized_latency_s": 0.1},
                                 {"ttft_p99_s": 5.0, "preemption_rate": 0.2}])
def test_recommended_rate_meets_slo_and_10_percent_more_does_not(slo):
    cache = ProbeCache()
    r = find_max_rate(QUICK, slo, requests=600, cache=cache)
    assert r.max_rate is not None and r.fail_rate is not None
    assert r.fail_rate / r.max_rate - 1 <= 0.02 + 1e-9
    data = read_yaml(QUICK)
    fresh = ProbeCache()                         # re-simulate, do not trust the search's own cache
    at = run_at(data, [], r.max_rate, fresh, requests=600, min_duration_s=60)
    above = run_at(data, [], 1.1 * r.max_rate, fresh, requests=600, min_duration_s=60)
    assert meets(at, slo), violations(at, slo)
    assert not meets(above, slo)
    assert at["requests_total"] >= 600


def test_no_point_is_simulated_twice():
    cache = ProbeCache()
    r = find_max_rate(QUICK, {"normalized_latency_s": 0.1}, requests=300, cache=cache)
    assert r.simulated == cache.misses == len({p.rate for p in r.probes}) == len(cache)
    again = find_max_rate(QUICK, {"normalized_latency_s": 0.1}, requests=300, cache=cache)
    assert again.simulated == 0 and again.max_rate == r.max_rate


def test_unfinished_requests_violate():
    s = {"requests_unfinished": 3, "requests_finished": 10, "requests_total": 13, "normalized_latency_s": 0.01}
    assert violations(s, {"normalized_latency_s": 0.1}) == ["3 requests unfinished"]


@pytest.mark.parametrize("bad", [["latency=1"], ["ttft_p99_s=abc"], ["ttft_p99_s=-1"], ["ttft_p99_s"]])
def test_bad_slo_is_a_kvsim_error(bad):
    with pytest.raises(KvsimError):
        parse_slo(bad)


def test_pareto_front():
    rate = pd.Series([1.0, 2.0, 2.0, 3.0, None])
    lat = pd.Series([0.05, 0.06, 0.08, 0.09, 0.01])
    assert pareto_mask(rate, lat).tolist() == [True, True, False, True, False]


def test_plan_replicas_per_gpu_and_recommendation():
    p = plan(QUICK, {"normalized_latency_s": 0.1}, {"engine.block_size": [16, 256]}, replicas=[1, 2],
             requests=300, jobs=2)
    t = p.table
    assert len(t) == 4 and t.error.eq("").all()
    one, two = t[t.replicas == 1].set_index("engine.block_size"), t[t.replicas == 2].set_index("engine.block_size")
    assert (two.total_rate_req_s == 2 * one.total_rate_req_s).all()
    assert (two.goodput_per_gpu == one.goodput_per_gpu).all()
    assert one.loc[16, "max_rate_req_s"] > one.loc[256, "max_rate_req_s"]       # 256-token blocks fragment
    assert p.recommended["engine.block_size"] == 16
    assert t.requests_per_usd.notna().all()                                       # A100-40GB has a price
    assert t.pareto.any()


def test_cli_plan_writes_files_and_bad_input_exits_2(tmp_path):
    cmd = [sys.executable, "-m", "kvsim.cli", "plan", str(QUICK), "--slo", "normalized_latency_s=0.1",
           "--candidates", "engine.max_num_seqs=32,256", "--requests", "300", "--out", str(tmp_path), "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "recommended:" in r.stdout
    doc = json.loads((tmp_path / "plan.json").read_text())
    assert doc["recommended"]["engine.max_num_seqs"] in (32, 256)
    assert len(pd.read_csv(tmp_path / "plan.csv")) == 2
    assert (tmp_path / "pareto.png").stat().st_size > 5000
    bad = subprocess.run(cmd[:5] + ["--slo", "p50=1"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--slo" in bad.stderr
    bad = subprocess.run(cmd[:5] + ["--candidates", "engine.blok_size=8"], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert bad.returncode == 2 and "engine.blok_size" in bad.stderr
