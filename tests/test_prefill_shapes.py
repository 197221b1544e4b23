"""Multi-prompt and cached-context prefill grids: measured on CPU with a fake timer, priced by the
calibrated cost model (kvsim.calibrate.prefill_grids, kvsim.cost.prefill_shapes)."""
from __future__ import annotations

import pytest

from kvsim.calibrate.prefill_grids import cached_axes, time_prefill_grids
from kvsim.core.plan import StepPlan
from kvsim.cost.calibrated import CalibratedCostModel
from kvsim.cost.prefill_shapes import attention_pairs, pair_cost
from kvsim.cost.profile import Profile, interp1
from tests.profile_factory import synthetic_profile

KAPPA = 3e-12          # seconds per query-key pair of a whole step in the fake card below


def fake_step(prefills):
    """A card whose prefill step costs a floor, a per-token term and a per-pair term (each prompt adds
    0.2 ms of its own, so several prompts are not the same as one long one)."""
    new = [n for n, _ in prefills]
    return 0.01 + 2e-5 * sum(new) + 2e-4 * len(new) + KAPPA * attention_pairs(new, [c for _, c in prefills])


def test_pairs_count_the_causal_mask_and_the_cached_context():
    assert attention_pairs([1], [0]) == 1
    assert attention_pairs([4], [0]) == 10                 # 1 + 2 + 3 + 4
    assert attention_pairs([4], [6]) == 10 + 24
    assert attention_pairs([2, 3], [0, 1]) == 3 + 6 + 3


def test_cached_axes_fit_the_models_longest_sequence():
    for max_ctx in (2048, 1024, 600, 100):
        new, cached = cached_axes([16, 64, 256, 1024], [0, 256, 1024], max_ctx)
        assert cached[0] == 0 and all(n + c <= max_ctx for n in new for c in cached)
        assert len(new) >= 2 and new == sorted(set(new))


def test_grids_and_pair_cost_recover_the_card():
    calls = []
    batch, cached = time_prefill_grids(lambda p: calls.append(p) or fake_step(p), 2048)
    assert len(calls) == len(batch["seqs"]) * len(batch["tokens"]) + len(cached["tokens"]) * len(cached["cached"])
    assert all(len(p) in batch["seqs"] for p in calls[:len(batch["seqs"]) * len(batch["tokens"])])
    prof = Profile(synthetic_profile(steps=True))
    grid = prof._grid(cached, "tokens", "cached")
    assert pair_cost(grid) == pytest.approx(KAPPA, rel=1e-9)
    assert time_prefill_grids(fake_step, 2048, batch=None, cached=None) == (None, None)


def _model(with_grids: bool) -> CalibratedCostModel:
    data = synthetic_profile(steps=True)
    if with_grids:
        batch, cached = time_prefill_grids(fake_step, 2048)
        data["prefill_batch_step"] = {"16": batch}
        data["prefill_cached_step"] = {"16": cached}
    return CalibratedCostModel(Profile(data), model_name="OPT-13B", dtype="fp16", block_size_tokens=16)


def _prefill(new, cached=None) -> StepPlan:
    return StepPlan(prefill_group_ids=list(range(len(new))), prefill_new_tokens=list(new),
                    prefill_cached_tokens=list(cached or [0] * len(new)))


def test_several_prompts_are_priced_from_their_own_grid():
    cm, old = _model(True), _model(False)
    for s, m in ((4, 128), (32, 256), (8, 512)):           # grid points: the measured step + per-step overhead
        over = float(interp1(float(s), *cm.p.overhead))
        assert cm.step_time(_prefill([m] * s)) == pytest.approx(fake_step([(m, 0)] * s) + over, rel=1e-9)
    # unequal prompts of the same total cost their extra pairs at the measured pair cost
    eq, uneq = cm.step_time(_prefill([128] * 4)), cm.step_time(_prefill([32, 32, 32, 416]))
    assert uneq - eq == pytest.approx(KAPPA * (attention_pairs([32, 32, 32, 416], [0] * 4)
                                               - attention_pairs([128] * 4, [0] * 4)), rel=1e-6)
    # the single-prompt grid of the older profile prices the same step differently
    assert old.step_time(_prefill([256] * 32)) != pytest.approx(cm.step_time(_prefill([256] * 32)), rel=1e-3)


def _graph_model(stair: bool) -> CalibratedCostModel:
    """The fake card's grids on a profile timed at the engine's graph sizes (every 32 tokens to 2,048, so the
    engine pads to them); with ``stair`` its one-prompt steps at 288-480 tokens cost 0.5 ms more, a slow GEMM
    between the multi-prompt grid's points (256 and 512 tokens in all)."""
    data = synthetic_profile(steps=True)
    data["meta"]["cuda_graphs"] = True
    sizes = list(range(32, 2049, 32))
    slow = lambda t: 5e-4 if stair and 256 < t < 512 else 0.0   # noqa: E731  (the grid stays monotone)
    data["prefill_step"]["16"] = {"tokens": sizes, "time_s": [fake_step([(t, 0)]) + slow(t) for t in sizes],
                                  "timing": "between_decode_steps"}
    batch, cached = time_prefill_grids(fake_step, 2048)
    data["prefill_batch_step"] = {"16": batch}
    data["prefill_cached_step"] = {"16": cached}
    return CalibratedCostModel(Profile(data), model_name="OPT-13B", dtype="fp16", block_size_tokens=16,
                               prefill_graph_tokens=sizes)


def test_several_prompts_follow_the_one_prompt_grids_staircase_between_the_batch_grids_points():
    """A step of several prompts is one graph of their padded sum: between the multi-prompt grid's points it
    follows the one-prompt grid's shape (here 0.5 ms slower at 288-480 tokens) plus the multi-prompt grid's excess
    over one prompt; at the multi-prompt grid's own points it is that grid."""
    flat, stair = _graph_model(False), _graph_model(True)
    for s, m in ((2, 128), (4, 128), (2, 256), (8, 64)):       # the multi-prompt grid's points: measured as is
        over = float(interp1(float(s), *stair.p.overhead))
        assert stair.step_time(_prefill([m] * s)) == pytest.approx(fake_step([(m, 0)] * s) + over, rel=1e-9)
    two, three = _prefill([190, 200]), _prefill([100, 140, 150])        # 390 tokens in all: padded to 416
    assert stair.step_time(two) - flat.step_time(two) == pytest.approx(5e-4, rel=1e-6)
    assert stair.step_time(three) - flat.step_time(three) == pytest.approx(5e-4, rel=1e-6)
    # and the flat card: one prompt of the padded sum, its per-prompt cost and its pairs, as the fake card says
    # (the excess read along the sum between the grid's points is the fake card's linear per-prompt term)
    over = float(interp1(2.0, *flat.p.overhead))
    want = fake_step([(190, 0), (200, 0)]) + 2e-5 * (416 - 390) + over
    assert flat.step_time(two) == pytest.approx(want, rel=1e-3)


def test_cached_context_adds_its_pairs_at_the_measured_pair_cost():
    cm = _model(True)
    fresh, hit = cm.step_time(_prefill([256])), cm.step_time(_prefill([256], [768]))
    assert hit - fresh == pytest.approx(KAPPA * 256 * 768, rel=1e-6)
    one = cm.step_time(_prefill([256]))                      # one fresh prompt: the single-prompt grid, unchanged
    assert one == pytest.approx(_model(False).step_time(_prefill([256])), rel=1e-12)


def test_measure_steps_times_the_new_grids_on_the_engines_paths():
    """The calibration's own code path on a tiny model on the CPU (timer replaced): both tables come back
    with the axes asked for, every point timed between decode steps."""
    torch = pytest.importorskip("torch")
    from kvsim.calibrate import measure as M
    from kvsim.calibrate import steps as S
    from kvsim.catalogue import get_model
    from kvsim.engine.models import build_model
    seen = []

    def fake_between(fn, between, reps=10):
        between()
        fn()
        seen.append(1)
        return 1e-3 * len(seen)
    mp = pytest.MonkeyPatch()
    mp.setattr(M, "_bench", lambda fn, warmup=10, rep=40, min_samples=12: (fn(), 1e-3)[1])
    mp.setattr(M, "_bench_between", fake_between)
    mp.setattr(M, "BACKEND", "torch")
    refs = []                                # a card's reference step, as on CUDA: timed again at checkpoints
    mp.setattr(M, "_card_reference", lambda *a: refs.append(1) or {"time_s": 0.005 + 1e-4 * len(refs)})
    spec = get_model("tiny-opt")
    model = build_model(spec, dtype=torch.float32, device=torch.device("cpu"), weights="dummy")
    grid = {"batch": [1, 2], "ctx": [32], "spread": [32], "prefill": [16, 32], "mix": None,
            "prefill_batch": ([2, 3], [8, 24]), "prefill_cached": ([8, 16], [0, 32])}
    try:
        out = S.measure_steps(model, 4, torch.device("cpu"), cuda_graphs=False, max_context_len=128, grid=grid)
    finally:
        mp.undo()
    batch, cached, ref = out[5], out[6], out[4]
    assert ref["time_s"] == pytest.approx(0.0051) and ref["grid_timing_s"] == pytest.approx(1e-3)
    assert ref["checkpoints_s"] == pytest.approx({"after_decode_grid": 0.0052, "after_prefill_grid": 0.0053,
                                                  "end": 0.0054})
    assert batch["seqs"] == [2, 3] and batch["tokens"] == [8, 24] and len(batch["time_s"]) == 2
    assert cached["tokens"] == [8, 16] and cached["cached"] == [0, 32]
    assert all(t > 0 for row in batch["time_s"] + cached["time_s"] for t in row)


def test_a_lone_prompt_after_cached_tokens_pays_the_grids_own_growth():
    """A card where a context costs a latency term independent of the new tokens (few programs walk it):
    a lone prompt pays what the grid measured at its shape; in a step with other prompts the same context
    is priced by pairs (the programs then run side by side)."""
    def latency_card(prefills):
        return fake_step(prefills) + 2e-6 * max(c for _, c in prefills)
    batch, cached = time_prefill_grids(latency_card, 2048)
    data = synthetic_profile(steps=True)
    data["prefill_batch_step"], data["prefill_cached_step"] = {"16": batch}, {"16": cached}
    cm = CalibratedCostModel(Profile(data), model_name="OPT-13B", dtype="fp16", block_size_tokens=16)
    lone = cm.step_time(_prefill([64], [1024])) - cm.step_time(_prefill([64]))
    assert lone == pytest.approx(KAPPA * 64 * 1024 + 2e-6 * 1024, rel=1e-6)
    two = cm.step_time(_prefill([64, 64], [1024, 0])) - cm.step_time(_prefill([64, 64]))
    assert two == pytest.approx(cm._shapes.kappa * 64 * 1024, rel=1e-6)
    assert lone > 2 * two
    # a chunk after cached tokens beside decode rows (chunked prefill) walks its context in its own launch too
    def mixed(cached):
        return StepPlan(prefill_group_ids=[0], prefill_new_tokens=[64], prefill_cached_tokens=[cached],
                        decode_group_ids=[1, 2, 3], decode_context_tokens=[300, 500, 700])
    assert cm.step_time(mixed(1024)) - cm.step_time(mixed(0)) == pytest.approx(lone, rel=1e-6)


def test_mixed_steps_are_timed_between_decode_steps():
    """Mixed steps are timed as prefill steps are, each after two decode steps (back to back, long chunks held
    the card at its power limit), and the table says so; the calibration's path on a tiny model on the CPU."""
    torch = pytest.importorskip("torch")
    from kvsim.calibrate import measure as M
    from kvsim.calibrate import steps as S
    from kvsim.catalogue import get_model
    from kvsim.engine.models import build_model
    calls = {"between": 0, "mixed_back_to_back": 0}

    def fake_between(fn, between, reps=10):
        between()
        fn()
        calls["between"] += 1
        return 1e-3 * calls["between"]
    mp = pytest.MonkeyPatch()
    mp.setattr(M, "_bench", lambda fn, warmup=10, rep=40, min_samples=12: (fn(), 1e-3)[1])
    mp.setattr(M, "_bench_between", fake_between)
    mp.setattr(M, "BACKEND", "torch")
    mp.setattr(M, "_card_reference", lambda *a: None)
    model = build_model(get_model("tiny-opt"), dtype=torch.float32, device=torch.device("cpu"), weights="dummy")
    base = {"batch": [1, 2], "ctx": [32], "spread": [32], "prefill": [16, 32], "prefill_batch": None,
            "prefill_cached": None}
    try:
        S.measure_steps(model, 4, torch.device("cpu"), cuda_graphs=False, max_context_len=128, grid=dict(base, mix=None))
        without = calls["between"]
        out = S.measure_steps(model, 4, torch.device("cpu"), cuda_graphs=False, max_context_len=128,
                              grid=dict(base, mix=([1, 2], [16, 32], [8])))
    finally:
        mp.undo()
    mixed = out[3]
    assert calls["between"] == 2 * without + 2 * 2 * 1      # the prefill points again, then every mixed point
    assert mixed["timing"] == "between_decode_steps" and mixed["chunk"] == [8]
    assert [[len(r) for r in plane] for plane in mixed["time_s"]] == [[1, 1], [1, 1]]


def test_a_block_size_without_the_cached_grid_takes_the_nearest_sizes_pair_cost():
    """A merged profile with the shape grids at block 16 only: block 32 prices cached context and several
    prompts by block 16's pair cost, not by the launch-bound per-layer kernel grid (which adds a launch floor
    per extra prompt); a block size with its own grid keeps it."""
    from kvsim.cost.prefill_shapes import nearest_size
    assert nearest_size([16, 64], 32) == 16 and nearest_size([16, 128], 64) == 128 and nearest_size([], 8) is None
    assert nearest_size([8, 32], 16) == 8          # a tie on the log scale takes the smaller size
    data = synthetic_profile(steps=True, block_sizes=(16, 32))
    batch, cached = time_prefill_grids(fake_step, 2048)
    data["prefill_batch_step"], data["prefill_cached_step"] = {"16": batch}, {"16": cached}
    for row in data["prefill_attn"]["32"]["time_s"]:      # a launch-bound kernel grid: 300 us whatever the shape
        row[:] = [3e-4] * len(row)
    data["prefill_attn"]["32"]["time_s"][0][0] = 1e-4
    cm = CalibratedCostModel(Profile(data), model_name="OPT-13B", dtype="fp16", block_size_tokens=32)
    assert cm._shapes.cached_from == 16 and cm._shapes.kappa == pytest.approx(KAPPA, rel=1e-9)
    assert cm._shapes.batch_grid is None
    one, seven = cm.step_time(_prefill([700])), cm.step_time(_prefill([100] * 7))
    rows = float(interp1(7.0, *cm.p.overhead)) - float(interp1(1.0, *cm.p.overhead))     # per-row step overhead
    assert seven - one == pytest.approx(rows + KAPPA * (attention_pairs([100] * 7, [0] * 7)
                                                        - attention_pairs([700], [0])), rel=1e-6)
    hit = cm.step_time(_prefill([256], [768])) - cm.step_time(_prefill([256]))
    assert hit == pytest.approx(cm._shapes.cached_growth(256, 768), rel=1e-9) and hit > 0
    own = CalibratedCostModel(Profile(data), model_name="OPT-13B", dtype="fp16", block_size_tokens=16)
    assert own._shapes.cached_from == 16 and own._shapes.batch_grid is not None
