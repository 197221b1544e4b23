"""Bad command lines and files that a CLI fuzz run (2026-12-05) found crashing or silently running: each is one
line ``error: <field>: ...`` and exit 2 now, or (where noted) runs exactly what was asked.

In-process through ``kvsim.cli.main``, tiny runs; the helpers are ``tests/test_bad_input.py``'s.
"""
from __future__ import annotations

import json

import pandas as pd
import pytest

from kvsim.textio import parse_yaml
from tests.test_bad_input import Q, SMALL, _write, assert_error, cli

TRACE = "scenarios/traces/sharegpt_llama3_1000.csv"


# ------------------------------------------------------------------ the parser
@pytest.mark.parametrize("flag,args", [
    ("--out", ["run", Q, *SMALL, "--out", ""]),                         # would write to runs/<name>
    ("--profile", ["run", Q, *SMALL, "--out", "{o}", "--profile", " "]),  # would price with the roofline
    ("--metric-percentiles", ["run", Q, *SMALL, "--out", "{o}", "--metric-percentiles", ""]),
    ("--set", ["run", Q, "--set", "", "--out", "{o}"]),
    ("--out", ["sweep", Q, *SMALL, "--grid", "engine.block_size=16", "--out", ""]),
    ("--gpu", ["paper", "--quick", "--out", "{o}", "--gpu", ""]),
])
def test_an_empty_value_is_refused_not_read_as_absent(tmp_path, capsys, monkeypatch, flag, args):
    monkeypatch.chdir(tmp_path)
    err = assert_error(capsys, flag, *[a.format(o=tmp_path / "o") for a in args])
    assert "empty value" in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "o").exists()


@pytest.mark.parametrize("args", [["--seed", "2"], ["--no-fast"], ["--seeds=2"]])
def test_options_are_never_abbreviated(tmp_path, capsys, args):
    """``--seed 2`` once ran two seed replications (argparse read it as ``--seeds``)."""
    rc, out, err = cli(capsys, "run", Q, *SMALL, "--out", tmp_path / "o", *args)
    if args == ["--seeds=2"]:                    # the full name still works
        assert rc == 0, err
        return
    assert rc == 2 and err.count("\n") == 1 and "unrecognized arguments" in err and args[0] in err, err


def test_an_unknown_option_before_the_command_is_named(capsys):
    err = assert_error(capsys, "--bogus", "--bogus")
    assert "run" in err and "required" not in err


# ------------------------------------------------------------------ YAML numbers
@pytest.mark.parametrize("text,value", [("010", 10), ("1:30", "1:30"), ("0b11", "0b11"), ("0o17", 15), ("0x1f", 31),
                                        ("1_000", 1000), ("-5", -5), ("+3", 3), ("16", 16), ("1e3", 1000.0)])
def test_yaml_numbers_are_yaml_1_2(text, value):
    """No YAML 1.1 octal (``010`` was 8), base-60 (``1:30`` was 90) or binary ints."""
    got = parse_yaml(f"a: {text}", "x", "f")["a"]
    assert got == value and type(got) is type(value)


def test_a_yaml_1_1_int_form_is_refused_where_a_number_is_expected(tmp_path, capsys):
    assert_error(capsys, "engine.block_size", "run", Q, *SMALL, "--set", "engine.block_size=1:30",
                 "--out", tmp_path / "o")
    rc, out, err = cli(capsys, "run", Q, *SMALL, "--set", "seed=010", "--out", tmp_path / "o2")
    assert rc == 0, err
    assert json.loads((tmp_path / "o2" / "summary.json").read_text())["scenario"]["seed"] == 10


# ------------------------------------------------------------------ traces
def test_a_trace_cell_beyond_any_float_is_refused(tmp_path, capsys):
    p = _write(tmp_path, "t.jsonl", b'{"arrival_s": 0, "prompt_len": 1' + b"0" * 400 + b', "output_len": 5}\n')
    err = assert_error(capsys, "workload.path", "run", Q, "--set", "workload.dataset=trace",
                       "--set", f"workload.path={p}", "--set", "workload.num_requests=null", "--out", tmp_path / "o")
    assert "prompt_len" in err and "too large" in err


def test_a_trace_header_naming_a_column_twice_is_refused(tmp_path, capsys):
    p = _write(tmp_path, "t.csv", b"arrival_s,prompt_len,output_len,prompt_len\n0,10,5,900\n")
    err = assert_error(capsys, "workload.path", "run", Q, "--set", "workload.dataset=trace",
                       "--set", f"workload.path={p}", "--set", "workload.num_requests=null", "--out", tmp_path / "o")
    assert "prompt_len" in err and "twice" in err


def test_request_rate_on_a_trace_replaying_its_own_arrivals_is_refused(tmp_path, capsys):
    base = ["run", Q, "--set", "workload.dataset=trace", "--set", f"workload.path={TRACE}",
            "--set", "workload.num_requests=20", "--set", "model=llama-3-8b"]
    err = assert_error(capsys, "--request-rate", *base, "--request-rate", "5", "--out", tmp_path / "o")
    assert "retime_trace" in err
    rc, out, err = cli(capsys, *base, "--request-rate", "5", "--set", "workload.retime_trace=true",
                       "--set", "workload.arrival=poisson", "--out", tmp_path / "o2")
    assert rc == 0 and "RE-TIMED" in out and "5 req/s" in out, err


# ------------------------------------------------------------------ --out
def test_an_out_name_too_long_for_the_file_system_is_refused(tmp_path, capsys):
    assert_error(capsys, "--out", "run", Q, *SMALL, "--out", tmp_path / ("x" * 300))


# ------------------------------------------------------------------ sweeps and plans
@pytest.mark.parametrize("grid,field", [("engine.block_size=16,abc", "engine.block_size"),
                                        ("engine.allocator=paged,orca_maxx", "engine.allocator"),
                                        ("gpu=a100-40gb,h300", "gpu")])
def test_one_bad_grid_point_is_refused_before_anything_runs(tmp_path, capsys, grid, field):
    err = assert_error(capsys, "--grid", "sweep", Q, *SMALL, "--quiet", "--grid", grid, "--out", tmp_path / "o")
    assert f"at {grid.split('=')[0]}=" in err and field in err
    assert not (tmp_path / "o").exists()


def test_one_bad_plan_candidate_is_refused_before_anything_runs(tmp_path, capsys):
    err = assert_error(capsys, "--candidates", "plan", Q, "--quiet", "--requests", "20",
                       "--candidates", "gpu=a100-40gb,h300", "--out", tmp_path / "o")
    assert "h300" in err and not (tmp_path / "o").exists()


def test_a_sweep_over_an_infinite_rate_reports(tmp_path, capsys):
    """``inf`` (every request at t=0) as a grid value ran, then the report failed sorting 'inf' among numbers."""
    rc, out, err = cli(capsys, "sweep", Q, "--set", "workload.num_requests=10", "--quiet",
                       "--grid", "workload.rate_req_s=1,inf", "--out", tmp_path / "o")
    assert rc == 0, err
    assert len(pd.read_csv(tmp_path / "o" / "sweep.csv")) == 2 and (tmp_path / "o" / "report.html").exists()


@pytest.mark.parametrize("rows,col", [("16,abc,1,\n", "throughput_req_s"), ("16,999,-5,\n32,1,1,\n", "normalized_latency_s")])
def test_a_sweep_does_not_resume_from_rows_kvsim_did_not_write(tmp_path, capsys, rows, col):
    out = tmp_path / "o"
    out.mkdir()
    (out / "sweep.csv").write_text("engine.block_size,throughput_req_s,normalized_latency_s,error\n" + rows)
    err = assert_error(capsys, "--out", "sweep", Q, *SMALL, "--quiet", "--grid", "engine.block_size=16,32",
                       "--out", out)
    assert col in err and "sweep.csv" in err


def test_plan_requests_beyond_the_limit_name_the_flag(tmp_path, capsys):
    assert_error(capsys, "--requests", "plan", Q, "--quiet", "--requests", "100000000", "--out", tmp_path / "o")


@pytest.mark.parametrize("args,field", [(["--slo", "ttft_p99_s=true"], "--slo"),
                                        (["--slo", "ttft_p99_s=1", "--slo", "ttft_p99_s=2"], "--slo"),
                                        (["--goodput", "ttft:1", "ttft:99999"], "--goodput")])
def test_slo_and_goodput_values_are_read_as_given(tmp_path, capsys, args, field):
    """``true`` is not 1.0, and a metric given twice is not silently the last one."""
    assert_error(capsys, field, "plan", Q, "--quiet", "--requests", "20", *args, "--out", tmp_path / "o")


@pytest.mark.parametrize("sizes", ["16,,32", "16,", "100000000", "16,16", "abc", "0"])
def test_calibrate_block_sizes_are_read_as_the_other_commands_read_them(capsys, sizes):
    """Empty items were dropped, 10^8 accepted and a size given twice measured twice."""
    assert_error(capsys, "--block-sizes", "calibrate", "--model", "opt-13b", "--block-sizes", sizes, "--estimate")


@pytest.mark.parametrize("sets,field", [(["engine.allocator=orca_max", "engine.enable_prefix_caching=true"],
                                         "engine.enable_prefix_caching"),
                                        (["engine.placement=buddy"], "engine.placement")])
def test_a_setting_the_allocator_would_ignore_is_refused(tmp_path, capsys, sets, field):
    """Prefix caching on a contiguous allocator, or a placement for the paged one, silently did nothing."""
    assert_error(capsys, field, "run", Q, *SMALL, *sum((["--set", s] for s in sets), []), "--out", tmp_path / "o")
    rc, out, err = cli(capsys, "run", Q, *SMALL, "--set", "engine.allocator=orca_max", "--set",
                       "engine.placement=buddy", "--out", tmp_path / "o2")
    assert rc == 0, err


def test_version_takes_nothing_else(capsys):
    assert_error(capsys, "--version", "--version", "run", Q)


def test_an_out_that_cannot_be_created_is_refused_before_the_work(capsys):
    """``paper --out /proc/x`` ran every experiment (~80 s) before failing to create the folder."""
    assert_error(capsys, "--out", "paper", "--quick", "--quiet", "--out", "/proc/kvsim_cannot_be_here")


def test_goodput_miss_share_is_a_share(tmp_path, capsys):
    """A share of 1 or more can never be missed: the rate search doubled without end."""
    assert_error(capsys, "--slo", "plan", Q, "--quiet", "--requests", "20", "--slo", "goodput_miss_frac=2",
                 "--goodput", "ttft:1", "--out", tmp_path / "o")


def test_an_infinite_rate_on_a_self_timed_trace_is_refused(tmp_path, capsys):
    assert_error(capsys, "workload.rate_req_s", "run", Q, "--set", "workload.dataset=trace",
                 "--set", f"workload.path={TRACE}", "--set", "workload.rate_req_s=inf", "--set", "model=llama-3-8b",
                 "--out", tmp_path / "o")


def test_a_profile_the_cost_model_would_not_read_is_refused(tmp_path, capsys):
    """``cost.profile`` with the roofline model priced with the roofline, silently."""
    assert_error(capsys, "cost.profile", "run", Q, *SMALL, "--set",
                 "cost.profile=calibrate/profiles/H200/opt-13b.json", "--out", tmp_path / "o")
