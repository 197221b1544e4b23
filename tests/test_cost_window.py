"""Roofline pricing of sliding-window layers: they read min(ctx, window) keys; other models unchanged."""
from kvsim.catalogue import get_gpu, get_model
from kvsim.core.plan import StepPlan
from kvsim.cost import RooflineCostModel

GPU = get_gpu("a100-80gb")
FULL = RooflineCostModel(get_model("Mistral-7B"), GPU)
SWA = RooflineCostModel(get_model("Mistral-7B-SWA"), GPU)
GEMMA = RooflineCostModel(get_model("Gemma-2-9B"), GPU)


def decode(ctx):
    return StepPlan(decode_group_ids=list(range(len(ctx))), decode_context_tokens=list(ctx))


def prefill(new, cached):
    return StepPlan(prefill_group_ids=list(range(len(new))), prefill_new_tokens=list(new),
                    prefill_cached_tokens=list(cached))


def test_within_the_window_a_window_model_costs_the_same():
    for plan in (decode([100, 4000, 4096]), prefill([4096], [0]), prefill([1000], [3000])):
        assert SWA.step_time(plan) == FULL.step_time(plan)


def test_past_the_window_decode_reads_only_the_window():
    assert SWA.step_time(decode([30000] * 64)) < FULL.step_time(decode([30000] * 64))
    assert SWA.step_time(decode([30000] * 64)) == SWA.step_time(decode([4096] * 64))
    assert SWA.step_time(prefill([2000], [20000])) < FULL.step_time(prefill([2000], [20000]))


def test_alternating_layers_grow_at_half_the_rate_past_the_window():
    base = GEMMA.step_time(decode([4096] * 64))
    grow = GEMMA.step_time(decode([8000] * 64)) - base
    dense = RooflineCostModel(get_model("Gemma-2-9B").__class__(**{**get_model("Gemma-2-9B").__dict__,
                                                                   "sliding_window": 0, "layer_pattern": ()}), GPU)
    dense_grow = dense.step_time(decode([8000] * 64)) - dense.step_time(decode([4096] * 64))
    assert abs(grow - dense_grow / 2) < 1e-9 * dense_grow + 1e-12
