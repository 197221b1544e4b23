"""The KV-manager seam: every allocator implements one protocol, swaps are priced per block, and a
third allocator written against the protocol alone runs through the simulator, fast-forward and records."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from kvsim.build import setup_run
from kvsim.config import load_scenario
from kvsim.core.kv import KVManager
from kvsim.core.plan import StepPlan
from kvsim.core.request import RequestSpec
from kvsim.core.sequence import SequenceGroup
from kvsim.sim import SimEngine
from tests._third_kv import PrivateBlocksKV
from tests.profile_factory import synthetic_profile

ALLOCATORS = ("paged", "orca_oracle", "orca_max", "orca_pow2")


def scenario(allocator="paged", cost=None, engine=None, workload=None):
    e = {"allocator": allocator, "block_size": 16, "gpu_memory_utilization": 0.7}
    e.update(engine or {})
    w = {"dataset": "sharegpt", "rate_req_s": 4.0, "num_requests": 60}
    w.update(workload or {})
    d = {"name": "seam", "model": "opt-13b", "gpu": "a100-40gb", "engine": e, "workload": w, "seed": 0}
    if cost:
        d["cost"] = cost
    return load_scenario(d)


@pytest.mark.parametrize("allocator", ALLOCATORS)
def test_allocators_implement_the_protocol(allocator):
    assert isinstance(setup_run(scenario(allocator)).make_kv(), KVManager)
    assert isinstance(PrivateBlocksKV(8, 16, 8), KVManager)


@pytest.fixture
def calibrated(tmp_path):
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(synthetic_profile()))
    return {"model": "calibrated", "profile": str(path)}


@pytest.mark.parametrize("cost_model", ["roofline", "calibrated"])
def test_same_tokens_swapped_cost_the_same_under_paged_and_contiguous(cost_model, calibrated):
    """A 2,000-token sequence is 125 blocks of 16 whichever allocator holds it, and is priced so."""
    cost = calibrated if cost_model == "calibrated" else None
    prices = {}
    for allocator in ALLOCATORS:
        eng = SimEngine(setup_run(scenario(allocator, cost)))
        g = SequenceGroup(RequestSpec(0, 0.0, 2000, 8), first_seq_id=0)
        eng.kv.admit(g)
        out = eng.kv.swap_out(g)
        assert len(out) == 125 and eng.kv.blocks_in_use() == 0
        back = eng.kv.swap_in(g)
        assert len(back) == 125 and sorted(c for _, c in out) == sorted(c for c, _ in back)
        prices[allocator] = (eng._swap_time(StepPlan(swap_out=out)), eng._swap_time(StepPlan(swap_in=back)))
        one = eng._swap_time(StepPlan(swap_out=out[:1]))
    assert len(set(prices.values())) == 1, prices
    assert prices["paged"][0] > 20 * one        # 125 blocks, not one
    if cost_model == "calibrated":              # the synthetic profile: 16 blocks 12 ms, 256 blocks 190 ms
        assert prices["orca_oracle"][0] == pytest.approx(0.012 + (125 - 16) / 240 * 0.178)


def _run(sc, ff):
    setup = setup_run(sc)
    b = setup.budget
    setup.make_kv = lambda: PrivateBlocksKV(b.num_gpu_blocks, sc.engine.block_size, b.num_cpu_blocks)
    eng = SimEngine(setup, fast_forward=ff)
    res = eng.run()
    eng.kv.check_empty()
    return res, eng


@pytest.mark.parametrize("engine,workload", [
    ({}, {}),
    ({"scheduler": "chunked", "max_num_batched_tokens": 512}, {"rate_req_s": 30.0}),
    ({"preemption_mode": "swap", "num_gpu_blocks": 300, "num_cpu_blocks": 2000}, {"n": 2, "rate_req_s": 8.0}),
    ({"scheduler": "static", "num_gpu_blocks": 600}, {}),
])
def test_a_third_allocator_needs_no_change_elsewhere(engine, workload):
    sc = scenario(engine=engine, workload=workload)
    stepped, _ = _run(sc, False)
    fast, eng = _run(sc, True)
    assert stepped.summary["requests_finished"] == stepped.summary["requests_total"] == 60
    if sc.engine.scheduler != "static":
        assert eng.ff_steps > 0
    pd.testing.assert_frame_equal(stepped.iterations, fast.iterations)
    pd.testing.assert_frame_equal(stepped.requests, fast.requests)
    assert json.dumps(stepped.summary, sort_keys=True) == json.dumps(fast.summary, sort_keys=True)
    its = stepped.iterations
    mem = its.mem_used + its.mem_internal + its.mem_reserved + its.mem_free
    assert (mem == eng.kv.capacity_slots).all()
    if sc.engine.preemption_mode == "swap":
        assert its.swap_out_blocks.sum() > 0 and (its.swap_s > 0).any()
