"""Calibrated cost model on CPU: loading, interpolation, monotonicity, errors, and simulator use."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import kvsim
from kvsim.core.plan import StepPlan
from kvsim.cost.calibrated import CalibratedCostModel, Profile, interp1, load_profile
from kvsim.errors import KvsimError
from tests.profile_factory import spread_grid, synthetic_profile


def model(prof=None, **kw) -> CalibratedCostModel:
    return CalibratedCostModel(Profile(prof or synthetic_profile()), model_name="OPT-13B", dtype="fp16",
                               block_size_tokens=16, **kw)


def test_interp1_hits_points_and_extends_last_slope():
    xs, ys = np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 4.0])
    assert interp1(2.0, xs, ys) == 3.0 and interp1(3.0, xs, ys) == 3.5
    assert interp1(0.5, xs, ys) == 1.0                 # clamp below
    assert interp1(6.0, xs, ys) == pytest.approx(5.0)  # last slope 0.5/unit above


def test_noisy_profile_is_made_monotone():
    m = model(synthetic_profile(noise=0.3, seed=3))
    lin_x, lin_y = m.p.linear
    assert np.all(np.diff(lin_y) >= 0)
    xa, xb, t = m._dec
    assert np.all(np.diff(t, axis=0) >= 0) and np.all(np.diff(t, axis=1) >= 0)
    times = m.decode_step_times(32, np.array([32 * c for c in (100, 500, 900, 1500, 4000)], float))
    assert np.all(np.diff(times) >= 0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 3000), min_size=1, max_size=64))
def test_decode_step_time_is_bit_identical_to_vectorised(ctx):
    plan = StepPlan(decode_group_ids=list(range(len(ctx))), decode_context_tokens=ctx)
    for m in (model(), model(_with_spread_grid(0.5)), model(_with_spread_grid(0.5), decode_graph_batches=[1, 8, 64])):
        assert m.step_time(plan) == m.decode_step_times(len(ctx), np.array([float(sum(ctx))]),
                                                        np.array([float(max(ctx))]))[0]


def test_step_time_grows_with_work():
    m = model()
    small = StepPlan(prefill_group_ids=[0], prefill_new_tokens=[64], prefill_cached_tokens=[0])
    big = StepPlan(prefill_group_ids=[0], prefill_new_tokens=[1024], prefill_cached_tokens=[0])
    cached = StepPlan(prefill_group_ids=[0], prefill_new_tokens=[1024], prefill_cached_tokens=[2048])
    assert 0 < m.step_time(small) < m.step_time(big) < m.step_time(cached)
    assert m.step_time(StepPlan()) == 0.0
    assert m.swap_time(1, 0) < m.swap_time(16, 0) < m.swap_time(256, 0)


@pytest.mark.parametrize("mutate, field", [
    (lambda p: p.update(format="nope"), "profile"),
    (lambda p: p.update(version=99), "profile"),
    (lambda p: p.pop("linear"), "profile"),
    (lambda p: p["linear"].update(tokens=[4, 1, 16, 64, 256, 1024, 4096]), "profile"),
    (lambda p: p["decode_attn"]["16"].update(time_s=[[1.0]]), "profile"),
    (lambda p: p["lm_head"].update(time_s=[float("nan")] * 5), "profile"),
])
def test_bad_profiles_are_clear_errors(mutate, field):
    prof = synthetic_profile()
    mutate(prof)
    with pytest.raises(KvsimError) as e:
        model(prof)
    assert str(e.value).startswith(field)


def test_mismatched_profile_is_an_error():
    with pytest.raises(KvsimError, match="measured for OPT-13B"):
        CalibratedCostModel(Profile(synthetic_profile()), model_name="Llama-3-8B", dtype="fp16", block_size_tokens=16)
    with pytest.raises(KvsimError, match="block_size"):
        CalibratedCostModel(Profile(synthetic_profile()), model_name="OPT-13B", dtype="fp16", block_size_tokens=32)
    with pytest.raises(KvsimError, match="bf16"):
        CalibratedCostModel(Profile(synthetic_profile()), model_name="OPT-13B", dtype="bf16", block_size_tokens=16)


def test_profile_files_load_and_drive_the_simulator(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(synthetic_profile()))
    assert load_profile(path).model == "OPT-13B"
    sc = kvsim.load_scenario({"model": "opt-13b", "gpu": "h100-80gb",
                              "workload": {"rate_req_s": 4, "num_requests": 150},
                              "cost": {"model": "calibrated", "profile": str(path)}})
    stepped = kvsim.simulate(sc, fast_forward=False)
    fast = kvsim.simulate(sc)
    assert stepped.summary == fast.summary and fast.summary["requests_finished"] == 150
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(KvsimError, match="not JSON"):
        load_profile(bad)


def test_calibrated_module_imports_no_torch():
    import subprocess
    import sys
    code = "import sys, kvsim.cost.calibrated, kvsim.sim; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("steps", [False, True])
def test_whole_iteration_grids_price_every_plan_kind(steps):
    m = model(synthetic_profile(steps=steps))
    assert (m._step is not None) == steps
    dec = StepPlan(decode_group_ids=[0, 1], decode_context_tokens=[300, 700])
    pre = StepPlan(prefill_group_ids=[0], prefill_new_tokens=[512], prefill_cached_tokens=[0])
    two = StepPlan(prefill_group_ids=[0, 1], prefill_new_tokens=[256, 256], prefill_cached_tokens=[0, 0])
    cached = StepPlan(prefill_group_ids=[0], prefill_new_tokens=[512], prefill_cached_tokens=[1024])
    mixed = StepPlan(prefill_group_ids=[2], prefill_new_tokens=[512], prefill_cached_tokens=[0],
                     decode_group_ids=[0, 1], decode_context_tokens=[300, 700])
    t = {k: m.step_time(v) for k, v in dict(dec=dec, pre=pre, two=two, cached=cached, mixed=mixed).items()}
    assert all(v > 0 for v in t.values())
    assert t["pre"] < t["cached"]                    # attending to cached context costs
    assert abs(t["two"] - t["pre"]) < 0.1 * t["pre"]  # same tokens in two prompts: about the same
    assert t["mixed"] > max(t["dec"], t["pre"]) - 1e-12
    assert m.step_time(dec) == m.decode_step_times(2, np.array([1000.0]))[0]


def _with_mixed_grid(fn):
    """The synthetic profile plus a mixed-step grid whose time is ``fn(decode rows, ctx, chunk)``."""
    prof = synthetic_profile(steps=True)
    n, c, t = [1, 8, 64], [256, 1024, 2048], [16, 256, 1024]
    prof["mixed_step"] = {"16": {"decode": n, "ctx": c, "chunk": t,
                                 "time_s": [[[fn(a, b, k) for k in t] for b in c] for a in n]}}
    return prof


def test_mixed_steps_are_priced_from_their_own_grid():
    fn = lambda n, c, t: 1e-3 * (5 + 0.01 * n * c / 256 + 0.02 * t)      # linear: interpolation is exact
    m = model(_with_mixed_grid(fn))
    base = model(synthetic_profile(steps=True))
    rows = lambda n: float(np.interp(n + 1, *m.p.overhead))
    for n, ctx, chunk in [(8, 1024, 256), (30, 700, 500), (64, 2048, 1024)]:
        plan = StepPlan(prefill_group_ids=[99], prefill_new_tokens=[chunk], prefill_cached_tokens=[0],
                        decode_group_ids=list(range(n)), decode_context_tokens=[ctx] * n)
        assert m.step_time(plan) == pytest.approx(rows(n) + fn(n, ctx, chunk), rel=1e-9)
        assert m.step_time(plan) != pytest.approx(base.step_time(plan), rel=1e-3)   # the grid is used
    # a chunk over cached context adds the per-layer attention difference; decode-only plans ignore the grid
    fresh = StepPlan(prefill_group_ids=[9], prefill_new_tokens=[256], prefill_cached_tokens=[0],
                     decode_group_ids=[0], decode_context_tokens=[500])
    warm = StepPlan(prefill_group_ids=[9], prefill_new_tokens=[256], prefill_cached_tokens=[1024],
                    decode_group_ids=[0], decode_context_tokens=[500])
    assert m.step_time(warm) > m.step_time(fresh)
    dec = StepPlan(decode_group_ids=[0, 1], decode_context_tokens=[300, 700])
    assert m.step_time(dec) == base.step_time(dec)


def test_mixed_steps_past_256_chunk_tokens_follow_the_prefill_grids_shape():
    """Between the mixed grid's chunks past SHAPED_FROM_CHUNK, a mixed step takes the prefill grid's staircase at its
    padded token count (plus the mixed grid's excess over the prefill grid, linear between chunks); at the chunks,
    below them and without graph sizes it is the linear interpolation."""
    from kvsim.cost.step_grids import SHAPED_FROM_CHUNK
    from kvsim.graph_sizes import padded, prefill_token_sizes
    ladder = prefill_token_sizes(2048)
    fn = lambda n, c, t: 1e-3 * (5 + 0.01 * n * c / 256 + 0.02 * t)
    prof = _with_mixed_grid(fn)
    prof["meta"]["cuda_graphs"] = True
    stair = lambda t: 0.01 + 1e-5 * t + (3e-3 if t > 512 else 0.0)      # a step up past 512 tokens (a wave more)
    prof["prefill_step"]["16"] = {"tokens": ladder, "time_s": [stair(t) for t in ladder],
                                  "timing": "between_decode_steps"}
    shaped, linear = model(prof, prefill_graph_tokens=ladder), model(prof)
    plan = lambda n, chunk: StepPlan(prefill_group_ids=[99], prefill_new_tokens=[chunk], prefill_cached_tokens=[0],
                                     decode_group_ids=list(range(n)), decode_context_tokens=[1024] * n)
    assert SHAPED_FROM_CHUNK == 256
    for n, chunk in [(8, 16), (8, 200), (8, 256), (8, 1024), (30, 256)]:     # below, or at the grid's chunks
        assert shaped.step_time(plan(n, chunk)) == pytest.approx(linear.step_time(plan(n, chunk)), rel=1e-9)
    xs, ys = shaped.p.prefill_step[16]                  # the grid as the cost model holds it (made monotone)
    at = lambda n, t: float(np.interp(padded(t + n, ladder), xs, ys))         # noqa: E731
    for n, chunk in [(8, 560), (8, 700), (30, 600), (1, 900)]:
        w = (chunk - 256) / (1024 - 256)
        bump = at(n, chunk) - (at(n, 256) + w * (at(n, 1024) - at(n, 256)))
        assert shaped.step_time(plan(n, chunk)) - linear.step_time(plan(n, chunk)) == pytest.approx(bump, abs=1e-12)
    assert shaped.step_time(plan(8, 580)) > linear.step_time(plan(8, 580)) + 1.5e-3      # 588 tokens: past the step
    assert shaped.step_time(plan(8, 480)) < linear.step_time(plan(8, 480)) - 5e-4        # 488 tokens: before it


def test_mixed_steps_take_the_step_overhead_made_monotone_in_rows():
    """step_overhead's points are one lock-step run each; a slow one (here 9 ms at 64 rows) would price a
    mixed step of 64 rows above one of 128. Mixed steps, and decode steps without a serving fit, take the
    isotonic curve; prefill-only steps keep the measured points (prefill_serving is fitted against them)."""
    fn = lambda n, c, t: 1e-3 * (5 + 0.01 * n * c / 256 + 0.02 * t)
    prof = _with_mixed_grid(fn)
    prof["step_overhead"] = {"num_seqs": [1, 16, 64, 128, 256], "time_s": [2.5e-3, 3e-3, 9e-3, 3.5e-3, 6e-3]}
    m = model(prof)
    flat = model(dict(prof, step_overhead={"num_seqs": [1, 256], "time_s": [0.0, 0.0]}))
    mixed = lambda n: m.step_time(StepPlan(prefill_group_ids=[99], prefill_new_tokens=[256],
                                           prefill_cached_tokens=[0], decode_group_ids=list(range(n)),
                                           decode_context_tokens=[512] * n))
    assert mixed(63) <= mixed(127)                       # 64 rows vs 128 rows (the chunk is one of them)
    smooth = (9e-3 + 3.5e-3 + 6e-3) / 3                  # pool adjacent violators: 64, 128 and 256 averaged
    assert mixed(63) == pytest.approx(smooth + fn(63, 512, 256), rel=1e-9)
    dec = StepPlan(decode_group_ids=list(range(64)), decode_context_tokens=[512] * 64)
    assert m.step_time(dec) - flat.step_time(dec) == pytest.approx(smooth)
    pre = StepPlan(prefill_group_ids=list(range(64)), prefill_new_tokens=[8] * 64, prefill_cached_tokens=[0] * 64)
    assert m.step_time(pre) - flat.step_time(pre) == pytest.approx(9e-3)


def test_prefill_serving_prices_its_own_lone_prefills_back():
    """prefill_serving's extra is fitted as measured minus the price without it (kvsim.calibrate.serving_fit's
    stripped cost model); with the extra in the profile the same steps must price at what was measured, so
    both sides take the same step overhead, however noisy its points."""
    from kvsim.calibrate.serving_fit import UNFITTED_PREFILL, stripped_cost
    prof = synthetic_profile(steps=True)
    prof["step_overhead"] = {"num_seqs": [1, 4, 16, 256], "time_s": [4e-3, 1e-3, 2e-3, 6e-3]}   # 1 row slow
    bare = stripped_cost(prof, 16, {}, drop=UNFITTED_PREFILL, bare=False)
    tokens = [64, 256, 1024]
    measured = [0.015, 0.030, 0.080]
    plans = [StepPlan(prefill_group_ids=[0], prefill_new_tokens=[t], prefill_cached_tokens=[0]) for t in tokens]
    extra = [d - bare.step_time(p) for d, p in zip(measured, plans)]
    fitted = dict(prof, prefill_serving={"16": {"tokens": tokens, "extra_s": extra}})
    cost = CalibratedCostModel(Profile(fitted), model_name="OPT-13B", dtype="fp16", block_size_tokens=16)
    assert [cost.step_time(p) for p in plans] == pytest.approx(measured, rel=1e-12)


def test_malformed_mixed_grid_is_a_clear_error():
    prof = _with_mixed_grid(lambda n, c, t: 1e-3)
    prof["mixed_step"]["16"]["chunk"] = [16, 8, 1024]
    with pytest.raises(KvsimError, match="profile"):
        Profile(prof)


def _steps_profile(per_row: float = 0.0) -> dict:
    prof = synthetic_profile(steps=True)
    g = prof["decode_step"]["16"]
    g["time_s"] = [[t + b * per_row for t in row] for b, row in zip(g["batch"], g["time_s"])]
    return prof


def _with_spread_grid(lam: float, graphs: bool = True, per_row: float = 0.0) -> dict:
    """A whole-iteration profile whose spread grid lies ``lam`` of the way from the uniform step at the
    shape's mean context to the uniform step at its longest."""
    prof = _steps_profile(per_row)
    prof["meta"]["cuda_graphs"] = graphs
    prof["decode_spread_step"] = {"16": spread_grid(model(_steps_profile(per_row)), lam)}
    return prof


def test_unequal_contexts_cost_what_the_spread_grid_measured():
    uni, m = model(synthetic_profile(steps=True)), model(_with_spread_grid(0.5))
    xa, xb, lam = m._lam
    assert np.allclose(lam[1:], 0.5)                       # recovered from the measured grid (n=1 has no spread)
    even = StepPlan(decode_group_ids=list(range(16)), decode_context_tokens=[700] * 16)
    assert m.step_time(even) == pytest.approx(uni.step_time(even), rel=1e-12)   # equal contexts: nothing added
    ctx = [100] * 15 + [2000]
    plan = StepPlan(decode_group_ids=list(range(16)), decode_context_tokens=ctx)
    lo = uni.decode_step_times(16, np.array([float(sum(ctx))]))[0]
    hi = uni.decode_step_times(16, np.array([16 * 2000.0]))[0]
    assert m.step_time(plan) == pytest.approx(lo + 0.5 * (hi - lo), rel=1e-9)
    none = model(_with_spread_grid(0.0))
    assert none.step_time(plan) == pytest.approx(lo, rel=1e-12)
    longer = StepPlan(decode_group_ids=list(range(16)), decode_context_tokens=[100] * 15 + [2048])
    assert m.step_time(longer) > m.step_time(plan)


def test_spread_fraction_comes_from_the_uniform_steps_timed_beside_it():
    """A spread grid with its own uniform-at-mean and uniform-at-longest steps prices unequal contexts
    from those three times, not from the interpolated uniform grid (which a coarse context axis bends)."""
    prof = _with_spread_grid(0.0)
    g = prof["decode_spread_step"]["16"]
    # same-run uniform steps 1 ms apart; the spread step 0.7 ms above its mean one: fraction 0.7
    g["mean_time_s"] = [[0.010] * len(g["max_ctx"]) for _ in g["batch"]]
    g["top_time_s"] = [[0.011] * len(g["max_ctx"]) for _ in g["batch"]]
    g["time_s"] = [[0.0107] * len(g["max_ctx"]) for _ in g["batch"]]
    m = model(prof)
    assert np.allclose(m._lam[2], 0.7)
    uni = model(synthetic_profile(steps=True))
    ctx = [100] * 15 + [2000]
    plan = StepPlan(decode_group_ids=list(range(16)), decode_context_tokens=ctx)
    lo = uni.decode_step_times(16, np.array([float(sum(ctx))]))[0]
    hi = uni.decode_step_times(16, np.array([16 * 2000.0]))[0]
    assert m.step_time(plan) == pytest.approx(lo + 0.7 * (hi - lo), rel=1e-9)
    g["top_time_s"][0][0] = g["mean_time_s"][0][0]          # no difference to split: fraction 0, never a NaN
    g["time_s"][1][1] = 0.0095                               # faster than uniform: clipped to 0
    lam = model(prof)._lam[2]
    assert lam[0, 0] == 0.0 and lam[1, 1] == 0.0 and np.isfinite(lam).all()
    g["mean_time_s"] = g["mean_time_s"][:-1]
    with pytest.raises(KvsimError, match="profile"):
        model(prof)


def test_decode_is_priced_at_the_engines_padded_graph_batch():
    graphs = [1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64]
    padded = model(_with_spread_grid(0.0, per_row=2e-5), decode_graph_batches=graphs)
    eager = model(_with_spread_grid(0.0, graphs=False, per_row=2e-5), decode_graph_batches=graphs)   # no graphs
    plain = model(_with_spread_grid(0.0, per_row=2e-5))
    ov = lambda n: float(np.interp(n, *plain.p.overhead))
    s = np.array([33 * 500.0])
    # 33 rows replay the 40-row graph: the 40-row step's time at the same total context, plus 33 rows' overhead
    assert padded.decode_step_times(33, s)[0] == pytest.approx(plain.decode_step_times(40, s)[0] - ov(40) + ov(33))
    assert padded.decode_step_times(40, s)[0] == plain.decode_step_times(40, s)[0]
    assert padded.decode_step_times(33, s)[0] > plain.decode_step_times(33, s)[0]
    assert eager.decode_step_times(33, s)[0] == plain.decode_step_times(33, s)[0]
    assert padded.decode_step_times(100, s)[0] == plain.decode_step_times(100, s)[0]   # past the graphs: eager


def test_prefill_step_priced_at_its_padded_graph_size_when_timed_between_decodes():
    """The engine replays a T-token prefill as the graph of the next captured size; a grid timed between
    decode steps is read there, an older back-to-back grid at T itself."""
    from kvsim.graph_sizes import prefill_token_sizes
    ladder = prefill_token_sizes(2048, "v1")
    plan = StepPlan(prefill_group_ids=[0], prefill_new_tokens=[1100], prefill_cached_tokens=[0])
    at = lambda t: StepPlan(prefill_group_ids=[0], prefill_new_tokens=[t], prefill_cached_tokens=[0])
    spaced = synthetic_profile(steps=True)
    spaced["meta"]["cuda_graphs"] = True
    spaced["prefill_step"]["16"]["timing"] = "between_decode_steps"
    old = json.loads(json.dumps(spaced))
    del old["prefill_step"]["16"]["timing"]
    m = model(spaced, prefill_graph_tokens=ladder)
    assert 1280 in ladder and 1100 not in ladder
    # 1,100 tokens replay the 1,280-token graph: that graph's step (one fresh prompt adds no attention term)
    assert m.step_time(plan) == pytest.approx(model(spaced).step_time(at(1280)), rel=1e-12)
    assert m.step_time(plan) > model(spaced).step_time(plan)
    assert model(old, prefill_graph_tokens=ladder).step_time(plan) == model(old).step_time(plan)
    assert m.step_time(at(1280)) == model(spaced).step_time(at(1280))          # a captured size: no padding
    many = StepPlan(prefill_group_ids=list(range(3)), prefill_new_tokens=[300, 400, 400], prefill_cached_tokens=[0] * 3)
    assert model(spaced, prefill_graph_tokens=ladder, prefill_graph_seqs=2).step_time(many) == \
        model(spaced).step_time(many)                                           # more prompts than rows: eager
    assert m.step_time(at(4000)) == model(spaced).step_time(at(4000))           # past the largest graph: eager


def test_prefill_groups_share_one_attention_launch():
    """A prefill of several groups runs one varlen attention launch a layer: each group adds its work
    above the grid's launch floor, not a launch of its own."""
    prof = synthetic_profile(steps=True)
    launch = 2e-4                                       # a per-launch cost the isolated grid points all carry
    g = prof["prefill_attn"]["16"]
    g["time_s"] = [[t + launch for t in row] for row in g["time_s"]]
    m = model(prof)
    one = StepPlan(prefill_group_ids=[0], prefill_new_tokens=[1024], prefill_cached_tokens=[0])
    four = StepPlan(prefill_group_ids=[0, 1, 2, 3], prefill_new_tokens=[256] * 4, prefill_cached_tokens=[0] * 4)
    work = lambda n: 1e-5 + n * (n / 2) * 1e-11          # the synthetic grid's attention work of a fresh n
    # four short causal triangles instead of one long, each above the floor (the 16-token point)
    want = m.L * (4 * (work(256) - work(16)) - (work(1024) - work(16)))
    rows = float(interp1(4.0, *m.p.overhead) - interp1(1.0, *m.p.overhead))     # per-row host overhead
    assert m.step_time(four) - m.step_time(one) == pytest.approx(want + rows, rel=1e-9)
    assert m.step_time(four) < m.step_time(one)         # less attention work, and no extra launches charged


def test_prefill_overhead_is_added_to_prefill_and_mixed_steps_only():
    base = synthetic_profile()
    extra = dict(base, prefill_overhead={"tokens": [16, 512], "time_s": [0.4e-3, 1.2e-3]})
    m0, m1 = model(base), model(extra)
    pre = StepPlan(prefill_group_ids=[0], prefill_new_tokens=[264], prefill_cached_tokens=[0])
    mix = StepPlan(prefill_group_ids=[0], prefill_new_tokens=[16], prefill_cached_tokens=[0],
                   decode_group_ids=[1, 2], decode_context_tokens=[300, 500])
    dec = StepPlan(decode_group_ids=[1, 2], decode_context_tokens=[300, 500])
    assert m1.step_time(pre) - m0.step_time(pre) == pytest.approx(0.8e-3)     # halfway between 16 and 512
    assert m1.step_time(mix) - m0.step_time(mix) == pytest.approx(0.4e-3)
    assert m1.step_time(dec) == m0.step_time(dec)


def test_the_first_step_after_idle_pays_the_wake_time(tmp_path):
    """Requests far apart reach an idle engine: each one's first step pays ``wake_overhead`` at its prompt,
    and only that step (TTFT and end-to-end latency move by exactly that); without the table nothing moves."""
    runs = {}
    for name, extra in (("plain", {}), ("wake", {"wake_overhead": {"tokens": [16, 512], "time_s": [0.5, 0.5]}})):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(dict(synthetic_profile(steps=True), **extra)))
        sc = kvsim.load_scenario({"model": "opt-13b", "gpu": "h100-80gb",
                                  "workload": {"dataset": "uniform", "prompt_len_range": [20, 200],
                                               "output_len_range": [4, 8], "arrival": "gamma", "cv": 0.01,
                                               "rate_req_s": 0.2, "num_requests": 12},
                                  "cost": {"model": "calibrated", "profile": str(path)}})
        runs[name] = (kvsim.simulate(sc, fast_forward=False), kvsim.simulate(sc))
    (plain, _), (wake, wake_ff) = runs["plain"], runs["wake"]
    assert wake.summary == wake_ff.summary
    a, b = plain.requests.sort_values("request_id"), wake.requests.sort_values("request_id")
    ttft = lambda r: (r.first_token_s - r.arrival_s).to_numpy()
    e2e = lambda r: (r.finish_s - r.arrival_s).to_numpy()
    assert ttft(b) - ttft(a) == pytest.approx([0.5] * 12)
    assert e2e(b) - e2e(a) == pytest.approx([0.5] * 12)


def test_wake_time_reads_its_own_table():
    base = synthetic_profile()
    m0 = model(base)
    m1 = model(dict(base, wake_overhead={"tokens": [16, 512], "time_s": [0.4e-3, 1.2e-3]}))
    pre = StepPlan(prefill_group_ids=[0], prefill_new_tokens=[264], prefill_cached_tokens=[0])
    dec = StepPlan(decode_group_ids=[1, 2], decode_context_tokens=[300, 500])
    assert m0.wake_time(pre) == 0.0 and m1.step_time(pre) == m0.step_time(pre)
    assert m1.wake_time(pre) == pytest.approx(0.8e-3) and m1.wake_time(dec) == pytest.approx(0.4e-3)


@pytest.mark.parametrize("ladder,size", [(None, 1152), ("v1", 1280), ("v2", 1152)])
def test_prefill_steps_priced_on_the_ladder_the_engine_captures(tmp_path, ladder, size):
    """runtime.cuda_graph_prefill_ladder picks the token counts the engine captures (default v2) and the
    simulator prices a step at that ladder's size; an unknown ladder is refused with the field."""
    from kvsim.build import make_cost
    from kvsim.catalogue import get_gpu, get_model
    data = synthetic_profile(steps=True)
    data["meta"]["cuda_graphs"] = True
    data["prefill_step"]["16"]["timing"] = "between_decode_steps"
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    sets = ["cost.model=calibrated", f"cost.profile={path}", "model=opt-13b"]
    sc = kvsim.load_scenario("scenarios/examples/quickstart.yaml",
                             sets + ([f"runtime.cuda_graph_prefill_ladder={ladder}"] if ladder else []))
    cost = make_cost(sc, get_model(sc.model), get_gpu(sc.gpu))
    at = lambda t: StepPlan(prefill_group_ids=[0], prefill_new_tokens=[t], prefill_cached_tokens=[0])
    assert cost.step_time(at(1100)) == pytest.approx(cost.step_time(at(size)), rel=1e-12)
    assert cost.step_time(at(1100)) < cost.step_time(at(size + 1))
    with pytest.raises(KvsimError, match="cuda_graph_prefill_ladder"):
        kvsim.load_scenario("scenarios/examples/quickstart.yaml", sets + ["runtime.cuda_graph_prefill_ladder=v9"])


def test_replay_prices_a_saved_run_on_the_ladder_it_captured():
    from kvsim.graph_sizes import ladder_of, prefill_token_sizes
    from kvsim.validate import replay_sets
    assert ladder_of(prefill_token_sizes(2048, "v1")) == "v1" and ladder_of(prefill_token_sizes(512, "v2")) == "v2"
    assert ladder_of([16, 40]) is None and ladder_of([]) is None
    stepped = ["runtime.async_scheduling=false", "runtime.async_prompt_steps=false"]   # runs before the settings
    unrouted = ["runtime.cuda_graph_prefill_route=false", "runtime.cuda_graph_prefill_skip=[]"] + stepped
    assert replay_sets({"engine": {"cuda_graph_prefill_tokens": prefill_token_sizes(4096, "v1")}}) == \
        ["runtime.cuda_graph_prefill_ladder=v1"] + unrouted
    assert replay_sets({"engine": {"cuda_graph_prefill_tokens": []}}) == unrouted and replay_sets({}) == unrouted
    overlapped = {"scenario": {"runtime": {"async_scheduling": True, "async_prompt_steps": True}}}
    assert replay_sets(overlapped)[-2:] == ["runtime.async_scheduling=true", "runtime.async_prompt_steps=true"]
    sc = kvsim.load_scenario("scenarios/examples/quickstart.yaml", replay_sets({"scenario": {"runtime": {
        "async_scheduling": True}}}))        # overlapped before prompt steps flew: decode steps only
    assert sc.runtime.async_scheduling is True and sc.runtime.async_prompt_steps is False


def test_live_validation_runs_the_engine_its_profile_measured():
    from kvsim.validate import profile_sets
    assert profile_sets({}) == ["runtime.cuda_graph_prefill_ladder=v1", "runtime.mixed_decode_kernel=false",
                                "runtime.cuda_graph_prefill_route=false", "runtime.async_scheduling=false",
                                "runtime.swap_staged=false", "runtime.async_prompt_steps=false",
                                "runtime.pad_logits=false", "runtime.mixed_decode_split=false"]
    assert profile_sets(None) == profile_sets({})
    assert profile_sets({"prefill_ladder": "v2", "mixed_decode_kernel": True}) == \
        ["runtime.cuda_graph_prefill_ladder=v2", "runtime.mixed_decode_kernel=true",
         "runtime.cuda_graph_prefill_route=false", "runtime.async_scheduling=false", "runtime.swap_staged=false",
         "runtime.async_prompt_steps=false", "runtime.pad_logits=false", "runtime.mixed_decode_split=false"]
    # a profile whose mixed steps cut their long rows (kvsim calibrate --split-kv) runs the engine so
    sc = kvsim.load_scenario("scenarios/examples/quickstart.yaml", profile_sets({"mixed_decode_split": True}))
    assert sc.runtime.mixed_decode_split is True
    # profiles from before 2026-12-07's padded LM head ran it at the sampled rows; newer ones record it
    assert "runtime.pad_logits=true" in profile_sets({"pad_logits": True})
    assert "runtime.async_scheduling=true" in profile_sets({"async_scheduling": True})
    # an overlapped profile from before prompt steps flew (2026-12-06) keeps them stepped; a newer one lets them fly
    assert "runtime.async_prompt_steps=false" in profile_sets({"async_scheduling": True})
    assert "runtime.async_prompt_steps=true" in profile_sets({"async_scheduling": True, "async_prompt_steps": True})
    # set even when off: a stepped profile keeps a stepped engine whatever the engine's default becomes
    assert "runtime.async_scheduling=false" in profile_sets({"async_scheduling": False})
    assert "runtime.swap_staged=true" in profile_sets({"swap_staged": True})     # swaps as the profile timed them
    sc = kvsim.load_scenario("scenarios/examples/quickstart.yaml", profile_sets({}))
    assert sc.runtime.async_scheduling is False and sc.runtime.swap_staged is False
    sc = kvsim.load_scenario("scenarios/examples/quickstart.yaml", profile_sets({"swap_staged": True}))
    assert sc.runtime.swap_staged is True
    sc = kvsim.load_scenario("scenarios/examples/quickstart.yaml", profile_sets({}) + ["runtime.mixed_decode_kernel=true"])
    assert sc.runtime.cuda_graph_prefill_ladder == "v1" and sc.runtime.mixed_decode_kernel      # the user's --set wins


def test_above_the_serving_rows_the_spread_grid_prices_unequal_contexts():
    """decode_serving fitted up to 16 rows: at 64 rows the spread grid's own fraction (measured at that batch)
    prices the unequal contexts, with the largest row's extra overhead held; inside the rows, the fitted
    fraction does."""
    prof = _with_spread_grid(0.25)
    grid_only = model(prof)
    served = model(dict(prof, decode_serving={"16": {"num_seqs": [4, 16], "extra_s": [1e-3, 2e-3],
                                                     "spread_frac": [0.9, 0.9]}}))
    ctx = [100] * 63 + [2000]
    big = StepPlan(decode_group_ids=list(range(64)), decode_context_tokens=ctx)
    assert served.step_time(big) == pytest.approx(grid_only.step_time(big) + 2e-3, rel=1e-9)
    small = StepPlan(decode_group_ids=list(range(16)), decode_context_tokens=[100] * 15 + [2000])
    uni = model(_steps_profile(0.0))
    lo = uni.decode_step_times(16, np.array([1500.0 + 2000.0]))[0]
    hi = uni.decode_step_times(16, np.array([16 * 2000.0]))[0]
    assert served.step_time(small) == pytest.approx(lo + 2e-3 + 0.9 * (hi - lo), rel=1e-9)


def test_between_the_last_serving_row_and_the_grids_next_batch_the_fraction_moves_linearly():
    """Fitted up to 16 rows (0.9), the spread grid at 0.25 with its next batch at 64: at 40 rows the fraction is
    halfway (0.575), so the price does not jump where the fitted rows end."""
    served = model(dict(_with_spread_grid(0.25), decode_serving={"16": {"num_seqs": [4, 16], "extra_s": [1e-3, 2e-3],
                                                                         "spread_frac": [0.9, 0.9]}}))
    ctx = [100] * 39 + [2000]
    sums, top = np.array([float(sum(ctx))]), np.array([2000.0])
    grid, unit = served.decode_grid_and_spread(40, sums, top)
    over = float(np.interp(40.0, *served.p.overhead)) + 2e-3
    assert unit[0] > 0
    assert served.decode_step_times(40, sums, top)[0] == pytest.approx(grid[0] + over + 0.575 * unit[0], rel=1e-9)
    near = served.decode_step_times(17, np.array([100.0 * 16 + 2000]), top)[0]
    g17, u17 = served.decode_grid_and_spread(17, np.array([100.0 * 16 + 2000]), top)
    frac17 = 0.9 + (1 / 48) * (0.25 - 0.9)
    assert near == pytest.approx(g17[0] + float(np.interp(17.0, *served.p.overhead)) + 2e-3 + frac17 * u17[0], rel=1e-9)


def test_a_profile_written_part_way_loads_and_says_so(tmp_path):
    """kvsim calibrate writes its profile after the grids (meta.partial) and again at the end: a calibration
    stopped in between leaves a profile the simulator prices with, and a run on it gets a note."""
    pytest.importorskip("torch")
    from kvsim.build import partial_note, setup_run
    from kvsim.calibrate.profile import write_profile
    path = tmp_path / "p.json"
    prof = synthetic_profile()
    write_profile(prof, path, partial="the serving fit")
    doc = json.loads(path.read_text())
    assert doc["meta"]["partial"] == "calibration stopped before the serving fit" and "partial" not in prof["meta"]
    sc = kvsim.load_scenario({"name": "p", "model": "opt-13b", "gpu": "a100-40gb", "seed": 0,
                              "cost": {"model": "calibrated", "profile": str(path)},
                              "workload": {"dataset": "uniform", "prompt_len_range": [20, 40],
                                           "output_len_range": [2, 4], "num_requests": 3, "arrival": "burst"}})
    assert "stopped before the serving fit" in partial_note(sc, setup_run(sc).cost)
    assert kvsim.simulate(sc).summary["requests_finished"] == 3
    write_profile(prof, path)                          # the final write drops the mark
    assert "partial" not in json.loads(path.read_text())["meta"] and partial_note(sc, setup_run(sc).cost) is None
    assert not list(tmp_path.glob("*.tmp"))


def test_a_profile_whose_serving_fit_was_cut_says_so():
    """A serving fit a time limit cut short is recorded (meta.serving_fit_skipped) and every run on the profile
    says how many runs it skipped and from which row its decode steps are extrapolated."""
    from kvsim.build import partial_note, setup_run
    root = Path(__file__).resolve().parents[1]
    path = root / "calibrate" / "profiles" / "H200" / "opt-13b.json"
    assert json.loads(path.read_text())["meta"]["serving_fit_skipped"]["runs"] == 11
    sc = kvsim.load_scenario({"name": "p", "model": "opt-13b", "gpu": "h200-141gb", "seed": 0,
                              "cost": {"model": "calibrated", "profile": str(path)},
                              "workload": {"dataset": "uniform", "prompt_len_range": [20, 40],
                                           "output_len_range": [2, 4], "num_requests": 3, "arrival": "burst"}})
    note = partial_note(sc, setup_run(sc).cost)
    assert "skipped 11 of 18 engine runs" in note and "above 32 rows" in note and "--resume" in note
    llama = kvsim.load_scenario({**sc.to_dict(), "model": "llama-3-8b", "cost": {
        "model": "calibrated", "profile": str(root / "calibrate" / "profiles" / "H200" / "llama-3-8b.json")}})
    assert partial_note(llama, setup_run(llama).cost) is None          # its serving fit ran whole


@settings(max_examples=200, deadline=None)
@given(xs=st.lists(st.integers(-10**6, 10**6), min_size=1, max_size=8, unique=True),
       x=st.one_of(st.floats(-2e6, 2e6), st.lists(st.floats(-2e6, 2e6), max_size=6)), seed=st.integers(0, 99))
def test_interp1_is_interp_with_the_last_slope_above(xs, x, seed):
    """``interp1``: ``np.interp`` at and below the last point, the last segment's line above it — the same floats
    and types as that rule applied to every value (its shortcut skips the line where nothing lies above)."""
    xs = np.sort(np.array(xs, dtype=np.float64))
    ys = np.random.default_rng(seed).normal(size=len(xs)) * 1e3
    xa = np.asarray(x, dtype=np.float64)
    want = np.interp(xa, xs, ys)
    if len(xs) > 1:
        slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
        want = np.where(xa > xs[-1], ys[-1] + slope * (xa - xs[-1]), want)
    got = interp1(x, xs, ys)
    assert type(got) is type(want) and np.shape(got) == np.shape(want)
    assert np.asarray(got).tobytes() == np.asarray(want).tobytes()


@pytest.mark.parametrize("steps", [False, True])
def test_prefill_step_prices_kept_per_prompt_shape_equal_fresh_ones(steps):
    """Prefill-only steps are priced once per (new tokens, cached tokens) and kept: the kept price is the one a
    fresh model gives, whatever came between (copies and swaps are added on top, not kept), and the memo
    stays bounded."""
    rng = np.random.default_rng(3)
    warm = model(synthetic_profile(steps=steps))
    warm.PREFILL_MEMO = 8
    plans = []
    for _ in range(60):
        g = int(rng.integers(1, 4))
        new = [int(x) for x in rng.integers(1, 1500, g)]
        cached = [int(x) for x in rng.choice([0, 0, 128, 512], g)]
        p = StepPlan(prefill_group_ids=list(range(g)), prefill_new_tokens=new, prefill_cached_tokens=cached)
        if rng.random() < 0.3:
            p.copy_pairs.extend([(1, 2)] * int(rng.integers(1, 5)))
        plans.append(p)
    plans += [StepPlan(prefill_group_ids=[0], prefill_new_tokens=[512], prefill_cached_tokens=[c]) for c in (0, 512)]
    first = [warm.step_time(p) for p in plans + plans[::-1]]
    fresh = [model(synthetic_profile(steps=steps)).step_time(p) for p in plans + plans[::-1]]
    assert first == fresh
    assert 0 < len(warm._prefill_memo) <= 8
    plain = StepPlan(prefill_group_ids=[0], prefill_new_tokens=[700], prefill_cached_tokens=[0])
    copied = StepPlan(prefill_group_ids=[0], prefill_new_tokens=[700], prefill_cached_tokens=[0],
                      copy_pairs=[(1, 2), (3, 4)])
    assert warm.step_time(copied) > warm.step_time(plain) == model(synthetic_profile(steps=steps)).step_time(plain)


@pytest.mark.parametrize("form", ["fraction", "grid"])
def test_decode_runs_priced_in_one_interpolation_equal_each_step_priced(form):
    """A decode run's steps under the serving fit (its fitted fraction, or the spread grid's in the fit's "grid"
    form) are priced with both reads of the uniform grid in one interpolation: the same floats, bit for bit, as
    ``decode_step_times`` on the run's context sums and longest contexts, across rows, contexts and lengths (below,
    inside and past the grids), and the fused form is really taken."""
    from kvsim.cost.base import CostModel
    fit = {"num_seqs": [4, 16], "extra_s": [1e-3, 2e-3]}
    fit.update({"spread_frac": [0.9, 0.7]} if form == "fraction" else {"spread": "grid"})
    m = model(dict(_with_spread_grid(0.25), decode_serving={"16": fit}))
    rng = np.random.default_rng(11)
    taken = 0
    for _ in range(300):           # (the fitted fraction holds up to the fit's last row, 16: most runs there)
        n, steps = int(rng.integers(1, 24 if form == "fraction" else 300)), int(rng.integers(1, 90))
        mean = int(rng.integers(1, 5000))
        top = mean + int(rng.integers(0, 3000))
        fused = m._run_times_fused(n, n * mean, top, steps)
        want = CostModel.decode_run_times(m, n, n * mean, top, steps)
        assert m.decode_run_times(n, n * mean, top, steps) == want
        if fused is not None:
            taken += 1
            assert fused == want
    assert taken > 100


def test_decode_steps_below_the_grids_first_context_go_on_along_its_first_slope():
    """A decode step reads its KV, linear in the context: below the whole-step grid's first context (128 tokens
    here, as on the H200 profiles) its price goes on falling with the grid's first segment, down to what that
    segment says at context 0, not held at the first context's; a first segment that does not rise is held."""
    prof = synthetic_profile(steps=True)
    g = prof["decode_step"]["16"]
    b, (c0, c1) = g["batch"][2], g["ctx"][:2]
    t0, t1 = g["time_s"][2][:2]
    m = model(prof)
    over = m.decode_step_times(b, np.array([b * float(c0)]))[0] - t0      # what the model adds to the grid's step
    slope = (t1 - t0) / (c1 - c0)
    assert slope > 0
    for c in (1.0, c0 / 4, c0 / 2, c0 - 1):
        got = m.decode_step_times(b, np.array([b * c]))[0] - over
        assert got == pytest.approx(t0 - slope * (c0 - c), rel=1e-12)
        assert 0 < got < t0
    at = m.decode_step_times(b, np.array([b * float(c), b * float(c0), b * float(c1)]))
    assert at[1] - over == pytest.approx(t0, rel=1e-12) and at[2] - over == pytest.approx(t1, rel=1e-12)
    for row in g["time_s"]:                      # a first segment that falls: held at the first context
        row[1] = row[0] * 0.99
    flat = model(prof)
    assert flat.decode_step_times(b, np.array([b * c0 / 2]))[0] == flat.decode_step_times(b, np.array([b * float(c0)]))[0]
    g["time_s"] = [[1e-4, 1.0, 2.0] for _ in g["batch"]]      # a steep first segment: never below 0 at context 0
    steep = model(prof)
    assert steep.decode_step_times(b, np.array([1.0]))[0] >= steep.decode_step_times(b, np.array([0.0]))[0] >= 0


def test_decode_steps_below_128_tokens_are_priced_from_measured_short_columns():
    """A grid measured at 32 and 64 tokens a row too (the calibration's since 2026-12-07) prices short steps from
    those columns: a step at 48 or 96 tokens lies between its measured neighbours, not on the line the 128-token
    column's first segment would carry down, and the curve goes on below 32 along the 32-64 segment."""
    prof = synthetic_profile(steps=True)
    g = prof["decode_step"]["16"]
    long = model(prof)
    i = 2
    b = g["batch"][i]
    t128 = g["time_s"][i][0]
    carried = long.decode_step_times(b, np.array([b * 48.0, b * 96.0]))      # 128's slope carried down
    over = long.decode_step_times(b, np.array([b * 128.0]))[0] - t128
    floor = t128 * 0.97                          # measured: nearly flat below 128 (a latency floor)
    g["ctx"] = [32, 64] + g["ctx"]
    g["time_s"] = [[r[0] * 0.97, r[0] * 0.975] + r for r in g["time_s"]]
    short = model(prof)
    at = short.decode_step_times(b, np.array([b * 48.0, b * 96.0, b * 16.0])) - over
    assert at[0] == pytest.approx(floor + 0.5 * (t128 * 0.975 - floor), rel=1e-12)
    assert at[1] == pytest.approx(t128 * 0.975 + (96 - 64) / 64 * (t128 - t128 * 0.975), rel=1e-12)
    assert at[2] == pytest.approx(floor - 16 * (t128 * 0.975 - floor) / 32, rel=1e-12)
    assert not np.allclose(carried - over, at[:2], rtol=1e-6)   # the line carried down from 128 says otherwise


def test_decode_steps_with_copies_or_swaps_cost_the_decode_step_plus_the_transfers():
    """A decode step that also copies blocks (copy-on-write) or swaps is the same decode step with the transfers
    on top: its serving terms and unequal contexts included, as in a decode step alone (they used to be dropped,
    pricing beam search's copy steps 5-8% fast on the H200 OPT-13B and Llama-3-8B traces)."""
    fit = {"num_seqs": [4, 16], "extra_s": [1e-3, 2e-3], "spread": "grid"}
    m = model(dict(_with_spread_grid(0.25), decode_serving={"16": fit}))
    ctx = [300, 900, 1500, 2000, 120, 640]
    alone = StepPlan(decode_group_ids=list(range(6)), decode_context_tokens=ctx)
    base = m.step_time(alone)
    assert base == m.decode_step_times(6, np.array([float(sum(ctx))]), np.array([2000.0]))[0]
    copies = StepPlan(decode_group_ids=list(range(6)), decode_context_tokens=ctx, copy_pairs=[(1, 2), (3, 4)])
    assert m.step_time(copies) == pytest.approx(base + m.copy_time(2, 0), rel=1e-12)
    swaps = StepPlan(decode_group_ids=list(range(6)), decode_context_tokens=ctx, swap_out=[(5, 0)] * 3,
                     swap_in=[(1, 7)] * 2)
    assert m.step_time(swaps) == pytest.approx(base + m.swap_time(3, 0) + m.swap_time(2, 0), rel=1e-12)
    beams = StepPlan(decode_group_ids=list(range(6)), decode_context_tokens=ctx, copy_pairs=[(1, 2)], beam_rows=6)
    assert m.step_time(beams) == pytest.approx(base + m.copy_time(1, 0) + m.sampling_extra(beams), rel=1e-12)
