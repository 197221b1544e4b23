"""The block-size engine check's runner (benchmarks/engine/blocksize_runs.py): every run on one loaded model, each in
its own folder as engine_check reads it, a folder already written kept. CPU engine, tiny model."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests._scripts import load_script

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]


def _runner():
    return load_script("benchmarks/engine/blocksize_runs.py")


SETS = ["model=tiny-opt", "runtime.device=cpu", "runtime.attention_backend=torch", "workload.arrival=poisson",
        "engine.max_num_batched_tokens=128", "runtime.warmup=false"]


def test_runs_share_one_model_and_resume(tmp_path, monkeypatch):
    import kvsim.engine.models as models
    from kvsim.report.engine_check import load_runs
    r = _runner()
    built = []
    real = models.build_model
    monkeypatch.setattr(models, "build_model", lambda *a, **k: built.append(1) or real(*a, **k))
    scenario = str(ROOT / "scenarios/examples/tiny_swa_engine_cpu.yaml")
    runs = [r.parse_run("4:20:6:0"), r.parse_run("8:20:6:0")]
    written = r.run_all(scenario, runs, tmp_path, SETS, log=lambda *_: None)
    assert [d.name for d in written] == ["b4_r20_s0", "b8_r20_s0"] and len(built) == 1
    t = load_runs(tmp_path, "normalized_latency_s")
    assert sorted(t.block_size) == [4, 8] and (t.rate == 20).all() and (t.metric > 0).all()
    assert r.run_all(scenario, runs, tmp_path, SETS, log=lambda *_: None) == []          # both kept
    stopped = []
    assert r.run_all(scenario, [r.parse_run("16:20:6:0")], tmp_path, SETS, time_limit=10, min_left=60,
                     log=stopped.append) == [] and "time limit" in stopped[0]


def test_a_malformed_run_is_one_line_and_exit_2(capsys):
    assert _runner().main(["x.yaml", "--out", "/tmp/unused", "--run", "16:fast:600"]) == 2
    assert capsys.readouterr().err.strip() == "error: --run: expected BLOCK:RATE:REQUESTS:SEED, got '16:fast:600'"


def test_the_engine_runs_in_the_reports_profiles_mode_before_the_users_sets(tmp_path):
    import json
    r = _runner()
    assert r.engine_sets(None, ["gpu=h100-80gb"]) == ["gpu=h100-80gb"]
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"meta": {"prefill_ladder": "v2", "mixed_decode_kernel": True, "async_scheduling": False,
                                      "swap_staged": True}}))           # no prefill_route: measured before routing
    got = r.engine_sets(str(p), ["runtime.async_scheduling=true"])
    assert "runtime.cuda_graph_prefill_route=false" in got and "runtime.cuda_graph_prefill_ladder=v2" in got
    assert got[-1] == "runtime.async_scheduling=true" and got.index("runtime.async_scheduling=false") < len(got) - 1
    assert r.main(["x.yaml", "--out", str(tmp_path), "--run", "16:1:6:0", "--profile", str(tmp_path / "none.json")]) == 2


def test_bracketing_runs_step_each_block_toward_its_crossing(tmp_path):
    """``--bracket``: every block at its predicted SLO rate, then one step a round on the side its SLO rate lies,
    until bracketed or out of rounds; each round's runs come after the previous round's are on disk (a fake
    engine writes them here: the metric is bound x rate / true SLO rate)."""
    import pandas as pd
    r = _runner()
    report = tmp_path / "block_size.csv"
    pd.DataFrame({"block_size": [1, 16, 128], "max_rate_req_s": [10.0, 10.0, 10.0],
                  "probe_requests": [10, 10, 10], "probe_min_duration_s": [1.0, 1.0, 1.0]}).to_csv(report, index=False)
    true_rate = {1: 10.5, 16: 7.9, 128: 20.0}       # within a step above; two steps below; out of reach
    out, order = tmp_path / "runs", []
    for b, rate, n, seed in r.bracket_runs(str(report), [1, 16, 128], [0], out, "normalized_latency_s", 0.1, 0.15, 2):
        order.append((b, rate))
        d = r.run_dir(out, b, rate, seed)
        d.mkdir(parents=True)
        norm = 0.1 * rate / true_rate[b]
        pd.DataFrame({"status": ["finished"] * n, "arrival_s": 0.0, "first_token_s": 0.1, "finish_s": norm * 100,
                      "output_len": 100}).to_csv(d / "requests.csv", index=False)
    assert order == [(1, 10.0), (16, 10.0), (128, 10.0), (1, 11.5), (16, 8.5), (128, 11.5), (16, 7.0), (128, 13.0)]
    # a run that never landed (a call cut short) ends its block's search; landed ones count when resumed
    again = list(r.bracket_runs(str(report), [1, 16], [0], out, "normalized_latency_s", 0.1, 0.15, 2))
    assert [(b, rate) for b, rate, _, _ in again] == [(1, 10.0), (16, 10.0), (1, 11.5), (16, 8.5), (16, 7.0)]
    gone = tmp_path / "gone"
    assert [(b, x) for b, x, _, _ in r.bracket_runs(str(report), [16], [0], gone, "normalized_latency_s", 0.1,
                                                     0.15, 2)] == [(16, 10.0)]
