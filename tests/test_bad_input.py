"""Bad input never crashes and never silently runs: one line ``error: <field>: ...`` and exit 2 (issue #12).

Each case of the issue is here, run in-process through ``kvsim.cli.main`` (fast), plus the Python API.
The hypothesis fuzz tests are in ``tests/test_fuzz_input.py``.
"""
from __future__ import annotations

import json
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

import kvsim
from kvsim.cli import main
from kvsim.errors import KvsimError

ROOT = Path(__file__).resolve().parents[1]
Q = str(ROOT / "scenarios" / "examples" / "quickstart.yaml")
SMALL = ["--set", "workload.num_requests=20"]
H100 = ROOT / "calibrate" / "profiles" / "H100" / "opt-13b.json"


def cli(capsys, *args) -> tuple[int, str, str]:
    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:              # argparse
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def assert_error(capsys, field: str, *args) -> str:
    rc, out, err = cli(capsys, *args)
    assert rc == 2, (rc, out, err)
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert err.startswith(f"error: {field}"), err
    return err


def _write(tmp_path, name: str, data: bytes) -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


# ------------------------------------------------------------------ scenario files
@pytest.mark.parametrize("data,what", [
    (b"name: \xff\xfe\n", "not UTF-8"),
    (b"name: a\x00b\n", "binary"),
    (b"", "empty"),
    (b"  \n# only a comment\n", "empty"),
    (b"name: a\nname: b\n", "duplicate key 'name'"),
    (b"engine:\n  block_size: 8\n  block_size: 16\n", "duplicate key 'block_size'"),
    (b"- 1\n- 2\n", "mapping"),
    (b"name: [\n", "not valid YAML"),
])
def test_bad_scenario_files(tmp_path, capsys, data, what):
    err = assert_error(capsys, "scenario", "run", _write(tmp_path, "s.yaml", data), "--out", tmp_path / "o")
    assert what in err
    assert not (tmp_path / "o").exists()


def test_scenario_directory_and_missing(tmp_path, capsys):
    assert_error(capsys, "scenario", "run", tmp_path, "--out", tmp_path / "o")
    assert_error(capsys, "scenario", "run", tmp_path / "nope.yaml", "--out", tmp_path / "o")


def test_bom_scenario_reads(tmp_path, capsys):
    text = Path(Q).read_text().replace("num_requests: 1000", "num_requests: 10")
    p = _write(tmp_path, "bom.yaml", "\ufeff".encode() + text.encode())
    rc, out, err = cli(capsys, "run", p, "--out", tmp_path / "o")
    assert rc == 0, err


# ------------------------------------------------------------------ numbers
@pytest.mark.parametrize("override,field", [
    ("engine.swap_space_gib=.nan", "engine.swap_space_gib"),
    ("engine.swap_space_gib=.inf", "engine.swap_space_gib"),
    ("seed=-1", "seed"),
    ("workload.num_requests=1e12", "workload.num_requests"),
    ("engine.num_gpu_blocks=1099511627776", "engine.num_gpu_blocks"),
    ("workload.cv=.inf", "workload.cv"),
    ("workload.duration_s=.inf", "workload.duration_s"),
    ("workload.rate_req_s=.nan", "workload.rate_req_s"),      # .inf is burst arrivals (issue #13)
    ("workload.rate_req_s=1e-300", "workload.rate_req_s"),
    ("max_time_s=.nan", "max_time_s"),
    ("max_time_s=-1", "max_time_s"),
    ("cost.roofline.step_overhead_s=.nan", "cost.roofline.step_overhead_s"),
    ("cost.roofline.step_overhead_s=.inf", "cost.roofline.step_overhead_s"),
    ("engine.block_size=1099511627776", "engine.block_size"),
    ("engine.block_size=65536", "engine.block_size"),
    ("engine.max_num_seqs=4611686018427387904", "engine.max_num_seqs"),
    ("engine.max_num_seqs=65536", "engine.max_num_seqs"),
    ("engine.max_num_batched_tokens=16000000", "engine.max_num_batched_tokens"),
    ("engine.block_size=16.5", "engine.block_size"),
    ("engine.block_size=true", "engine.block_size"),
    ("runtime.max_wall_s=-1", "runtime.max_wall_s"),
    ("runtime.temperature=.nan", "runtime.temperature"),
    ("workload.n=100000", "workload.n"),
    ("workload.prompt_len_range=[1, .inf]", "workload.prompt_len_range"),
    ("name=", "name"),
    ('name="a\\0b"', "name"),
])
def test_bad_numbers_name_the_field(tmp_path, capsys, override, field):
    assert_error(capsys, field, "run", Q, *SMALL, "--set", override, "--out", tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_huge_duration_refused_before_allocating(tmp_path, capsys):
    err = assert_error(capsys, "workload.duration_s", "run", Q, "--set", "workload.num_requests=null",
                       "--set", "workload.duration_s=1e8", "--out", tmp_path / "o")
    assert "requests" in err


def test_tiny_rate_is_a_number_not_a_string(tmp_path):
    p = _write(tmp_path, "s.yaml", b"workload:\n  rate_req_s: 1e-300\n")
    with pytest.raises(KvsimError) as e:
        kvsim.load_scenario(p)
    assert e.value.field == "workload.rate_req_s" and "expected a number in" in str(e.value)
    assert kvsim.load_scenario(p, ["workload.rate_req_s=2e0"]).workload.rate_req_s == 2.0


# ------------------------------------------------------------------ names and outputs
@pytest.mark.parametrize("name,folder", [("../../x", "x"), ("/abs/olute", "abs_olute"), ("$\\foo$", "foo")])
def test_names_stay_one_component_under_runs(tmp_path, capsys, monkeypatch, name, folder):
    monkeypatch.chdir(tmp_path)
    rc, out, err = cli(capsys, "run", Q, *SMALL, "--set", f"name={name}")
    assert rc == 0, err
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [folder]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    assert (tmp_path / "runs" / folder / "run.png").exists()


def test_rerun_replaces_the_set_and_refuses_foreign_folders(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "requests.csv").write_text("stale")
    rc, _, err = cli(capsys, "run", Q, *SMALL, "--out", out)
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["iterations.csv", "report.html", "requests.csv", "run.png",
                                                     "summary.json"]
    assert len(pd.read_csv(out / "requests.csv")) == 20
    (out / "notes.txt").write_text("mine")
    assert_error(capsys, "--out", "run", Q, *SMALL, "--out", out)
    assert (out / "notes.txt").read_text() == "mine"
    f = tmp_path / "afile"
    f.write_text("x")
    assert_error(capsys, "--out", "run", Q, *SMALL, "--out", f)
    assert_error(capsys, "--out", "sweep", Q, *SMALL, "--grid", "engine.block_size=16", "--out", f, "--quiet")


@pytest.mark.parametrize("cmd", [
    ("run", Q, *SMALL),
    ("sweep", Q, *SMALL, "--grid", "engine.block_size=16", "--quiet"),
    ("plan", Q, *SMALL, "--slo", "normalized_latency_s=0.1", "--quiet"),
    ("report", "block-size", Q, *SMALL, "--quiet"),
])
def test_a_foreign_out_is_refused_before_any_simulation(tmp_path, capsys, monkeypatch, cmd):
    """The --out check runs before the work: a folder holding someone else's file fails at once, with the
    simulator never started (a report or plan can take minutes before it writes)."""
    import kvsim.sim

    def never(*a, **k):
        raise AssertionError("simulated before the --out check")
    monkeypatch.setattr(kvsim.sim.SimEngine, "run", never)
    monkeypatch.setattr(kvsim.sim, "simulate", never)
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert_error(capsys, "--out", *cmd, "--out", out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] and sorted(tmp_path.iterdir()) == [out]


def test_interrupted_write_keeps_the_old_set(tmp_path, capsys, monkeypatch):
    out = tmp_path / "o"
    assert cli(capsys, "run", Q, *SMALL, "--out", out)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def boom(*a, **k):
        raise KeyboardInterrupt

    import kvsim.plots
    monkeypatch.setattr(kvsim.plots, "plot_run", boom)
    assert cli(capsys, "run", Q, "--set", "workload.num_requests=25", "--out", out)[0] == 130
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]            # no temporary folder left


def test_summary_json_is_strict_json(tmp_path, capsys):
    assert cli(capsys, "run", Q, *SMALL, "--set", "max_time_s=0.5", "--out", tmp_path / "o")[0] == 0

    def no_constant(c):
        raise AssertionError(f"{c} in summary.json")
    json.loads((tmp_path / "o" / "summary.json").read_text(), parse_constant=no_constant)


# ------------------------------------------------------------------ traces
def _trace(tmp_path, rows: int = 30, bom: bool = False) -> str:
    lines = ["arrival_s,prompt_len,output_len"] + [f"{0.7 * i:.2f},{20 + i},{5 + i % 7}" for i in range(rows)]
    data = ("\n".join(lines) + "\n").encode()
    return _write(tmp_path, "my.csv", (b"\xef\xbb\xbf" if bom else b"") + data)


def test_trace_replays_its_own_arrivals_by_default(tmp_path, capsys):
    path = _trace(tmp_path, bom=True)
    rc, out, err = cli(capsys, "run", Q, "--set", "workload.dataset=trace", "--set", f"workload.path={path}",
                       "--set", "workload.num_requests=null", "--out", tmp_path / "o")
    assert rc == 0, err
    assert "its own arrival_s, 30 requests" in out
    reqs = pd.read_csv(tmp_path / "o" / "requests.csv")
    assert reqs.arrival_s.round(2).tolist() == [round(0.7 * i, 2) for i in range(30)]


def test_trace_retiming_is_explicit_and_announced(tmp_path, capsys):
    path = _trace(tmp_path)
    base = ["run", Q, "--set", "workload.dataset=trace", "--set", f"workload.path={path}", "--out", tmp_path / "o"]
    rc, out, err = cli(capsys, *base, "--set", "workload.retime_trace=true", "--set", "workload.num_requests=45")
    assert rc == 0, err
    assert "RE-TIMED" in out and "poisson @ 1.5 req/s" in out and "cycling its 30 rows 1.5x" in out
    assert_error(capsys, "workload.arrival", *base, "--set", "workload.retime_trace=true",
                 "--set", "workload.arrival=trace")
    assert_error(capsys, "workload.retime_trace", "run", Q, *SMALL, "--set", "workload.retime_trace=true",
                 "--out", tmp_path / "o2")


def test_trace_cells_too_large(tmp_path, capsys):
    p = _write(tmp_path, "t.csv", b"arrival_s,prompt_len,output_len\n0,1e30,5\n")
    assert_error(capsys, "workload.path", "run", Q, "--set", "workload.dataset=trace",
                 "--set", f"workload.path={p}", "--out", tmp_path / "o")


# ------------------------------------------------------------------ sweep, plan, report
def test_sweep_grid_syntax_and_keys(tmp_path, capsys):
    o = ["--out", tmp_path / "o", "--quiet"]
    assert_error(capsys, "--grid", "sweep", Q, *SMALL, "--grid", "engine.block_size=[8,16", *o)
    assert_error(capsys, "--grid", "sweep", Q, *SMALL, "--grid", "engine.block_sze=8,16", *o)
    assert_error(capsys, "--grid", "sweep", Q, *SMALL, "--grid", "engine.block_size=8,,16", *o)
    assert_error(capsys, "--grid", "sweep", Q, *SMALL, "--grid", "engine.block_size=", *o)
    assert_error(capsys, "--grid", "sweep", Q, *SMALL, "--grid", "seed=1", "--grid", "seed=2", *o)
    assert_error(capsys, "--grid", "sweep", Q, *SMALL, "--grid", "engine.block_size=0,-1", *o)
    assert_error(capsys, "--jobs", "sweep", Q, *SMALL, "--grid", "seed=1", "--jobs", "0", *o)
    assert not (tmp_path / "o").exists()


def test_one_failing_point_keeps_its_row_across_a_process_pool(tmp_path, capsys):
    """A point that loads but cannot run (OPT-175B does not fit one A100-40GB) keeps its row with the error;
    a point that does not load is bad input (``tests/test_bad_cli.py``)."""
    rc, out, err = cli(capsys, "sweep", Q, *SMALL, "--grid", "model=opt-175b,opt-13b", "--jobs", "2",
                       "--out", tmp_path / "o", "--quiet")
    assert rc == 0, err
    df = pd.read_csv(tmp_path / "o" / "sweep.csv", keep_default_na=False)
    assert df.error.iloc[0] != "" and df.error.iloc[1] == ""
    assert_error(capsys, "--grid", "sweep", Q, *SMALL, "--grid", "seed=-1,0", "--out", tmp_path / "o2", "--quiet")


def test_kvsim_error_pickles_and_crosses_a_pool():
    e = pickle.loads(pickle.dumps(KvsimError("engine.block_size", "got 0")))
    assert isinstance(e, ValueError) and e.field == "engine.block_size" and str(e) == "engine.block_size: got 0"
    with ProcessPoolExecutor(1) as ex:
        with pytest.raises(KvsimError) as got:
            ex.submit(kvsim.load_scenario, {"seed": -1}).result()
    assert got.value.field == "seed"


@pytest.mark.parametrize("args,field", [
    (["--tol", "0"], "--tol"), (["--tol", "nan"], "--tol"), (["--tol", "1"], "--tol"),
    (["--set", "workload.rate_req_s=.inf"], "workload.rate_req_s"),
    (["--set", "workload.arrival=burst"], "workload.arrival"),
    (["--candidates", "engine.block_sze=16"], "--candidates"),
    (["--candidates", "engine.block_size=65536,0"], "--candidates"),
    (["--replicas", "1,,2"], "--replicas"), (["--replicas", "0"], "--replicas"),
    (["--requests", "0"], "--requests"), (["--slo", "ttft_p99_s=nan"], "--slo"),
])
def test_plan_bad_input_exits_2(tmp_path, capsys, args, field):
    assert_error(capsys, field, "plan", Q, "--requests", "20", *args, "--out", tmp_path / "o", "--quiet")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("sizes,field", [(",", "--block-sizes"), ("", "--block-sizes"), ("8,x", "--block-sizes"),
                                         ("0", "--block-sizes"), ("16384", "--block-sizes")])
def test_report_block_sizes(tmp_path, capsys, sizes, field):
    assert_error(capsys, field, "report", "block-size", Q, "--requests", "20", "--block-sizes", sizes,
                 "--out", tmp_path / "o", "--quiet", "--jobs", "1")


# ------------------------------------------------------------------ validate
@pytest.mark.parametrize("kind", ["missing", "directory", "binary", "malformed", "not-an-object"])
def test_validate_bad_profile(tmp_path, capsys, kind):
    prof = {"missing": tmp_path / "nope.json", "directory": tmp_path,
            "binary": _write(tmp_path, "b.json", b"\x00\x01\x02"),
            "malformed": _write(tmp_path, "m.json", b'{"model": '),
            "not-an-object": _write(tmp_path, "l.json", b"[1, 2]")}[kind]
    assert_error(capsys, "--profile", "validate", Q, "--profile", prof, "--replay", "--out", tmp_path / "v")


def test_validate_replay_records(tmp_path, capsys):
    out = tmp_path / "v"
    err = assert_error(capsys, "--replay", "validate", Q, "--profile", H100, "--replay", "--out", out)
    assert "no engine records" in err
    edir = out / "quickstart" / "engine"
    edir.mkdir(parents=True)
    (edir / "summary.json").write_text('{"summary": {}}')
    (edir / "requests.csv").write_bytes(b"\x00garbage")
    (edir / "iterations.csv").write_text("a,b\n1,2\n")
    assert_error(capsys, "--replay", "validate", Q, "--profile", H100, "--replay", "--out", out)
    (edir / "requests.csv").write_text("request_id,status\n1,finished\n")
    assert_error(capsys, "--replay", "validate", Q, "--profile", H100, "--replay", "--out", out)
    (edir / "summary.json").write_text('{"summary": ')
    assert_error(capsys, "--replay", "validate", Q, "--profile", H100, "--replay", "--out", out)


def test_calibrated_run_with_garbage_profile(tmp_path, capsys):
    p = _write(tmp_path, "p.json", b'{"model": "OPT-13B"}')
    assert_error(capsys, "cost.profile", "run", Q, *SMALL, "--profile", p, "--out", tmp_path / "o")
    assert_error(capsys, "cost.profile", "run", Q, *SMALL, "--profile", _write(tmp_path, "b.json", b"\xff"),
                 "--out", tmp_path / "o")


# ------------------------------------------------------------------ argparse, engine, API
def test_argparse_errors_are_one_line(capsys):
    assert_error(capsys, "--requests", "plan", Q, "--requests", "abc")
    assert_error(capsys, "", "frobnicate")


def test_engine_preflight_refuses_a_model_that_does_not_fit_ram():
    from kvsim.build import setup_run
    from kvsim.engine.preflight import check_fits
    setup = setup_run(kvsim.load_scenario(Q, ["workload.num_requests=5"]), simulator=False)
    with pytest.raises(KvsimError) as e:
        check_fits(setup, "cpu", ram_bytes=8 << 30)
    assert e.value.field == "model" and "RAM" in str(e.value)
    check_fits(setup, "cpu", ram_bytes=1 << 50)
    with pytest.raises(KvsimError):
        check_fits(setup, "cuda", gpu_free_bytes=1 << 30)


@pytest.mark.parametrize("call", [
    lambda: kvsim.load_scenario({"seed": -1}),
    lambda: kvsim.load_scenario({"engine": "x"}),
    lambda: kvsim.load_scenario(42),
    lambda: kvsim.load_scenario({"workload": {"num_requests": float("nan")}}),
    lambda: kvsim.simulate("quickstart.yaml"),
    lambda: kvsim.load_scenario(Q, ["=3"]),
    lambda: kvsim.load_scenario(Q, ["engine.=3"]),
    lambda: kvsim.load_scenario(Q, ["engine.block_size.x=3"]),
])
def test_python_api_raises_kvsim_error(call):
    with pytest.raises(KvsimError):
        call()


def test_api_scenario_changed_in_python_is_checked():
    sc = kvsim.load_scenario(Q, ["workload.num_requests=5"])
    sc.engine.swap_space_gib = float("inf")
    with pytest.raises(KvsimError) as e:
        kvsim.simulate(sc)
    assert e.value.field == "engine.swap_space_gib"


def test_calibrate_serving_runs_must_be_a_directory_of_a_full_calibration(tmp_path, capsys):
    f = _write(tmp_path, "a_file", b"x")
    assert_error(capsys, "--serving-runs", "calibrate", "--model", "opt-13b", "--serving-runs", f)
    assert_error(capsys, "--serving-runs", "calibrate", "--model", "opt-13b", "--fast", "--serving-runs",
                 str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("limit", ["0", "-5", "nan", "inf", "soon"])
def test_calibrate_time_limit_must_be_positive_seconds(capsys, limit):
    assert_error(capsys, "--time-limit", "calibrate", "--model", "opt-13b", "--time-limit", limit)


def test_calibrate_names_an_unknown_model_before_it_needs_a_gpu(capsys):
    err = assert_error(capsys, "--model", "calibrate", "--model", "opt-13", "--block-sizes", "16")
    assert "unknown model 'opt-13'" in err and "OPT-13B" in err
    assert_error(capsys, "--model", "calibrate", "--model", "nope", "--estimate")
