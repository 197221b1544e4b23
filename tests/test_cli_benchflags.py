"""vllm bench serve's load flags on kvsim run / sweep / plan, --percentile-metrics, and `kvsim fields` misses."""
from __future__ import annotations

import json

import pytest

from tests._cli import cli

Q = "scenarios/examples/quickstart.yaml"


def test_request_rate_inf_and_max_concurrency_are_the_scenario_fields(tmp_path, capsys):
    rc, out, err = cli(capsys, "run", Q, "--request-rate", "inf", "--max-concurrency", "4",
                       "--set", "workload.num_requests=20", "--out", tmp_path / "r", "--outputs", "json")
    assert rc == 0, err
    assert "burst" in out and "at most 4 in flight" in out
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["summary"]["requests_finished"] == 20


def test_flag_wins_over_set_and_burstiness_is_the_gamma_shape(tmp_path, capsys):
    rc, out, err = cli(capsys, "run", Q, "--set", "workload.rate_req_s=9", "--request-rate", "2",
                       "--burstiness", "0.25", "--set", "workload.num_requests=20", "--out", tmp_path / "r",
                       "--outputs", "json")
    assert rc == 0, err
    assert "gamma @ 2 req/s (cv 2, gamma shape 0.25)" in out


def test_percentile_metrics_picks_the_rows(tmp_path, capsys):
    rc, out, err = cli(capsys, "run", Q, "--set", "workload.num_requests=20", "--percentile-metrics", "e2el,ttft",
                       "--metric-percentiles", "50,99", "--out", tmp_path / "r", "--outputs", "json,html")
    assert rc == 0, err
    table = out[out.index("metric  mean_ms"):].splitlines()
    assert table[0].split() == ["metric", "mean_ms", "p50_ms", "p99_ms"]
    assert [r.split()[0] for r in table[1:3]] == ["ttft", "e2el"]
    assert "tpot" not in out.split("per-request latency")[1].split("wrote")[0]
    html = (tmp_path / "r" / "report.html").read_text()
    lat = html[html.index("Per-request latency"):]
    lat = lat[:lat.index("</table>")]
    assert ">ttft<" in lat and ">e2el<" in lat and ">tpot<" not in lat and ">itl<" not in lat


@pytest.mark.parametrize("args, field", [
    (["run", Q, "--burstiness", "-1"], "workload.burstiness"),
    (["run", Q, "--request-rate", "fast"], "workload.rate_req_s"),
    (["run", Q, "--max-concurrency", "0"], "workload.max_concurrency"),
    (["run", Q, "--percentile-metrics", "ttft,foo"], "--percentile-metrics"),
    (["plan", Q, "--request-rate", "inf"], "workload.rate_req_s"),
    (["plan", Q, "--max-concurrency", "8"], "workload.max_concurrency"),
    (["sweep", Q, "--grid", "engine.block_size=16", "--burstiness", "x"], "workload.burstiness"),
    (["fields", "no_such_field_text"], "fields"),
])
def test_bad_bench_flags_exit_2_naming_the_field(args, field, tmp_path, capsys):
    rc, out, err = cli(capsys, *args, *(["--out", tmp_path / "o"] if args[0] != "fields" else []))
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith(f"error: {field}:"), err
