"""A synthetic but physically shaped profile for CPU tests of the calibrated cost model."""
from __future__ import annotations

import numpy as np

from kvsim.cost.calibrated import FORMAT, VERSION


def synthetic_profile(model="OPT-13B", layers=40, dtype="fp16", block_sizes=(16,), noise=0.0, seed=0,
                      steps=False) -> dict:
    rng = np.random.default_rng(seed)
    jitter = lambda a: (np.asarray(a, float) * (1 + noise * rng.standard_normal(np.shape(a)))).tolist()
    tokens = [1, 4, 16, 64, 256, 1024, 4096]
    batch = [1, 4, 16, 64, 256]
    ctx = [16, 256, 1024, 2048]
    new = [16, 256, 1024, 2048]
    cached = [0, 512, 2048]
    lin = [max(4e-4, t * 2.5e-7) for t in tokens]                  # weight-bound, then FLOP-bound
    dec = [[5e-6 + b * c * 2e-10 for c in ctx] for b in batch]
    pre = [[1e-5 + n * (c + n / 2) * 1e-11 for c in cached] for n in new]
    prof = {
        "format": FORMAT, "version": VERSION, "model": model, "dtype": dtype, "num_layers": layers,
        "meta": {"gpu": "Synthetic GPU", "gpu_memory_bytes": 80 << 30, "driver": "n/a", "torch": "n/a",
                 "triton": "n/a", "date": "2026-11-26", "git_commit": "n/a", "command": "tests"},
        "linear": {"tokens": tokens, "time_s": jitter(lin)},
        "layer_other": {"tokens": tokens, "time_s": jitter([2e-5 + t * 1e-8 for t in tokens])},
        "lm_head": {"rows": batch, "time_s": jitter([3e-4 + b * 1e-6 for b in batch])},
        "decode_attn": {str(bs): {"batch": batch, "ctx": ctx, "time_s": jitter(dec)} for bs in block_sizes},
        "prefill_attn": {str(bs): {"tokens": new, "cached": cached, "time_s": jitter(pre)} for bs in block_sizes},
        "copy_block": {str(bs): {"blocks": [1, 16, 256], "time_s": [2e-5, 6e-5, 8e-4]} for bs in block_sizes},
        "swap": {str(bs): {"blocks": [1, 16, 256], "time_s": [9e-4, 1.2e-2, 0.19]} for bs in block_sizes},
        "step_overhead": {"num_seqs": [1, 16, 256], "time_s": [2.5e-3, 3e-3, 6e-3]},
    }
    if steps:      # whole-iteration grids, as kvsim calibrate now also measures
        sctx = [128, 512, 2048]
        prof["decode_step"] = {str(bs): {"batch": batch, "ctx": sctx,
                                         "time_s": jitter([[0.012 + b * c * 4e-8 for c in sctx] for b in batch])}
                               for bs in block_sizes}
        prof["prefill_step"] = {str(bs): {"tokens": tokens, "time_s": jitter([0.012 + t * 1.2e-5 for t in tokens])}
                                for bs in block_sizes}
    return prof


def spread_grid(uniform, lam: float, batch=(1, 4, 16, 64, 256), tops=(512, 2048)) -> dict:
    """A ``decode_spread_step`` table for one block size whose steps lie ``lam`` of the way from the uniform step
    at the shape's mean context to the uniform step at its longest; ``uniform`` is a calibrated cost model of
    the profile without a spread grid (its steps, less its step overhead, are the grid's)."""
    from kvsim.cost.profile import spread_contexts
    times = []
    for n in batch:
        row = []
        for top in tops:
            lo = uniform.decode_step_times(n, np.array([float(sum(spread_contexts(n, top)))]))[0]
            hi = uniform.decode_step_times(n, np.array([float(n * top)]))[0]
            row.append(float(lo + lam * (hi - lo)) - float(np.interp(n, *uniform.p.overhead)))
        times.append(row)
    return {"batch": list(batch), "max_ctx": list(tops), "time_s": times}
