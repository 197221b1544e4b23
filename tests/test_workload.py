"""Tests for kvsim.workload: lengths, arrivals, readers, config and the builder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kvsim.configtools import from_dict
from kvsim.errors import KvsimError
from kvsim.workload import (
    ALPACA,
    SHAREGPT,
    WorkloadConfig,
    build_workload,
    cap_lengths,
    gamma_arrivals,
    load_sharegpt,
    poisson_arrivals,
    read_trace,
    sample_synthetic,
)

DATA = Path(__file__).parent / "data"
SHAREGPT_JSON = str(DATA / "sharegpt_small.json")
TRACE_CSV = str(DATA / "trace_small.csv")
TRACE_JSONL = str(DATA / "trace_small.jsonl")


def rng(seed=0):
    return np.random.default_rng(seed)


def check_invariants(reqs, max_len):
    for i, r in enumerate(reqs):
        assert r.request_id == i
        assert r.prompt_len >= 1 and r.output_len >= 1
        assert r.prompt_len + r.output_len <= max_len
        assert 0 <= r.prefix_len <= r.prompt_len - 1
        assert (r.prefix_id == -1) == (r.prefix_len == 0)
        assert r.beam_width == 1 or r.n == 1
        assert type(r.prompt_len) is int and type(r.arrival_s) is float
    arr = [r.arrival_s for r in reqs]
    assert arr == sorted(arr)


# ---------------------------------------------------------------- lengths

@pytest.mark.parametrize("dist", [SHAREGPT, ALPACA], ids=lambda d: d.name)
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_synthetic_means_match_paper(dist, seed):
    p, o = sample_synthetic(rng(seed), dist.name, 10_000)
    p, o = cap_lengths(p, o, 2048)
    assert abs(p.mean() / dist.paper_mean_prompt_tokens - 1) < 0.03, p.mean()
    assert abs(o.mean() / dist.paper_mean_output_tokens - 1) < 0.03, o.mean()
    assert p.min() >= 1 and o.min() >= 1 and (p + o).max() <= 2048


def test_sharegpt_heavy_tail_alpaca_short():
    p, o = cap_lengths(*sample_synthetic(rng(7), "sharegpt", 50_000), 2048)
    assert o.std() / o.mean() > 0.9 and o.max() > 1500
    ap, ao = cap_lengths(*sample_synthetic(rng(7), "alpaca", 50_000), 2048)
    assert ao.std() / ao.mean() < o.std() / o.mean()
    assert ap.mean() * 5 < p.mean() and ao.mean() * 4 < o.mean()


def test_cap_rule():
    p, o = cap_lengths(np.array([5000, 100, 10, 1]), np.array([10, 5000, 10, 1]), 2048)
    assert p.tolist() == [2047, 100, 10, 1]
    assert o.tolist() == [1, 1948, 10, 1]
    with pytest.raises(KvsimError, match="max_len_tokens"):
        cap_lengths(p, o, 1)


# ---------------------------------------------------------------- arrivals

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_poisson_rate_and_cv(seed):
    t = poisson_arrivals(rng(seed), 4.0, n=20_000)
    assert len(t) == 20_000 and t[0] > 0 and np.all(np.diff(t) >= 0) and t.dtype == np.float64
    gaps = np.diff(np.concatenate([[0.0], t]))
    assert abs(gaps.mean() * 4.0 - 1) < 0.03
    assert abs(gaps.std() / gaps.mean() - 1) < 0.03


@pytest.mark.parametrize("cv", [0.5, 1.0, 2.0, 3.0])
def test_gamma_rate_and_cv(cv):
    t = gamma_arrivals(rng(11), 10.0, cv, n=20_000)
    gaps = np.diff(np.concatenate([[0.0], t]))
    assert abs(gaps.mean() * 10.0 - 1) < 0.05
    assert abs(gaps.std() / gaps.mean() / cv - 1) < 0.07


def test_arrivals_duration_and_both():
    t = poisson_arrivals(rng(0), 50.0, duration=100.0)
    assert t.max() <= 100.0 and abs(len(t) / 5000 - 1) < 0.05
    assert len(poisson_arrivals(rng(0), 50.0, n=10, duration=100.0)) == 10
    t = poisson_arrivals(rng(0), 1.0, n=10_000, duration=20.0)
    assert t.max() <= 20.0 and len(t) < 100
    # tiny first chunk must be extended: rate*duration small but long tail
    t = gamma_arrivals(rng(3), 0.5, 4.0, duration=1000.0)
    assert t.max() <= 1000.0 and abs(len(t) / 500 - 1) < 0.5
    with pytest.raises(KvsimError, match="rate_req_s"):
        poisson_arrivals(rng(0), -1.0, n=5)
    with pytest.raises(KvsimError, match="workload.cv"):
        gamma_arrivals(rng(0), 1.0, 0.0, n=5)


# ---------------------------------------------------------------- builder

def test_build_deterministic_and_capped():
    # its speed is measured by benchmarks/sim/workload_speed.py, not asserted here
    cfg = WorkloadConfig(dataset="sharegpt", rate_req_s=10.0, num_requests=10_000)
    a = build_workload(cfg, max_len_tokens=2048, rng=rng(42))
    b = build_workload(cfg, max_len_tokens=2048, rng=rng(42))
    c = build_workload(cfg, max_len_tokens=2048, rng=rng(43))
    assert a == b and a != c and len(a) == 10_000
    check_invariants(a, 2048)
    small = build_workload(WorkloadConfig(dataset="sharegpt", max_len_tokens=512), max_len_tokens=2048, rng=rng(1))
    check_invariants(small, 512)
    assert max(r.total_len for r in small) == 512


def test_build_prefix_beam_burst_gamma():
    cfg = WorkloadConfig(dataset="alpaca", arrival="burst", num_requests=300, prefix_len=80, num_prefixes=3,
                         beam_width=4)
    reqs = build_workload(cfg, max_len_tokens=2048, rng=rng(0))
    check_invariants(reqs, 2048)
    assert all(r.arrival_s == 0.0 and r.prefix_len == 80 and r.prompt_len > 80 and r.num_seqs == 4 for r in reqs)
    assert {r.prefix_id for r in reqs} == {0, 1, 2}
    reqs = build_workload(WorkloadConfig(dataset="fixed", prompt_len=100, output_len=5000, prefix_len=30,
                                         arrival="gamma", cv=2.0, rate_req_s=3.0, n=2),
                          max_len_tokens=1024, rng=rng(0))
    check_invariants(reqs, 1024)
    assert {(r.prompt_len, r.output_len, r.n) for r in reqs} == {(130, 894, 2)}
    with pytest.raises(KvsimError, match="workload.prefix_len"):
        build_workload(WorkloadConfig(prefix_len=2047), max_len_tokens=2048, rng=rng(0))


def test_build_uniform_and_duration():
    cfg = WorkloadConfig(dataset="uniform", prompt_len_range=[10, 20], output_len_range=[1, 3],
                         num_requests=None, duration_s=60.0, rate_req_s=5.0)
    reqs = build_workload(cfg, max_len_tokens=2048, rng=rng(5))
    check_invariants(reqs, 2048)
    assert 200 < len(reqs) < 400 and reqs[-1].arrival_s <= 60.0
    assert {r.prompt_len for r in reqs} == set(range(10, 21)) and {r.output_len for r in reqs} == {1, 2, 3}


# ---------------------------------------------------------------- sharegpt json

def test_sharegpt_json_reader():
    p, o = load_sharegpt(SHAREGPT_JSON)
    assert len(p) == 16  # 22 conversations: 6 skipped or filtered
    assert p.tolist()[:3] == [10, 50, 200] and o.tolist()[:3] == [20, 100, 300]
    assert (33, 44) in zip(p.tolist(), o.tolist())  # system turn first: first human turn + next gpt turn
    assert p.min() >= 4 and o.min() >= 4 and p.max() <= 1024 and (p + o).max() <= 2048
    p2, _ = load_sharegpt(SHAREGPT_JSON, tokens_per_char=0.5)
    assert p2.tolist()[0] == 20
    cfg = WorkloadConfig(dataset="sharegpt_json", path=SHAREGPT_JSON, num_requests=10, max_len_tokens=1000)
    a = build_workload(cfg, max_len_tokens=2048, rng=rng(0))
    check_invariants(a, 1000)
    assert len({(r.prompt_len, r.output_len) for r in a}) == 10  # without replacement
    assert a == build_workload(cfg, max_len_tokens=2048, rng=rng(0))
    many = build_workload(WorkloadConfig(dataset="sharegpt_json", path=SHAREGPT_JSON, num_requests=100),
                          max_len_tokens=2048, rng=rng(0))
    assert len(many) == 100 and {(r.prompt_len, r.output_len) for r in many} <= set(zip(p.tolist(), o.tolist()))


@pytest.mark.parametrize("content,match", [
    (None, "file not found"),
    ("{not json", "not valid JSON"),
    ('{"a": 1}', "top level is a dict"),
    ('[{"id": 1}]', "entry 0 has no 'conversations'"),
    ('[{"conversations": [{"from": "human"}]}]', "entry 0 turn 0"),
    ('[{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}]', "no conversation left"),
])
def test_sharegpt_json_errors(tmp_path, content, match):
    f = tmp_path / "sg.json"
    if content is not None:
        f.write_text(content)
    with pytest.raises(KvsimError, match=match) as e:
        load_sharegpt(str(f))
    assert e.value.field == "workload.path" and "\n" not in str(e.value)


# ---------------------------------------------------------------- trace

def test_trace_csv_happy_path():
    t = read_trace(TRACE_CSV)
    assert t.arrival_s.tolist() == [0.0, 0.5, 0.5, 1.25]
    assert t.prompt_len.tolist() == [50, 100, 60, 300]  # stable sort: 0.5 ties keep file order
    assert t.n.tolist() == [2, 1, 1, 1] and t.beam_width.tolist() == [1, 1, 1, 4]
    assert t.prefix_id.tolist() == [0, -1, 1, -1] and t.prefix_len.tolist() == [8, 0, 16, 0]
    reqs = build_workload(WorkloadConfig(dataset="trace", arrival="trace", path=TRACE_CSV),
                          max_len_tokens=2048, rng=rng(0))
    check_invariants(reqs, 2048)
    assert [(r.arrival_s, r.prompt_len, r.output_len, r.num_seqs) for r in reqs] == [
        (0.0, 50, 10, 2), (0.5, 100, 20, 1), (0.5, 60, 6, 1), (1.25, 300, 200, 4)]


def test_trace_jsonl_capping_and_retiming():
    t = read_trace(TRACE_JSONL)
    assert t.arrival_s.tolist() == [0.1, 1.0, 2.0] and t.n is None and t.prefix_len is None
    reqs = build_workload(WorkloadConfig(dataset="trace", arrival="trace", path=TRACE_JSONL, n=3),
                          max_len_tokens=2048, rng=rng(0))
    assert [(r.prompt_len, r.output_len, r.n) for r in reqs] == [(20, 7, 3), (2047, 1, 3), (10, 5, 3)]
    re = build_workload(WorkloadConfig(dataset="trace", arrival="poisson", retime_trace=True, rate_req_s=2.0, num_requests=7,
                                       path=TRACE_JSONL), max_len_tokens=4096, rng=rng(0))
    check_invariants(re, 4096)
    assert [r.prompt_len for r in re] == [20, 3000, 10, 20, 3000, 10, 20]
    assert re[0].arrival_s > 0 and re[1].arrival_s != 1.0
    cut = build_workload(WorkloadConfig(dataset="trace", arrival="trace", path=TRACE_CSV, num_requests=None,
                                        duration_s=0.6), max_len_tokens=2048, rng=rng(0))
    assert len(cut) == 3


HEADER = "arrival_s,prompt_len,output_len,prefix_id,prefix_len\n"


@pytest.mark.parametrize("rows,line,col,match", [
    ("arrival_s,prompt_len\n0,5\n", 2, "output_len", "missing"),
    (HEADER + "0,10,5,-1,0\n0.5,abc,5,-1,0\n", 3, "prompt_len", "not a number"),
    (HEADER + "0,-3,5,-1,0\n", 2, "prompt_len", "allowed: integer >= 1"),
    (HEADER + "0,0,5,-1,0\n", 2, "prompt_len", "allowed: integer >= 1"),
    (HEADER + "0,10,0,-1,0\n", 2, "output_len", "allowed: integer >= 1"),
    (HEADER + "0,10,-2,-1,0\n", 2, "output_len", "allowed: integer >= 1"),
    (HEADER + "-1,10,5,-1,0\n", 2, "arrival_s", "negative"),
    (HEADER + "0,10,5,0,20\n", 2, "prefix_len", "not less than prompt_len"),
    (HEADER + "0,10,5,0,-1\n", 2, "prefix_len", "negative"),
    (HEADER + "0,10,5,-1,4\n", 2, "prefix_id", "prefix_len is 4"),
    (HEADER + "0,10.5,5,-1,0\n", 2, "prompt_len", "not an integer"),
    ("arrival_s,prompt_len,output_len,n,beam_width\n0,10,5,2,4\n", 2, "n", "beam search"),
])
def test_trace_csv_errors(tmp_path, rows, line, col, match):
    f = tmp_path / "bad.csv"
    f.write_text(rows)
    with pytest.raises(KvsimError, match=match) as e:
        read_trace(str(f))
    msg = str(e.value)
    assert e.value.field == "workload.path" and "\n" not in msg
    assert f"bad.csv:{line}:" in msg and f"column '{col}'" in msg


def test_trace_jsonl_and_file_errors(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"arrival_s": 0, "prompt_len": 5, "output_len": 1}\n\n{"arrival_s": 1, "prompt_len": 5}\n')
    with pytest.raises(KvsimError, match=r"bad.jsonl:3: column 'output_len': missing"):
        read_trace(str(f))
    f.write_text('{"arrival_s": 0, "prompt_len": "x", "output_len": 1}\n')
    with pytest.raises(KvsimError, match=r"bad.jsonl:1: column 'prompt_len': 'x' is not a number"):
        read_trace(str(f))
    f.write_text('{"arrival_s": 0,\n')
    with pytest.raises(KvsimError, match=r"bad.jsonl:1: not valid JSON"):
        read_trace(str(f))
    with pytest.raises(KvsimError, match="cannot read trace"):
        read_trace(str(tmp_path / "missing.csv"))
    with pytest.raises(KvsimError, match="unknown trace extension"):
        read_trace(str(tmp_path / "x.txt"))
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(KvsimError, match="empty file"):
        read_trace(str(tmp_path / "e.csv"))
    (tmp_path / "h.csv").write_text("arrival_s,prompt_len,output_len\n")
    with pytest.raises(KvsimError, match="no requests"):
        read_trace(str(tmp_path / "h.csv"))
    (tmp_path / "b.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(KvsimError, match="cannot read trace"):
        read_trace(str(tmp_path / "b.csv"))
    # A trace prefix that no longer fits after capping to a small max length
    (tmp_path / "p.csv").write_text(HEADER + "0,100,5,0,90\n")
    with pytest.raises(KvsimError, match="prefix_len 90"):
        build_workload(WorkloadConfig(dataset="trace", arrival="trace", path=str(tmp_path / "p.csv")),
                       max_len_tokens=64, rng=rng(0))


# ---------------------------------------------------------------- config

def test_config_defaults_valid_and_help():
    import dataclasses
    WorkloadConfig().validate("workload")
    for f in dataclasses.fields(WorkloadConfig):
        assert f.metadata.get("help"), f.name
    cfg = from_dict(WorkloadConfig, {"dataset": "alpaca", "rate_req_s": 2, "prompt_len_range": [1, 2]}, "workload")
    assert cfg.rate_req_s == 2.0 and isinstance(cfg.rate_req_s, float)


@pytest.mark.parametrize("data,field", [
    ({"rate": 1.0}, "workload.rate"),
    ({"rate_req_s": -1.0}, "workload.rate_req_s"),
    ({"rate_req_s": 0}, "workload.rate_req_s"),
    ({"arrival": "gamma", "rate_req_s": None}, "workload.rate_req_s"),
    ({"beam_width": 4, "n": 2}, "workload.n"),
    ({"beam_width": 0}, "workload.beam_width"),
    ({"n": 0}, "workload.n"),
    ({"dataset": "lmsys"}, "workload.dataset"),
    ({"arrival": "uniform"}, "workload.arrival"),
    ({"arrival": "trace"}, "workload.arrival"),
    ({"dataset": "trace"}, "workload.path"),
    ({"dataset": "sharegpt_json"}, "workload.path"),
    ({"dataset": "fixed", "prompt_len": -5}, "workload.prompt_len"),
    ({"dataset": "fixed", "output_len": 0}, "workload.output_len"),
    ({"dataset": "uniform", "output_len_range": [10, 5]}, "workload.output_len_range"),
    ({"dataset": "uniform", "prompt_len_range": [0, 5]}, "workload.prompt_len_range"),
    ({"dataset": "uniform", "prompt_len_range": [1, 2, 3]}, "workload.prompt_len_range"),
    ({"cv": 0.0, "arrival": "gamma"}, "workload.cv"),
    ({"num_requests": 0}, "workload.num_requests"),
    ({"num_requests": None}, "workload.num_requests"),
    ({"num_requests": None, "duration_s": 10.0, "arrival": "burst"}, "workload.num_requests"),
    ({"duration_s": -1.0}, "workload.duration_s"),
    ({"prefix_len": -1}, "workload.prefix_len"),
    ({"num_prefixes": 0}, "workload.num_prefixes"),
    ({"max_len_tokens": 1}, "workload.max_len_tokens"),
    ({"prefix_len": 100, "max_len_tokens": 101}, "workload.prefix_len"),
    ({"dataset": "trace", "path": "t.csv", "prefix_len": 5}, "workload.prefix_len"),
    ({"tokens_per_char": 0}, "workload.tokens_per_char"),
    ({"num_requests": 1.5}, "workload.num_requests"),
])
def test_config_validation_errors(data, field):
    with pytest.raises(KvsimError) as e:
        from_dict(WorkloadConfig, data, "workload")
    assert e.value.field == field, str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("fields, unused", [
    ({"cv": 2.0}, ["cv"]),                                                       # poisson by default
    ({"cv": 2.0, "arrival": "gamma"}, []),
    ({"burstiness": 0.5}, []),                                                   # sets cv and arrival gamma
    ({"prompt_len": 100}, ["prompt_len"]),                                       # sharegpt_like by default
    ({"dataset": "fixed", "prompt_len": 100, "output_len": 5}, []),
    ({"dataset": "fixed", "prompt_len_range": [1, 9], "tokenizer": "x"}, ["prompt_len_range", "tokenizer"]),
    ({"dataset": "uniform", "output_len_range": [1, 9]}, []),
    ({"path": "a.json"}, ["path"]),
    ({"num_prefixes": 4}, ["num_prefixes"]),
    ({"num_prefixes": 4, "prefix_len": 32}, []),
    ({"dataset": "trace", "path": "t.csv", "rate_req_s": 3.0}, ["rate_req_s"]),
    ({"dataset": "trace", "path": "t.csv", "rate_req_s": 3.0, "retime_trace": True, "arrival": "poisson"}, []),
])
def test_fields_that_have_no_effect_are_named(fields, unused):
    """A field the dataset and arrival process never read is named (the CLI prints a note), never silently
    dropped; fields that are read are not."""
    from kvsim.workload.config import WorkloadConfig, unused_fields
    cfg = from_dict(WorkloadConfig, fields)
    cfg.validate()
    assert [name for name, _ in unused_fields(cfg)] == unused


def test_cli_notes_a_field_with_no_effect(tmp_path):
    import subprocess
    import sys
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "kvsim.cli", "run", str(root / "scenarios" / "examples" / "quickstart.yaml"),
                        "--set", "workload.cv=2", "--set", "workload.num_requests=20", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, cwd=root)
    assert r.returncode == 0
    assert "note: workload.cv has no effect here: only arrival gamma uses it (arrival is 'poisson')" in r.stderr


def test_trace_read_again_is_kept_by_contents_and_copied(tmp_path):
    """A run reads its trace twice (the header counts its rows): the second read is the first's parse when the
    file's bytes are the same, as fresh arrays; a file rewritten with other rows of the same size is parsed anew."""
    from kvsim.workload.trace import read_trace
    p = tmp_path / "t.csv"
    p.write_text("arrival_s,prompt_len,output_len\n0.5,10,20\n0.1,30,40\n")
    a = read_trace(str(p))
    a.prompt_len[0] = 999                     # a caller's change stays its own
    b = read_trace(str(p))
    assert b.prompt_len.tolist() == [30, 10] and b.arrival_s.tolist() == [0.1, 0.5]
    p.write_text("arrival_s,prompt_len,output_len\n0.5,10,20\n0.1,31,40\n")     # same size, other contents
    assert read_trace(str(p)).prompt_len.tolist() == [31, 10]
