"""Replications and intervals (issue #13): --seeds on run / sweep / plan, Student-t intervals, the
interval-deciding planner, vLLM-bench latency metrics (ITL, E2EL, goodput) and discoverability."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import kvsim
from kvsim.cli import main
from kvsim.latency import goodput, itl_gaps, latency_table, parse_goodput, weighted_percentile
from kvsim.plan.confident import classify, find_rate_interval
from kvsim.stats import interval, t_quantile
from tests._cli import cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
Q = str(ROOT / "scenarios" / "examples" / "quickstart.yaml")


def test_student_t_quantiles_and_interval():
    assert t_quantile(0.975, 1) == pytest.approx(12.7062, abs=1e-4)
    assert t_quantile(0.975, 9) == pytest.approx(2.2622, abs=1e-4)
    assert t_quantile(0.95, 4) == pytest.approx(2.1318, abs=1e-4)
    iv = interval([1, 2, 3, 4])
    assert iv.mean == 2.5 and iv.n == 4
    assert iv.hi - 2.5 == pytest.approx(3.1824 * np.std([1, 2, 3, 4], ddof=1) / 2, rel=1e-4)
    one = interval([5.0])
    assert (one.lo, one.hi, one.n) == (5.0, 5.0, 1)


def test_interval_of_non_negative_values_stops_at_zero():
    skewed = interval([0.2, 0.3, 20.0])              # three seeds' p99 TTFT: t alone reaches below zero
    assert skewed.lo == 0.0 and skewed.hi == pytest.approx(20.5 / 3 + t_quantile(0.975, 2) * np.std([0.2, 0.3, 20], ddof=1) / 3 ** .5)
    signed = interval([-1.0, 1.0, 3.0])              # a quantity seen below zero keeps the plain t interval
    assert signed.lo == pytest.approx(1 - 4.3027 * 2 / 3 ** .5, rel=1e-4)


def test_run_seeds_1_is_unchanged_and_seeds_3_reports_every_run(tmp_path, capsys):
    small = ["--set", "workload.num_requests=40"]
    assert cli(capsys, "run", Q, *small, "--out", tmp_path / "a")[0] == 0
    assert cli(capsys, "run", Q, *small, "--seeds", "1", "--out", tmp_path / "b")[0] == 0
    assert (tmp_path / "a" / "summary.json").read_bytes() == (tmp_path / "b" / "summary.json").read_bytes()
    rc, out, _ = cli(capsys, "run", Q, *small, "--seeds", "3", "--jobs", "1", "--out", tmp_path / "c")
    assert rc == 0 and "95% interval], 3 runs" in out
    doc = json.loads((tmp_path / "c" / "summary.json").read_text())
    rep = doc["replications"]
    assert rep["seeds"] == [0, 1, 2] and len(rep["per_seed"]) == 3
    assert doc["summary"] == {k: v for k, v in rep["per_seed"][0].items() if k != "seed"}
    agg = rep["mean_and_interval"]
    vals = [s["throughput_req_s"] for s in rep["per_seed"]]
    assert agg["throughput_req_s"] == pytest.approx(np.mean(vals))
    assert agg["throughput_req_s_ci_lo"] < agg["throughput_req_s"] < agg["throughput_req_s_ci_hi"]


def test_sweep_seeds_gives_mean_interval_and_per_run_rows(tmp_path, capsys):
    rc, out, _ = cli(capsys, "sweep", Q, "--grid", "engine.block_size=16,32", "--set", "workload.num_requests=30",
                     "--seeds", "2", "--jobs", "1", "--quiet", "--out", tmp_path / "s")
    assert rc == 0
    df = pd.read_csv(tmp_path / "s" / "sweep.csv")
    runs = pd.read_csv(tmp_path / "s" / "sweep_runs.csv")
    assert list(df.runs) == [2, 2] and len(runs) == 4 and set(runs.seed) == {0, 1}
    for bs, g in runs.groupby("engine.block_size"):
        row = df[df["engine.block_size"] == bs].iloc[0]
        assert row.normalized_latency_s == pytest.approx(g.normalized_latency_s.mean())
        assert row.normalized_latency_s_ci_lo <= row.normalized_latency_s <= row.normalized_latency_s_ci_hi


def test_replicated_search_decides_on_the_interval():
    slo = {"ttft_p99_s": 10.0}
    res = find_rate_interval(Q, slo, seeds=[0, 1, 2], requests=200, min_duration_s=None, rel_tol=0.1,
                             max_requests=400)
    assert res.runs == 3 and res.max_rate is not None and res.rate_hi is not None
    assert res.max_rate < res.fail_rate <= res.rate_hi * (1 + 1e-9)
    assert res.max_rate <= res.capacity <= res.rate_hi
    est, lo, hi = res.slo_intervals["ttft_p99_s"]
    assert hi <= 10.0 and lo <= est <= hi
    assert res.stable is not None and "requests" in res.note
    passing = [p for p in res.probes if p.ok and p.requests == res.requests]
    assert passing and max(p.rate for p in passing) == res.max_rate
    # a probe whose mean share above the bound is under 1% but whose upper interval end is not, does not pass
    runs = [np.ones(300), np.ones(300), np.r_[np.ones(294), np.full(6, 11.5)]]
    sums = [{"requests_finished": 300, "steady": {"ttft_s": x}} for x in runs]
    ok, fails, why, _ = classify(sums, slo, 0.95)
    assert not ok and not fails and "ttft_p99_s" in why[0]


def test_plan_cli_seeds_states_rate_interval_and_runs(tmp_path, capsys):
    rc, out, err = cli(capsys, "plan", Q, "--slo", "ttft_p99_s=10", "--requests", "300", "--seeds", "2",
                       "--max-requests", "300", "--tol", "0.1", "--jobs", "1", "--quiet", "--out", tmp_path / "p")
    assert rc == 0, err
    assert "with 95% confidence" in out and "2 runs of 300 requests" in out and "capacity" in out
    assert "stable" in out
    t = pd.read_csv(tmp_path / "p" / "plan.csv")
    assert t.runs.iloc[0] == 2 and t.rate_hi_req_s.iloc[0] >= t.max_rate_req_s.iloc[0]


@pytest.fixture(scope="module")
def small_run():
    return kvsim.simulate(kvsim.load_scenario(Q, {"workload.num_requests": 80, "workload.rate_req_s": 3}))


def test_itl_gaps_sum_to_decode_span_and_percentiles_match_expanded(small_run):
    reqs, its = small_run.requests, small_run.iterations
    vals, cnts = itl_gaps(reqs, its)
    done = reqs[reqs.status == "finished"]
    assert cnts.sum() == (done.output_len - 1).sum()
    assert (vals * cnts).sum() == pytest.approx((done.finish_s - done.first_token_s).sum())
    flat = np.repeat(vals, cnts)
    for q in (50, 90, 99):
        assert weighted_percentile(vals, cnts, q) == pytest.approx(np.percentile(flat, q))
    s = small_run.summary
    assert s["itl_p50_s"] <= s["itl_p99_s"] and s["latency_p50_s"] <= s["latency_p90_s"] <= s["latency_p99_s"]
    t = latency_table(reqs, its, [50, 99]).set_index("metric")
    assert t.loc["e2el", "p99_ms"] == pytest.approx(s["latency_p99_s"] * 1e3)


def test_goodput_is_share_of_requests_meeting_every_slo(small_run):
    reqs = small_run.requests
    everyone = goodput(reqs, parse_goodput(["ttft:1e9", "tpot:1e9", "e2el:1e9"]))
    assert everyone["good_requests"] == (reqs.status == "finished").sum()
    strict = goodput(reqs, parse_goodput(["ttft:1"]))
    assert strict["good_requests"] <= everyone["good_requests"]
    assert strict["goodput_req_s"] <= small_run.summary["throughput_req_s"] + 1e-9


def test_run_prints_goodput_and_selected_percentiles(tmp_path, capsys):
    rc, out, _ = cli(capsys, "run", Q, "--set", "workload.num_requests=30", "--goodput", "ttft:2000", "tpot:100",
                     "--metric-percentiles", "50,95", "--out", tmp_path / "r")
    assert rc == 0 and "p95_ms" in out and "goodput (ttft <= 2000 ms, tpot <= 100 ms)" in out


@pytest.mark.parametrize("field,args", [
    ("--seeds", ["run", Q, "--seeds", "0"]),
    ("--confidence", ["run", Q, "--seeds", "2", "--confidence", "1.5"]),
    ("--goodput", ["run", Q, "--goodput", "itl2:5"]),
    ("--goodput", ["run", Q, "--goodput", "ttft:nan"]),
    ("--metric-percentiles", ["run", Q, "--metric-percentiles", "0,50"]),
    ("--seeds", ["sweep", Q, "--grid", "engine.block_size=16", "--seeds", "-1"]),
    ("--grid", ["sweep", Q, "--grid", "seed=1,2", "--seeds", "2"]),
    ("--max-requests", ["plan", Q, "--seeds", "2", "--requests", "100", "--max-requests", "50"]),
    ("--confidence", ["plan", Q, "--seeds", "2", "--confidence", "inf"]),
    ("--requests", ["plan", Q, "--slo", "ttft_p99_s=10", "--seeds", "2", "--requests", "60"]),
])
def test_bad_replication_and_latency_input_is_one_line_exit_2(capsys, tmp_path, field, args):
    rc, out, err = cli(capsys, *args, "--out", tmp_path / "o")
    assert rc == 2 and err.count("\n") == 1 and err.startswith(f"error: {field}"), err


def test_version_fields_and_override_forms(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"kvsim {kvsim.__version__}"
    rc, out, _ = cli(capsys, "fields")
    assert rc == 0 and "engine.block_size  (int, default 16; an integer in [1, 65536])" in out
    assert "workload.cv" in out and "cost.roofline." in out
    assert kvsim.load_scenario(Q, {"engine.block_size": 32}).engine.block_size == 32
    assert kvsim.load_scenario(Q, "engine.block_size=8").engine.block_size == 8
    with pytest.raises(kvsim.KvsimError, match="overrides"):
        kvsim.load_scenario(Q, 5)


def test_infinite_rate_is_burst_and_burstiness_is_gamma_shape(capsys, tmp_path):
    sc = kvsim.load_scenario(Q, ["workload.rate_req_s=inf"])
    assert sc.workload.arrival == "burst" and sc.workload.rate_req_s is None
    rc, out, _ = cli(capsys, "run", Q, "--set", "workload.rate_req_s=inf", "--set", "workload.num_requests=20",
                     "--out", tmp_path / "b")
    assert rc == 0 and "burst (all at t=0, as rate_req_s: inf)" in out
    g = kvsim.load_scenario(Q, {"workload.burstiness": 0.25})
    assert g.workload.arrival == "gamma" and g.workload.cv == pytest.approx(2.0)
    same = kvsim.load_scenario(Q, {"workload.arrival": "gamma", "workload.cv": 2.0})
    a = kvsim.simulate(kvsim.load_scenario(Q, {"workload.burstiness": 0.25, "workload.num_requests": 30}))
    b = kvsim.simulate(kvsim.load_scenario(Q, {"workload.arrival": "gamma", "workload.cv": 2.0,
                                               "workload.num_requests": 30}))
    assert same.workload.cv == g.workload.cv
    assert np.allclose(a.requests.arrival_s, b.requests.arrival_s, rtol=1e-12)
    for bad, field in (({"workload.burstiness": 0.25, "workload.cv": 3}, "workload.burstiness"),
                       ({"workload.burstiness": 0}, "workload.burstiness"),
                       ({"workload.burstiness": 1, "workload.arrival": "burst"}, "workload.burstiness"),
                       ({"workload.rate_req_s": "inf", "workload.arrival": "trace"}, "workload.rate_req_s")):
        with pytest.raises(kvsim.KvsimError, match=field):
            kvsim.load_scenario(Q, bad)


def test_plan_goodput_slo_in_vllm_bench_terms(tmp_path, capsys):
    from kvsim.plan import find_max_rate
    gp = parse_goodput(["ttft:2000", "tpot:100"])
    res = find_max_rate(Q, {"goodput_miss_frac": 0.05}, requests=60, min_duration_s=None, rel_tol=0.1, goodput=gp)
    assert res.max_rate is not None and res.summary["goodput_miss_frac"] <= 0.05
    miss = [p for p in res.probes if not p.ok]
    assert all(p.summary["goodput_miss_frac"] > 0.05 for p in miss if p.summary.get("requests_unfinished") == 0)
    rc, out, err = cli(capsys, "plan", Q, "--slo", "goodput_miss_frac=0.1", "--requests", "20", "--out", tmp_path / "x")
    assert rc == 2 and err.startswith("error: --slo: goodput_miss_frac needs")
