"""Fuzzing the input contract (issue #12) with hypothesis, over scenario dicts and CLI arguments.

Every outcome is either a correct run (exit 0, valid strict JSON, finite numbers) or bad input
(``KvsimError`` / exit 2 with one stderr line, no traceback) — nothing else. Kept small and fast:
a dozen requests on the roofline model, a modest number of examples.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kvsim
from kvsim.cli import main
from kvsim.config import Scenario
from kvsim.errors import KvsimError
from kvsim.outdir import finite_json
from kvsim.output import summary_document

ROOT = Path(__file__).resolve().parents[1]
Q = ROOT / "scenarios" / "examples" / "quickstart.yaml"
BASE = {"name": "fuzz", "model": "opt-13b", "gpu": "a100-40gb",
        "engine": {"block_size": 16, "max_num_seqs": 64, "swap_space_gib": 4},
        "workload": {"dataset": "sharegpt_like", "arrival": "poisson", "rate_req_s": 2.0, "num_requests": 12},
        "seed": 0}


def _paths(cls, prefix: str = "") -> list[str]:
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        typ = hints[f.name]
        if dataclasses.is_dataclass(typ):
            out += _paths(typ, f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


KEYS = _paths(Scenario) + ["engine.nope", "workload.rate", "bogus"]
# keys whose large valid values make a run long (covered by the load-only check below)
SIZE_KEYS = {"workload.num_requests", "workload.duration_s", "engine.num_gpu_blocks", "engine.num_cpu_blocks",
             "workload.n", "workload.beam_width", "max_time_s", "workload.rate_req_s", "engine.swap_space_gib",
             "cost.roofline.step_overhead_s", "cost.roofline.per_seq_overhead_s",
             "cost.roofline.layer_launch_floor_s", "cost.roofline.swap_transfer_latency_s",
             "cost.roofline.copy_launch_s", "cost.roofline.allreduce_latency_s"}

VALUES = st.one_of(
    st.sampled_from([float("nan"), float("inf"), float("-inf"), -1, 0, 1, 2, 3, 16, 0.5, 1e-300, 1e300, 2 ** 40,
                     2 ** 62, -2 ** 63, "", "abc", "$\\foo$", "../x", "/abs", None, True, False, [], [1, 2],
                     [0, 5], {}, {"a": 1}, "paged", "chunked", "swap", "gamma", "burst", "trace", "uniform"]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-2 ** 70, max_value=2 ** 70),
    st.text(max_size=6),
)


CHOICES = ["paged", "orca_max", "orca_pow2", "orca_oracle", "first_fit", "buddy", "vllm", "chunked", "static",
           "auto", "swap", "recompute", "sharegpt_like", "alpaca_like", "sharegpt", "alpaca", "fixed", "uniform",
           "poisson", "gamma", "burst",
           "fp16", "bf16", "fp32", "roofline", "opt-13b", "opt-125m", "a100-80gb", "h100-80gb"]


def _field(key: str):
    cls = Scenario
    parts = key.split(".")
    for k in parts[:-1]:
        cls = typing.get_type_hints(cls)[k]
    for f in dataclasses.fields(cls):
        if f.name == parts[-1]:
            return f, typing.get_type_hints(cls)[f.name]
    return None, None


def plausible(key: str):
    """Values of the right type near the field's default: most of them valid, so runs happen."""
    f, typ = _field(key)
    if f is None:
        return VALUES
    args = [a for a in typing.get_args(typ) if a is not type(None)] or [typ]
    t = args[0]
    if t is bool:
        return st.booleans()
    if t is int:
        return st.integers(min_value=0, max_value=64)
    if t is float:
        return st.floats(min_value=0.0, max_value=2.0)
    if t is str:
        return st.sampled_from(CHOICES)
    if typing.get_origin(t) is list:
        return st.lists(st.integers(min_value=0, max_value=600), min_size=1, max_size=3)
    return VALUES


CHANGE = st.sampled_from(KEYS).flatmap(lambda k: st.tuples(st.just(k), st.one_of(plausible(k), VALUES)))


def _set(data: dict, key: str, value) -> None:
    node = data
    parts = key.split(".")
    for k in parts[:-1]:
        nxt = node.get(k)
        if not isinstance(nxt, dict):
            nxt = node[k] = {}
        node = nxt
    node[parts[-1]] = value


def _finite(obj) -> bool:
    if isinstance(obj, dict):
        return all(_finite(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_finite(v) for v in obj)
    return not (isinstance(obj, float) and not math.isfinite(obj))


def _small(sc) -> bool:
    w = sc.workload
    return ((w.num_requests or 0) <= 50 and w.duration_s is None and w.n * w.beam_width <= 8
            and sc.engine.num_gpu_blocks in (None,) and (sc.engine.num_cpu_blocks or 0) <= 10_000
            and sc.engine.swap_space_gib <= 64 and w.dataset != "trace")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(CHANGE, min_size=1, max_size=3))
def test_fuzz_scenario_dicts(changes):
    data = copy.deepcopy(BASE)
    for k, v in changes:
        _set(data, k, v)
    try:
        sc = kvsim.load_scenario(data)
    except KvsimError as e:
        assert e.field is not None and "\n" not in str(e)
        return
    if not _small(sc):
        return                               # valid but large: loading it was the check
    try:
        res = kvsim.simulate(sc)
    except KvsimError as e:
        assert "\n" not in str(e)
        return
    doc = json.loads(finite_json(summary_document(res)), parse_constant=lambda c: pytest.fail(c))
    assert _finite(doc) and _finite(res.summary)
    s = res.summary
    assert s["requests_finished"] + s["requests_rejected"] + s["requests_unfinished"] == s["requests_total"]


VALUE_TEXT = st.one_of(st.text(alphabet="0123456789.-+e[],:nainfNAIF \"'{}", max_size=10), st.text(max_size=5))
CLI_KEYS = [k for k in KEYS if k not in SIZE_KEYS]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(CLI_KEYS), VALUE_TEXT), min_size=1, max_size=2))
def test_fuzz_cli_set_arguments(tmp_path_factory, changes):
    out = tmp_path_factory.mktemp("fuzz") / "o"
    args = ["run", str(Q), "--set", "workload.num_requests=12", "--out", str(out)]
    for k, v in changes:
        args += ["--set", f"{k}={v}"]
    import contextlib
    import io
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(args)
        except SystemExit as e:
            rc = e.code
    text = err.getvalue()
    assert rc in (0, 2), (rc, text)
    if rc == 2:
        assert text.count("\n") == 1 and text.startswith("error: ") and "Traceback" not in text, text
        assert not out.exists()
    else:
        doc = json.loads((out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(c))
        assert _finite(doc)
