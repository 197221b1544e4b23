"""The grids of one block size: every block-keyed table a profile holds (:data:`BLOCK_TABLES`) and
:func:`measure_block`, which measures them all for one block size (plus the reference step, which
:func:`kvsim.calibrate.profile.calibrate` records in ``meta``)."""
from __future__ import annotations

import time

from kvsim.calibrate import measure as M
from kvsim.calibrate import steps as S


BLOCK_TABLES = ("decode_step", "decode_spread_step", "prefill_step", "mixed_step", "prefill_batch_step",
                "prefill_cached_step", "decode_attn", "prefill_attn", "copy_block", "swap")


REFERENCE = "reference_step"


def measure_block(model, bs: int, dev, *, cuda_graphs: bool = True, fast: bool = False) -> dict:
    """Every block-keyed table of block size ``bs`` (``fast``: the reduced grids of kvsim.calibrate.fast,
    no mixed steps); table name -> table."""
    from kvsim.calibrate import fast as F
    out: dict = {}
    if fast:
        g = F.grid_for(bs, model.spec.max_seq_len)
        (out["decode_step"], out["decode_spread_step"], out["prefill_step"], mixed, ref, pbatch, pcached) = S.measure_steps(
            model, bs, dev, cuda_graphs=cuda_graphs, grid=F.step_grid(g))
        out["decode_attn"] = M.measure_decode(model, bs, dev, g["attn_batch"], g["attn_ctx"])
        out["prefill_attn"] = M.measure_prefill(model, bs, dev, g["pre_new"], g["pre_cached"])
        out["copy_block"], out["swap"] = M.measure_copy_swap(model, bs, dev, g["copy"])
    else:
        (out["decode_step"], out["decode_spread_step"], out["prefill_step"], mixed, ref, pbatch, pcached) = S.measure_steps(
            model, bs, dev, cuda_graphs=cuda_graphs)
        t0 = time.perf_counter()
        out["decode_attn"] = M.measure_decode(model, bs, dev)
        out["prefill_attn"] = M.measure_prefill(model, bs, dev)
        out["copy_block"], out["swap"] = M.measure_copy_swap(model, bs, dev)
        M._log(f"attention kernels, copies and swaps in {time.perf_counter() - t0:.1f} s")
    from kvsim.graph_sizes import beaten_sizes
    beaten = beaten_sizes(out["prefill_step"]["tokens"], out["prefill_step"]["time_s"])
    out["prefill_step"]["beaten_by_larger"] = beaten     # [size, faster larger size]: a note, not priced
    if beaten:
        M._log("prefill graph sizes a larger captured size ran >= 2% faster than: "
               + ", ".join(f"{a} by {b}" for a, b in beaten))
    if mixed is not None:
        out["mixed_step"] = mixed
    if pbatch is not None:
        out["prefill_batch_step"] = pbatch
    if pcached is not None:
        out["prefill_cached_step"] = pcached
    if ref is not None:                  # not a table: calibrate() moves it into meta.reference_step
        out[REFERENCE] = ref
    return out
