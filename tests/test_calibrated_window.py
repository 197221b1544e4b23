"""The calibrated cost model prices sliding-window layers: its grids are timed with full attention (kvsim
calibrate's synthetic steps carry no window), so a windowed model's decode rows are priced at the keys the
windows leave and its prefill chunks lose the windowed share of their attention (``kvsim.cost.window``)."""
from __future__ import annotations

import json

import pytest

from kvsim.core.plan import StepPlan
from kvsim.cost.calibrated import CalibratedCostModel, Profile
from tests.profile_factory import synthetic_profile

W = 4096


def cost(model: str, layers: int = 32) -> CalibratedCostModel:
    prof = Profile(synthetic_profile(model=model, layers=layers, steps=True))
    return CalibratedCostModel(prof, model_name=model, dtype="fp16", block_size_tokens=16)


SWA, PLAIN, GEMMA = cost("Mistral-7B-SWA"), cost("Mistral-7B"), cost("Gemma-2-9B", 42)


def decode(ctx):
    return StepPlan(decode_group_ids=list(range(len(ctx))), decode_context_tokens=list(ctx))


def prefill(new, cached=0, ctx=()):
    return StepPlan(prefill_group_ids=[0], prefill_new_tokens=[new], prefill_cached_tokens=[cached],
                    decode_group_ids=list(range(1, len(ctx) + 1)), decode_context_tokens=list(ctx))


@pytest.mark.parametrize("plan", [decode([100, 2000, W]), prefill(512), prefill(256, W - 256),
                                  prefill(300, 1000, ctx=[50, W]), decode([1])])
def test_inside_the_window_a_window_model_costs_exactly_the_same(plan):
    assert SWA.step_time(plan) == PLAIN.step_time(plan)


def test_past_the_window_decode_rows_cost_what_the_window_reads():
    for ctx in ([W + 1], [8000, 100], [20000] * 8, [W, 3 * W, 5000]):
        capped = [min(c, W) for c in ctx]
        assert SWA.step_time(decode(ctx)) == pytest.approx(PLAIN.step_time(decode(capped)), rel=1e-12)
        assert SWA.step_time(decode(ctx)) < PLAIN.step_time(decode(ctx))
    # rows past the window stop growing: a longer history costs nothing more
    assert SWA.step_time(decode([30000] * 4)) == SWA.step_time(decode([9000] * 4))


def test_alternating_layers_price_between_full_and_windowed():
    gemma_plain = cost("Gemma-2-9B", 42)
    gemma_plain._window = None                       # the same grids priced with plain contexts
    ctx = [12000] * 8
    full, capped = gemma_plain.step_time(decode(ctx)), gemma_plain.step_time(decode([W] * 8))
    mixed = GEMMA.step_time(decode(ctx))
    assert capped < mixed < full
    # half the layers are windowed: the mean keys read are (12000 + 4096) / 2
    assert mixed == pytest.approx(gemma_plain.step_time(decode([(12000 + W) / 2] * 8)), rel=1e-12)
    assert GEMMA.step_time(decode([3000] * 8)) == gemma_plain.step_time(decode([3000] * 8))


def test_prefill_past_the_window_loses_the_windowed_share_of_its_attention():
    # a fresh prompt longer than the window, and a chunk after a long cached context
    for plan in (prefill(8192), prefill(2048, 10000), prefill(1024, 6000, ctx=[100, 9000])):
        assert SWA.step_time(plan) < PLAIN.step_time(plan)
    # the saving grows with how far the keys reach past the window; never more than the attention itself
    savings = [PLAIN.step_time(prefill(512, c)) - SWA.step_time(prefill(512, c)) for c in (W, 6000, 12000, 24000)]
    assert savings[0] > 0 and savings == sorted(savings)
    # ... and a chunk after a long history still reads a whole window per query: at least its own causal pairs
    assert SWA.step_time(prefill(512, 24000)) >= PLAIN.step_time(prefill(512, 0))
    # exactly at the window edge nothing is saved
    assert SWA.step_time(prefill(W - 512, 512)) == PLAIN.step_time(prefill(W - 512, 512))


def test_a_long_context_run_is_faster_with_windowed_pricing(tmp_path, monkeypatch):
    """End to end: long prompts on Mistral-7B-SWA with a calibrated profile decode faster per token than the
    same run priced as full attention (the window mapping switched off)."""
    import kvsim
    from kvsim.cost.window import WindowMix
    p = tmp_path / "swa.json"
    p.write_text(json.dumps(synthetic_profile(model="Mistral-7B-SWA", layers=32, steps=True)))
    doc = {"model": "Mistral-7B-SWA", "gpu": "a100-80gb", "seed": 1,
           "engine": {"block_size": 16, "max_num_seqs": 64, "max_num_batched_tokens": 16384},
           "cost": {"model": "calibrated", "profile": str(p)},
           "workload": {"dataset": "uniform", "prompt_len_range": [6000, 9000], "output_len_range": [200, 400],
                        "rate_req_s": 0.5, "num_requests": 12}}
    windowed = kvsim.simulate(kvsim.load_scenario(doc)).summary
    monkeypatch.setattr(WindowMix, "of", classmethod(lambda cls, model: None))
    plain = kvsim.simulate(kvsim.load_scenario(doc)).summary
    assert windowed["requests_finished"] == plain["requests_finished"] == 12
    assert windowed["tpot_p50_s"] < plain["tpot_p50_s"]
    assert windowed["ttft_p50_s"] < plain["ttft_p50_s"]
