"""Roofline cost model: monotonicity, bandwidth-bound decode, swap granularity, fast-forward invariant."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvsim.catalogue import get_gpu, get_model
from kvsim.configtools import from_dict
from kvsim.core.plan import StepPlan
from kvsim.cost import CostModel, RooflineCostModel, RooflineParams
from kvsim.errors import KvsimError

OPT13 = get_model("OPT-13B")
A100 = get_gpu("A100-40GB")
CM = RooflineCostModel(OPT13, A100)


def decode(ctx):
    return StepPlan(decode_group_ids=list(range(len(ctx))), decode_context_tokens=list(ctx))


def prefill(new, cached=None):
    return StepPlan(prefill_group_ids=list(range(len(new))), prefill_new_tokens=list(new),
                    prefill_cached_tokens=list(cached or [0] * len(new)))


def test_is_a_cost_model_and_empty_plan_is_free():
    assert isinstance(CM, CostModel)
    assert CM.step_time(StepPlan()) == 0.0
    assert CM.decode_step_times(0, np.array([0, 10])).tolist() == [0.0, 0.0]


def test_monotone_in_prefill_tokens():
    times = [CM.step_time(prefill([n])) for n in (1, 16, 128, 512, 1024, 2048, 4096)]
    assert all(a < b for a, b in zip(times, times[1:]))


def test_monotone_in_decode_batch_and_context():
    by_ctx = [CM.step_time(decode([c] * 32)) for c in (1, 64, 256, 1024, 2048)]
    assert all(a < b for a, b in zip(by_ctx, by_ctx[1:]))
    by_batch = [CM.step_time(decode([500] * b)) for b in (1, 8, 32, 128, 256)]
    assert all(a < b for a, b in zip(by_batch, by_batch[1:]))


def test_prefix_cache_hit_is_cheaper_than_full_prefill():
    assert CM.step_time(prefill([100], [900])) < CM.step_time(prefill([1000]))
    # but attending to a cached prefix is not free
    assert CM.step_time(prefill([100], [900])) > CM.step_time(prefill([100]))


def test_large_prefill_is_compute_bound():
    t = CM.step_time(prefill([4096]))
    ideal = OPT13.flops_per_token_linear() * 4096 / A100.peak_fp16_flops
    assert ideal / CM.params.matmul_efficiency < t < 1.3 * ideal / CM.params.matmul_efficiency


def test_decode_at_large_batch_is_bandwidth_bound():
    ctx = [1000] * 16
    t = CM.step_time(decode(ctx)) - CM.params.step_overhead_s - 16 * CM.params.per_seq_overhead_s
    nbytes = OPT13.weight_bytes(2) + sum(ctx) * OPT13.kv_bytes_per_token(2)
    ideal = nbytes / A100.hbm_bandwidth_Bps
    assert ideal < t
    assert t == pytest.approx(ideal / CM.params.hbm_efficiency, rel=0.03)


def test_opt13b_decode_batch32_ctx500_is_tens_of_ms():
    t = CM.step_time(decode([500] * 32))
    assert 0.025 < t < 0.045


def test_tensor_parallel_is_faster_but_not_free():
    m = get_model("OPT-66B")
    g = get_gpu("A100-80GB")
    t2 = RooflineCostModel(m, g, tensor_parallel=2).step_time(decode([512] * 64))
    t8 = RooflineCostModel(m, g, tensor_parallel=8).step_time(decode([512] * 64))
    assert t8 < t2 and t8 > t2 / 4  # weights/4 but fixed overhead + all-reduce stay


def test_allreduce_costs_depend_on_interconnect_only_under_tp():
    m, g, p = get_model("OPT-6.7B"), get_gpu("A100-80GB"), prefill([2048])
    slow = RooflineParams(interconnect_efficiency=0.05)
    assert RooflineCostModel(m, g, tensor_parallel=2, params=slow).step_time(p) > \
        RooflineCostModel(m, g, tensor_parallel=2).step_time(p)
    assert RooflineCostModel(m, g, params=slow).step_time(p) == RooflineCostModel(m, g).step_time(p)


def test_swap_small_blocks_cost_more_per_byte():
    """PagedAttention Fig. 19: per-(layer, K/V) transfers make block size 1 swap far slower per byte."""
    kv = OPT13.kv_bytes_per_token(2)
    per_byte = {bs: CM.swap_time(4096 // bs, bs * kv) / (4096 * kv) for bs in (1, 16, 256)}
    assert per_byte[1] > 5 * per_byte[256]
    assert per_byte[1] > per_byte[16] > per_byte[256]
    # at 256 tokens per block the link is nearly saturated
    assert per_byte[256] == pytest.approx(1 / (A100.host_link_Bps * CM.params.host_link_efficiency), rel=0.15)
    whole = RooflineCostModel(OPT13, A100, params=RooflineParams(swap_per_layer_kv=False))
    assert whole.swap_time(4096, kv) < CM.swap_time(4096, kv)
    assert CM.swap_time(0, kv) == 0.0


def test_copies_and_swaps_are_included_in_step_time():
    base = decode([100] * 4)
    with_copy = decode([100] * 4)
    with_copy.copy_pairs = [(1, 2), (3, 4)]
    assert CM.step_time(with_copy) == pytest.approx(CM.step_time(base) + CM.copy_time(2, CM.block_bytes))
    with_swap = decode([100] * 4)
    with_swap.swap_in = [(0, 5)] * 3
    assert CM.step_time(with_swap) == pytest.approx(CM.step_time(base) + CM.swap_time(3, CM.block_bytes))
    off = RooflineCostModel(OPT13, A100, params=RooflineParams(include_swaps_in_step=False))
    assert off.step_time(with_swap) == pytest.approx(off.step_time(base))
    swap_only = StepPlan(swap_out=[(0, 0)] * 10)
    assert CM.step_time(swap_only) == pytest.approx(CM.params.step_overhead_s + CM.swap_time(10, CM.block_bytes))


def test_mixed_step_costs_at_least_each_part():
    mixed = StepPlan(prefill_group_ids=[0], prefill_new_tokens=[512], prefill_cached_tokens=[0],
                     decode_group_ids=[1, 2], decode_context_tokens=[300, 700])
    assert CM.step_time(mixed) > max(CM.step_time(prefill([512])), CM.step_time(decode([300, 700])))


def test_params_validation_and_from_dict():
    p = from_dict(RooflineParams, {"hbm_efficiency": 0.9, "step_overhead_s": 0.001}, "cost")
    assert p.hbm_efficiency == 0.9 and p.matmul_efficiency == 0.6
    with pytest.raises(KvsimError) as e:
        from_dict(RooflineParams, {"step_overhead_s": -1.0}, "cost")
    assert e.value.field == "cost.step_overhead_s"
    with pytest.raises(KvsimError) as e:
        from_dict(RooflineParams, {"matmul_efficiency": 1.5}, "cost")
    assert e.value.field == "cost.matmul_efficiency"


ctx_lists = st.lists(st.integers(min_value=1, max_value=8192), min_size=1, max_size=300)
SETUPS = [(OPT13, A100, 1), (get_model("Llama-3-70B"), get_gpu("H100"), 4),
          (get_model("OPT-125M"), get_gpu("L4"), 1), (get_model("Llama-2-70B"), get_gpu("A100-80GB"), 16)]
MODELS = [RooflineCostModel(m, g, tensor_parallel=tp) for m, g, tp in SETUPS]


@settings(max_examples=300, deadline=None)
@given(ctx=ctx_lists, which=st.integers(0, len(MODELS) - 1), steps=st.integers(1, 40))
def test_decode_step_times_bit_identical_to_step_time(ctx, which, steps):
    """Fast-forwarding k decode steps with the vectorised form equals stepping one at a time, bit for bit."""
    cm = MODELS[which]
    n = len(ctx)
    sums = sum(ctx) + n * np.arange(steps)
    fast = cm.decode_step_times(n, sums)
    assert fast.dtype == np.float64 and fast.shape == (steps,)
    stepped = []
    cur = list(ctx)
    for _ in range(steps):
        stepped.append(cm.step_time(decode(cur)))
        cur = [c + 1 for c in cur]
    assert fast.tolist() == stepped                 # exact equality, not approx
    assert cm.step_time(decode(ctx)) == cm.decode_step_times(n, np.array([sum(ctx)]))[0]


@settings(max_examples=100, deadline=None)
@given(ctx=ctx_lists)
def test_decode_depends_only_on_count_and_sum(ctx):
    perm = list(reversed(ctx))
    flat = [sum(ctx) // len(ctx)] * len(ctx)
    flat[0] += sum(ctx) - sum(flat)
    assert CM.step_time(decode(ctx)) == CM.step_time(decode(perm)) == CM.step_time(decode(flat))


def _vector_step_time(cm, plan):
    """``step_time`` as the vectorised formula prices it (numpy float64 throughout, as before the float twin)."""
    ctx = plan.decode_context_tokens
    if not (plan.prefill_new_tokens or plan.copy_pairs or plan.swap_in or plan.swap_out):
        return float(cm.decode_step_times(len(ctx), np.array([sum(ctx)]))[0])
    tokens = np.float64(plan.num_prefill_tokens + len(ctx))
    rows = np.float64(len(plan.prefill_new_tokens) + len(ctx))
    t = float(cm._forward_time(tokens, rows, rows, np.float64(sum(ctx)), np.float64(cm._prefill_attention_s(plan))))
    t += cm.copy_time(len(plan.copy_pairs), cm.block_bytes)
    if cm.params.include_swaps_in_step:
        t += cm.swap_time(len(plan.swap_out), cm.block_bytes) + cm.swap_time(len(plan.swap_in), cm.block_bytes)
    return t


@settings(max_examples=400, deadline=None)
@given(ctx=st.lists(st.integers(1, 8192), max_size=300), which=st.integers(0, len(MODELS) - 1),
       new=st.lists(st.integers(1, 4096), max_size=8), cached=st.integers(0, 2048), copies=st.integers(0, 40),
       scale=st.sampled_from([1.0, 1e-3, 1e3]))
def test_float_twin_prices_every_plan_bit_for_bit_like_the_vector_formula(ctx, which, new, cached, copies, scale):
    """The stepped path's float pricing (``_forward_time_f``) equals the numpy formula exactly, for decode-only,
    prefill, mixed and copy-on-write plans, and across the launch floor / roofline corners (scaled overheads)."""
    m, g, tp = SETUPS[which]
    params = RooflineParams(step_overhead_s=0.003 * scale, layer_launch_floor_s=4e-5 * scale)
    cm = RooflineCostModel(m, g, tensor_parallel=tp, params=params)
    if not (ctx or new):
        ctx = [1]
    plan = StepPlan(prefill_group_ids=list(range(len(new))), prefill_new_tokens=list(new),
                    prefill_cached_tokens=[cached] * len(new), decode_group_ids=list(range(len(ctx))),
                    decode_context_tokens=list(ctx), copy_pairs=[(i, i + 1) for i in range(copies)])
    assert cm.step_time(plan) == _vector_step_time(cm, plan)
    if ctx:
        assert cm.decode_step_time(len(ctx), sum(ctx)) == cm.decode_step_times(len(ctx), np.array([sum(ctx)]))[0]



def _scaled_model(which: int, scale: float, attn_eff: float, side: str | None) -> RooflineCostModel:
    """A roofline model of SETUPS[which] with its overheads scaled and, when ``side`` is given, decode attention's
    roofline side forced (both sides computed)."""
    m, g, tp = SETUPS[which]
    params = RooflineParams(step_overhead_s=0.003 * scale, layer_launch_floor_s=4e-5 * scale,
                            attention_efficiency=attn_eff)
    cm = RooflineCostModel(m, g, tensor_parallel=tp, params=params)
    if side is not None:
        cm._attn_side = side
    return cm

@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 512), sums=st.lists(st.integers(0, 4_000_000), min_size=1, max_size=50),
       which=st.integers(0, len(MODELS) - 1), scale=st.sampled_from([1.0, 1e-3, 1e3]),
       attn_eff=st.sampled_from([0.3, 1e-3, 1e-5]), side=st.sampled_from([None, "both"]))
def test_one_size_pricing_equals_the_per_row_formula(n, sums, which, scale, attn_eff, side):
    """``decode_step_times`` (scalar batch terms, in-place array terms, only the winning side of decode attention's
    roofline) equals ``decode_step_times_rows`` (the shared numpy formula, which rebuilds fast-forwarded rows)
    bit for bit: on both sides of the launch floor and of the attention roofline, and with both sides computed."""
    cm = _scaled_model(which, scale, attn_eff, side)
    s = np.array(sums, dtype=np.float64)
    one = cm.decode_step_times(n, s)
    rows = cm.decode_step_times_rows(np.full(len(s), n), s)
    assert one.tobytes() == rows.tobytes()
    assert s.tolist() == [float(x) for x in sums]           # the input is not modified


def test_decode_attention_side_follows_the_roofline():
    """Memory-bound decode attention at the default efficiencies; compute-bound when attention runs very slowly."""
    m, g, tp = SETUPS[0]
    assert RooflineCostModel(m, g)._attn_side == "bytes"
    slow = RooflineCostModel(m, g, params=RooflineParams(attention_efficiency=1e-5))
    assert slow._attn_side == "flops"
    assert slow.decode_step_times(4, np.array([1000.0]))[0] == slow.decode_step_time(4, 1000)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(0, 300), ctx_sum=st.integers(0, 2_000_000), steps=st.integers(0, 70),
       which=st.integers(0, len(MODELS) - 1), scale=st.sampled_from([1.0, 1e-3, 1e3]),
       attn_eff=st.sampled_from([0.3, 1e-5]), side=st.sampled_from([None, "both"]))
def test_run_times_list_equals_the_array_form(n, ctx_sum, steps, which, scale, attn_eff, side):
    """``decode_run_times`` (a Python loop) prices a run's steps to the same floats as ``decode_step_times``."""
    cm = _scaled_model(which, scale, attn_eff, side)
    j = np.arange(steps, dtype=np.float64)
    want = cm.decode_step_times(n, ctx_sum + n * j, ctx_sum + j)
    got = cm.decode_run_times(n, ctx_sum, ctx_sum, steps)
    assert isinstance(got, list) and np.array(got, dtype=np.float64).tobytes() == want.tobytes()


@settings(max_examples=300, deadline=None)
@given(n=st.integers(0, 300), ctx_sum=st.integers(0, 2_000_000), steps=st.integers(0, 120),
       which=st.integers(0, len(MODELS) - 1), scale=st.sampled_from([1.0, 1e-3, 1e3]),
       attn_eff=st.sampled_from([0.3, 1e-5]), side=st.sampled_from([None, "both"]),
       t0=st.floats(0.0, 1e5), cut=st.floats(0.0, 1.5), cap=st.sampled_from([None, 1, 48]))
def test_run_cut_is_where_the_running_sum_of_the_run_times_passes_the_limit(n, ctx_sum, steps, which, scale,
                                                                          attn_eff, side, t0, cut, cap):
    """``decode_run_cut`` stops where ``accumulate(decode_run_times, initial=t0)`` first reaches ``limit`` (or at
    the run's last step), float for float, whether in its loop or, past ``cap`` loop steps, in the array form;
    None only where the model has no loop."""
    from itertools import accumulate
    cm = _scaled_model(which, scale, attn_eff, side)
    full = list(accumulate(cm.decode_run_times(n, ctx_sum, ctx_sum, steps), initial=t0))
    limit = t0 + cut * (full[-1] - t0) if steps else float("inf")
    got = cm.decode_run_cut(n, ctx_sum, ctx_sum, steps, t0, limit, cap)
    if n <= 0 or cm._attn_side == "both":
        assert got is None
        return
    m = next((i for i, c in enumerate(full) if i and c >= limit), steps)    # the first clock value past it
    assert got == (m, full[m - 1] if m else t0, full[m])
    assert all(type(x) is float for x in got[1:])
