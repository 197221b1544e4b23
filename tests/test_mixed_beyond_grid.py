"""Mixed steps with a chunk beyond the profile's largest measured chunk (``kvsim/cost/step_grids.py``): one growth
per chunk token for every decode row count, so more rows never cost less and the grid's inside is untouched."""
from __future__ import annotations

from pathlib import Path

import pytest

from kvsim.core.plan import StepPlan
from kvsim.cost.calibrated import CalibratedCostModel, load_profile

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"llama-3-8b": "Llama-3-8B", "opt-13b": "OPT-13B"}


def cost(name: str) -> CalibratedCostModel:
    return CalibratedCostModel(load_profile(str(ROOT / "calibrate" / "profiles" / "H200" / f"{name}.json")),
                               model_name=MODELS[name], dtype="fp16", block_size_tokens=16)


def mixed(rows: int, chunk: int, ctx: int = 1024) -> StepPlan:
    return StepPlan(prefill_group_ids=[10_000], prefill_new_tokens=[chunk], prefill_cached_tokens=[0],
                    decode_group_ids=list(range(rows)), decode_context_tokens=[ctx] * rows)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_more_rows_or_more_chunk_never_cost_less_past_the_grid(name):
    c = cost(name)
    top = int(c._mix[2][-1])
    for chunk in (top, top + 256, 2 * top, 4096):
        prices = [c.step_time(mixed(n, chunk)) for n in (1, 16, 32, 64, 96, 128, 192, 256)]
        assert prices == sorted(prices), (chunk, prices)
    for n in (8, 64, 192):
        prices = [c.step_time(mixed(n, t)) for t in (top // 2, top, top + 64, 3000, 4096)]
        assert prices == sorted(prices), (n, prices)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_past_the_grid_every_row_count_grows_alike(name):
    c = cost(name)
    top = int(c._mix[2][-1])
    grow = [c.step_time(mixed(n, top + 2000)) - c.step_time(mixed(n, top + 1000)) for n in (1, 32, 96, 192)]
    assert max(grow) - min(grow) < 1e-9 and grow[0] > 0


def test_top_slope_reads_the_top_quarter_not_the_last_pair():
    from kvsim.cost.step_grids import top_slope
    xs = [64 * i for i in range(1, 33)]                       # 64 .. 2048 tokens
    assert top_slope(xs, [2e-5 * x for x in xs]) == pytest.approx(2e-5)
    flat_end = [2e-5 * x for x in xs[:-1]] + [2e-5 * xs[-2] + 1e-5]     # last pair almost flat (isotonic)
    assert top_slope(xs, flat_end) > 1.5e-5 > (flat_end[-1] - flat_end[-2]) / 64
    assert top_slope([1, 2, 3], [3.0, 2.0, 1.0]) == 0.0                    # never negative
    assert top_slope([16], [1.0]) == 0.0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_prefill_past_the_grid_grows_like_the_grid_top(name):
    """A prompt longer than the largest prefill graph runs eagerly and GEMM-bound: its price grows per token at
    least about as fast as over the grid's top half (the last pair alone had given OPT-13B a fifth of that)."""
    c = cost(name)
    top = float(c._pstep[0][-1])

    def price(t):
        return c.step_time(StepPlan(prefill_group_ids=[0], prefill_new_tokens=[int(t)], prefill_cached_tokens=[0]))
    inside = (price(top) - price(top / 2)) / (top / 2)
    past = (price(2 * top) - price(top)) / top
    assert past >= 0.8 * inside


def test_prefill_past_the_grid_recovers_linear_work_plus_quadratic_attention():
    """Grids made from a known law (the step: a fixed part, linear layers per token and attention per query-key
    pair; the kernel grid: a launch floor plus the same cost per pair) are extended past their largest prompt by
    that law exactly: the non-attention part along its slope, the attention by pairs (a linear extension of the
    whole step priced a 6,000-token prompt 17% fast on the H100 Mistral-7B trace)."""
    import numpy as np

    from kvsim.cost.prefill_shapes import attention_pairs
    c = cost("llama-3-8b")
    a, per_token, per_pair, floor = 8e-3, 2.2e-5, 7e-11, 1e-4
    xs = np.array([16.0, 64, 256, 512, 1024, 2048])
    cached = np.array([0.0, 256, 1024, 2048])
    c._pstep = (xs, np.array([a + per_token * x + c.L * per_pair * attention_pairs([x], [0]) for x in xs]))
    c._pre = (xs, cached, np.array([[floor + per_pair * attention_pairs([x], [k]) for k in cached] for x in xs]))
    c._dec_cache.clear()
    for t in (2048.0, 3000.0, 6000.0):
        want = a + per_token * t + c.L * per_pair * attention_pairs([t], [0])
        assert c._pstep_at(t) == pytest.approx(want, rel=1e-9)
    # past the kernel grid's prompts, at a cached context inside and past its contexts (above the grid's
    # smallest point, as _kernel_attn reads the kernel grid)
    for new, k in ((4096.0, 512.0), (5000.0, 3000.0)):
        want = per_pair * (attention_pairs([new], [k]) - attention_pairs([16], [0]))
        assert c._kernel_attn(new, k) == pytest.approx(want, rel=1e-9)


def test_a_prompt_longer_than_the_serving_fits_keeps_its_share_of_the_step():
    """Past the serving fit's longest prompt, one prompt pays the fit's extra as a share of its grid price
    (serving's clocks under load scale a compute-bound step), never less than prefill_overhead; several prompts
    in a step and a fit with negative extras keep prefill_overhead alone."""
    import numpy as np
    c = CalibratedCostModel(load_profile(str(ROOT / "calibrate" / "profiles" / "H100" / "llama-3-8b-1206.json")),
                            model_name="Llama-3-8B", dtype="fp16", block_size_tokens=16)
    over = float(c.p.overhead[1][0])

    def lone(t, groups=1):
        return StepPlan(prefill_group_ids=list(range(groups)), prefill_new_tokens=[t // groups] * groups,
                        prefill_cached_tokens=[0] * groups)
    xs = np.array([100.0, 300.0, 600.0, 900.0])
    fitted, c._pserving = c._pserving, None
    base = {t: c.step_time(lone(t)) - c._prefill_host(t) for t in (1500, 3000)}
    several = c.step_time(lone(3000, groups=3))
    c._pserving = (xs, np.array([0.05 * (c.step_time(lone(int(x))) - c._prefill_host(int(x)) - over) for x in xs]))
    c._dec_cache.clear()
    c._prefill_memo.clear()
    assert c._serving_share()[0] == pytest.approx(0.05, rel=1e-6)
    for t, b in base.items():
        want = b + max(c._prefill_host(t), 0.05 * (b - over))
        assert c.step_time(lone(t)) == pytest.approx(want, rel=1e-9)
    assert c.step_time(lone(3000, groups=3)) == pytest.approx(several, rel=1e-12)
    c._pserving = (xs, np.full(4, -1e-3))                   # a fit that took time off: no share
    c._dec_cache.clear()
    c._prefill_memo.clear()
    assert c._serving_share()[0] == 0.0
    assert c.step_time(lone(3000)) == pytest.approx(base[3000] + c._prefill_host(3000), rel=1e-9)
    assert fitted is not None


@pytest.mark.parametrize("profile", ["H100/llama-3-8b-1206.json", "H200/llama-3-8b.json"])
def test_a_long_chunk_with_decode_rows_never_costs_less_than_the_chunk_alone(profile):
    """Past the mixed grid's largest chunk the chunk's attention grows by query-key pairs as a lone prompt's does:
    extended linearly, an 8,192-token chunk with 8 decode rows was priced below the same prompt alone (221 vs
    233 ms on the H100 Llama-3-8B profile)."""
    c = CalibratedCostModel(load_profile(str(ROOT / "calibrate" / "profiles" / profile)), model_name="Llama-3-8B",
                            dtype="fp16", block_size_tokens=16)
    for t in (1024, 2048, 4096, 8192):
        alone = c.step_time(StepPlan(prefill_group_ids=[0], prefill_new_tokens=[t], prefill_cached_tokens=[0]))
        assert c.step_time(mixed(8, t)) > alone, t
