"""Fast-forwarding decode runs of sliding-window (KV-group) models must not change any result.

Mistral-7B-SWA (every layer windowed) and Gemma-2-9B (window and full layers
alternate) under policies v0 (vllm, chunked) and v1, paged allocator, at a light
rate and under memory pressure with recompute preemptions: with and without
fast-forwarding the request and iteration records, the summary and the end time
must be exactly equal, and the fast-forwarded run must really have skipped steps.

Both cost models price sliding-window layers (the calibrated one maps its full-attention grids to the keys
the windows leave, ``kvsim.cost.window``), so a segment stays inside the windows, where that pricing is
linear. The decode run can also go on past the windows, freeing window blocks (a free may unblock the waiting
head), under a pricing linear in context: the "past_window" cases keep that path checked with the calibrated
model's window mapping switched off (``WindowMix.of`` returning None), and check that segments ran past it.
"""
from __future__ import annotations

import json

import pandas as pd
import pytest

from kvsim.build import setup_run
from tests._scenarios import overridden
from kvsim.sim import SimEngine, simulate
from tests.profile_factory import synthetic_profile

WINDOW, BS = 4096, 16
BASE = {
    "model": "Mistral-7B-SWA", "gpu": "a100-80gb",
    "engine": {"policy": "v0", "allocator": "paged", "block_size": BS, "scheduler": "vllm", "max_num_seqs": 128,
               "max_num_batched_tokens": 16384, "gpu_memory_utilization": 0.9},
    "workload": {"dataset": "sharegpt_like", "rate_req_s": 4.0, "num_requests": 150},
    "seed": 0,
}
LONG = {"dataset": "uniform", "prompt_len_range": [2500, 6000], "output_len_range": [200, 1200],
        "rate_req_s": 2.0, "num_requests": 60}


def scenario(engine=None, workload=None, profile=None, **top):
    if profile is not None:
        top["cost"] = {"model": "calibrated", "profile": str(profile)}
    return overridden(BASE, engine, workload, **top)


TIGHT = {"num_gpu_blocks": 2000}          # ~32k tokens of pages: queueing and recompute preemptions
CASES = {
    "mistral_v0": ({}, {}, False, set()),
    "mistral_v0_chunked": ({"scheduler": "chunked", "max_num_batched_tokens": 2048}, {}, False, set()),
    "mistral_v1": ({"policy": "v1", "max_num_batched_tokens": 2048}, {}, False, set()),
    "mistral_v0_pressure": (TIGHT, {"rate_req_s": 30.0}, False, {"preempt", "waiting"}),
    "mistral_v1_pressure": (dict(num_gpu_blocks=1000, policy="v1", max_num_batched_tokens=2048),
                            {"rate_req_s": 30.0}, False,
                            {"preempt", "waiting"}),
    "gemma_v0_pressure": (TIGHT, {"rate_req_s": 30.0}, False, {"preempt", "waiting", "gemma"}),
    "gemma_v1": ({"policy": "v1", "max_num_batched_tokens": 2048}, {}, False, {"gemma"}),
    "mistral_v0_long_calibrated": ({"num_gpu_blocks": 1500}, LONG, True, {"preempt", "waiting", "past_window"}),
    "mistral_v1_long_calibrated": ({"num_gpu_blocks": 1500, "policy": "v1", "max_num_batched_tokens": 2048}, LONG,
                                   True, {"preempt", "waiting", "past_window"}),
    "mistral_v0_long_light": ({}, dict(LONG, rate_req_s=0.3), True, {"past_window"}),
    "gemma_v1_long_calibrated": ({"num_gpu_blocks": 2500, "policy": "v1", "max_num_batched_tokens": 2048}, LONG,
                                 True, {"preempt", "waiting", "past_window", "gemma"}),
    "gemma_v0_long_calibrated": ({"num_gpu_blocks": 2500}, LONG, True, {"preempt", "waiting", "past_window",
                                                                         "gemma"}),
    "mistral_v0_long_calibrated_windowed": ({"num_gpu_blocks": 1500}, LONG, True, {"preempt", "waiting"}),
    "gemma_v1_long_calibrated_windowed": ({"num_gpu_blocks": 2500, "policy": "v1", "max_num_batched_tokens": 2048},
                                          LONG, True, {"preempt", "waiting", "gemma"}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_window_fast_forward_matches_stepping(name, tmp_path, monkeypatch):
    engine, workload, calibrated, expect = CASES[name]
    if "past_window" in expect:         # a pricing linear past the windows (see the module doc)
        from kvsim.cost.window import WindowMix
        monkeypatch.setattr(WindowMix, "of", classmethod(lambda cls, model: None))
    model = "Gemma-2-9B" if "gemma" in expect else "Mistral-7B-SWA"
    profile = None
    if calibrated:
        profile = tmp_path / "profile.json"
        layers = 42 if "gemma" in expect else 32
        profile.write_text(json.dumps(synthetic_profile(model=model, layers=layers)))
    sc = scenario(engine, workload, profile, model=model)
    eng = SimEngine(setup_run(sc), fast_forward=True)
    ff = eng.run()
    step = simulate(sc, fast_forward=False)
    assert eng.ff_steps > 0, "the scenario never fast-forwarded"
    assert len(ff.iterations) > eng.ff_steps
    pd.testing.assert_frame_equal(ff.requests, step.requests, check_exact=True)
    pd.testing.assert_frame_equal(ff.iterations, step.iterations, check_exact=True)
    assert ff.end_s == step.end_s
    assert json.dumps(ff.summary, sort_keys=True) == json.dumps(step.summary, sort_keys=True)
    s = ff.summary
    assert s["requests_finished"] + s["requests_rejected"] == s["requests_total"]
    if "preempt" in expect:
        assert s["preemptions"] > 0
    if "waiting" in expect:
        assert ff.iterations.waiting.max() > 0
    table = eng.log.segments
    top = table._col("ctx_max", 0, len(table)) + table._col("steps", 0, len(table))
    if "past_window" in expect:             # runs went on where decode appends free window blocks
        assert (top > WINDOW + BS).any()
    else:                                   # roofline pricing: segments stay inside the window
        assert top.max() <= WINDOW + 1
    eng.sched.kv.check_empty()
