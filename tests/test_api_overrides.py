"""The Python API takes overrides as a dict, a list of "field=value" or one such string, everywhere."""
from __future__ import annotations

import pytest

import kvsim
from kvsim.plan import plan

Q = "scenarios/examples/quickstart.yaml"


@pytest.mark.parametrize("ovr", [{"workload.num_requests": 30, "engine.max_num_seqs": 2},
                                 ["workload.num_requests=30", "engine.max_num_seqs=2"]])
def test_sweep_takes_dict_or_list_overrides(ovr):
    df = kvsim.sweep(Q, {"workload.rate_req_s": [1, 2]}, ovr, jobs=1)
    assert (df["max_batched_requests"] <= 2).all()
    assert list(df["requests_total"]) == [30, 30]


def test_sweep_takes_one_string_and_seeds():
    df = kvsim.sweep(Q, {"workload.rate_req_s": [1]}, "workload.num_requests=30", jobs=1, seeds=2)
    assert df["runs"].tolist() == [2] and "throughput_req_s_ci_lo" in df


def test_plan_takes_dict_overrides():
    res = plan(Q, {"normalized_latency_s": 0.1}, overrides={"workload.num_requests": 50}, requests=50,
               min_duration_s=None, rel_tol=0.2, jobs=1)
    assert res.recommended is not None and res.recommended["max_rate_req_s"] > 0


def test_bad_dict_override_names_the_field():
    with pytest.raises(kvsim.KvsimError) as e:
        kvsim.sweep(Q, {"workload.rate_req_s": [1]}, {"engine.blok_size": 32}, jobs=1)
    assert e.value.field == "engine.blok_size"
