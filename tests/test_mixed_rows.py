"""A mixed step's decode rows walked whole by a persistent kernel: what unequal contexts add (kvsim.cost.mixed_rows)."""
from __future__ import annotations

import numpy as np
import pytest

from kvsim.core.plan import StepPlan
from kvsim.cost.calibrated import CalibratedCostModel, Profile
from kvsim.cost.mixed_rows import LongestRow, programs_per_kv_head
from kvsim.errors import KvsimError
from tests.profile_factory import synthetic_profile

WALK = 2e-6          # seconds per context position a one-row step adds (the synthetic grid's slope)


def grid(n, c, t):
    # one row walks its context (WALK per position); more rows in parallel cost a little more per row
    return 5e-3 + WALK * c + 1e-6 * (n - 1) * c / 64 + 2e-5 * t


def profile(**mixed_extra) -> dict:
    prof = synthetic_profile(steps=True)
    n, c, t = [1, 8, 64], [256, 1024, 2048], [16, 256, 1024]
    prof["mixed_step"] = {"16": {"decode": n, "ctx": c, "chunk": t, **mixed_extra,
                                 "time_s": [[[grid(a, b, k) for k in t] for b in c] for a in n]}}
    return prof


def model(prof) -> CalibratedCostModel:
    return CalibratedCostModel(Profile(prof), model_name="OPT-13B", dtype="fp16", block_size_tokens=16)


def mixed(ctx, chunk=256):
    return StepPlan(prefill_group_ids=[999], prefill_new_tokens=[chunk], prefill_cached_tokens=[0],
                    decode_group_ids=list(range(len(ctx))), decode_context_tokens=list(ctx))


def test_uniform_rows_add_nothing_and_one_long_row_adds_its_walk_past_the_mean():
    lr = LongestRow(Profile(profile()).mixed_step[16], programs=13)
    assert lr.extra([700] * 8, 256) == 0.0 and lr.extra([1500], 256) == 0.0
    ctx = [256] * 7 + [2048]                          # 8 rows <= 13 programs: the step waits for the long row
    mean = sum(ctx) / len(ctx)
    assert lr.extra(ctx, 256) == pytest.approx(WALK * (2048 - mean), rel=1e-9)
    assert lr.extra(ctx + [0] * 0, 16) == pytest.approx(lr.extra(ctx, 1024), rel=1e-9)   # chunk-independent here
    # past the grid's last context the walk goes on along its last slope
    assert lr.extra([256] * 7 + [4096], 256) == pytest.approx(WALK * (4096 - (7 * 256 + 4096) / 8), rel=1e-9)


def test_rows_past_the_programs_are_dealt_round_robin():
    lr = LongestRow(Profile(profile()).mixed_step[16], programs=2)
    # rows 0 and 2 share program 0, rows 1 and 3 program 1: loads 256+256 and 1024+2048 positions' walks
    ctx = [256, 1024, 256, 2048]
    first = 256.0 - 256.0                             # walks are measured from the grid's first context
    loads = [2 * first, WALK * (1024 - 256) + WALK * (2048 - 256)]
    even = 2 * WALK * (np.mean(ctx) - 256)
    assert lr.extra(ctx, 256) == pytest.approx(max(loads) - even, rel=1e-9)
    assert lr.extra([256, 256, 1024, 2048], 256) < lr.extra(ctx, 256)   # the order decides who shares


def test_the_model_adds_it_only_where_the_profile_walked_rows_whole():
    whole, split = model(profile()), model(profile(decode_split=True))
    even = mixed([1024] * 8)
    assert whole.step_time(even) == split.step_time(even)
    uneven = mixed([256] * 7 + [2048])
    assert whole.step_time(uneven) == pytest.approx(split.step_time(uneven) + WALK * (2048 - 480), rel=1e-6)
    assert whole.step_time(uneven) > whole.step_time(mixed([480] * 8))


def test_programs_follow_the_card_and_a_bad_sm_count_is_refused():
    assert programs_per_kv_head(8) == 66 and programs_per_kv_head(40) == 13 and programs_per_kv_head(8, 108) == 54
    assert programs_per_kv_head(1000) == 1
    prof = profile()
    prof["meta"]["num_sms"] = 66
    assert model(prof)._longest.programs == programs_per_kv_head(40, 66)
    for bad in (0, -3, 2.5, True, "132"):
        prof["meta"]["num_sms"] = bad
        with pytest.raises(KvsimError, match="num_sms"):
            Profile(prof)


def test_a_profile_cut_below_a_share_of_the_programs_walks_more_rows_whole():
    # OPT-13B's 40 KV heads on 132 SMs: 13 programs a head; cut only below half of them (6.5 rows)
    whole, split = model(profile()), model(profile(decode_split=True))
    gated = model(profile(decode_split=True, decode_split_cut_below=0.5))
    assert gated._longest.programs == 13 and gated._longest.whole_from == 6.5
    many = mixed([256] * 7 + [2048])                  # 8 rows: walked whole, as the unsplit profile prices them
    assert gated.step_time(many) == whole.step_time(many) > split.step_time(many)
    few = mixed([256] * 5 + [2048])                   # 6 rows: cut, the work spread
    assert gated.step_time(few) == split.step_time(few) < whole.step_time(few)
    off = model(profile(decode_split=True, decode_split_cut_below=0.0))     # a share of 0: never walked whole
    assert off._longest is None and off.step_time(many) == split.step_time(many)


@pytest.mark.parametrize("bad", [1.5, -0.1, "0.5", True, None])
def test_a_bad_cut_below_share_is_refused_naming_it(bad):
    with pytest.raises(KvsimError, match="mixed_step.16.decode_split_cut_below"):
        Profile(profile(decode_split=True, decode_split_cut_below=bad))
