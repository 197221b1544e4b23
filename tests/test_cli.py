"""CLI: the bundled scenarios run, outputs are written, bad input exits 2 with one line naming the field."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from kvsim.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "scenarios" / "examples" / "quickstart.yaml"


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "kvsim.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


def test_run_writes_outputs(tmp_path):
    r = run_cli("run", QUICK, "--set", "workload.num_requests=150", "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "throughput" in r.stdout
    doc = json.loads((tmp_path / "summary.json").read_text())
    s = doc["summary"]
    for key in ("throughput_req_s", "throughput_tok_s", "normalized_latency_s", "ttft_p50_s", "ttft_p99_s",
                "tpot_p50_s", "tpot_p99_s", "avg_batched_requests", "preemptions", "mem_used_frac",
                "mem_internal_frag_frac", "mem_reserved_frac", "mem_external_frag_frac",
                "sharing_saved_frac", "requests_finished", "requests_rejected"):
        assert key in s, key
    assert s["requests_finished"] + s["requests_rejected"] == 150
    reqs = pd.read_csv(tmp_path / "requests.csv")
    its = pd.read_csv(tmp_path / "iterations.csv")
    assert len(reqs) == 150 and len(its) == s["num_iterations"]
    assert (tmp_path / "run.png").stat().st_size > 10_000


def test_same_seed_byte_identical_summary(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out, seed in ((a, 3), (b, 3), (c, 4)):
        assert main(["run", str(QUICK), "--set", "workload.num_requests=120", "--set", f"seed={seed}",
                     "--out", str(out)]) == 0
    assert (a / "summary.json").read_bytes() == (b / "summary.json").read_bytes()
    assert (a / "summary.json").read_bytes() != (c / "summary.json").read_bytes()


@pytest.mark.parametrize("override, field", [
    ("engine.blok_size=16", "engine.blok_size"),
    ("workload.rate_req_s=-1", "workload.rate_req_s"),
    ("engine.block_size=0", "engine.block_size"),
    ("model=opt-175b", "model"),
    ("gpu=a100-20gb", "gpu"),
    ("engine.allocator=buddy", "engine.allocator"),
    ("workload.dataset=trace", "workload.path"),
    ("engine.gpu_memory_utilization=1.5", "engine.gpu_memory_utilization"),
])
def test_bad_input_exits_2_with_one_line(override, field):
    r = run_cli("run", QUICK, "--set", override, "--out", "/tmp/kvsim-never-written")
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("error: ") and field in lines[0], lines[0]


def test_unreadable_trace_and_bad_yaml(tmp_path):
    bad_trace = tmp_path / "t.csv"
    bad_trace.write_text("arrival_s,prompt_len,output_len\n0.0,10,-5\n")
    r = run_cli("run", QUICK, "--set", "workload.dataset=trace", "--set", f"workload.path={bad_trace}",
                "--set", "workload.arrival=trace")
    assert r.returncode == 2 and "output_len" in r.stderr and "Traceback" not in r.stderr
    missing = run_cli("run", QUICK, "--set", "workload.dataset=trace", "--set", "workload.path=/nope.csv")
    assert missing.returncode == 2 and "workload.path" in missing.stderr
    y = tmp_path / "bad.yaml"
    y.write_text("engine: [unclosed\n")
    r = run_cli("run", y)
    assert r.returncode == 2 and r.stderr.startswith("error: scenario") and "Traceback" not in r.stderr


def test_models_and_gpus_list_catalogue():
    assert "OPT-13B" in run_cli("models").stdout
    assert "H100-80GB" in run_cli("gpus").stdout


def test_sweep_writes_csv_and_plot(tmp_path):
    r = run_cli("sweep", QUICK, "--grid", "engine.block_size=8,32", "--grid", "engine.allocator=paged,orca_oracle",
                "--set", "workload.num_requests=100", "--jobs", "2", "--quiet", "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(tmp_path / "sweep.csv")
    assert len(df) == 4 and set(df["engine.block_size"]) == {8, 32}
    assert (df.requests_finished == 100).all()
    assert (tmp_path / "sweep.png").exists()


def test_building_the_parser_and_refusing_bad_input_import_no_numpy_or_pandas():
    """Every command builds the whole parser first; it imports no numpy or pandas (~0.25 s of every `kvsim`
    process), so --help, --version and a one-line refusal of bad input stay quick; a run imports them after its
    arguments are checked."""
    import subprocess
    import sys
    code = ("import sys\nfrom kvsim.cli import build_parser, main\nbuild_parser()\n"
            "heavy = sorted(m for m in ('numpy', 'pandas', 'simpy', 'matplotlib') if m in sys.modules)\n"
            "rc = main(['run', '/nonexistent/scenario.yaml'])\n"
            "heavy2 = sorted(m for m in ('pandas', 'simpy', 'matplotlib') if m in sys.modules)\n"
            "print(heavy, rc, heavy2)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[] 2 []", (out.stdout, out.stderr)
    assert out.stderr.count("\n") == 1 and "scenario" in out.stderr
