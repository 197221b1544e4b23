"""The card's speed today: one fixed decode step, timed the same way before every engine run and in every
calibration, so a validation can tell a slower machine from a wrong model.

Two H200s (two device leases) ran the same fixed engine workload 6% apart (16-row decode steps 9.88 vs
9.29 ms; ``benchmarks/engine/results_H200/decode_gap/README.md``): as large as the errors validation looks
for. The reference is a decode step of :data:`ROWS` rows at :data:`CTX` tokens of context, small enough
for any engine's KV pool, replayed from the decode CUDA graphs when they hold that batch (eagerly
otherwise; the result says which), median of :data:`REPS` timed calls after :data:`WARMUP`. It reads the
weights once and a little KV: it measures HBM bandwidth and launch overheads, the cost of most steps.
Recorded as ``reference_step`` in an engine run's ``engine`` info and, per block size, in a profile's
``meta.reference_step``; ``kvsim validate`` prints the ratio (:mod:`kvsim.card_speed`). Each record also
names the physical card (``gpu_uuid``, as ``nvidia-smi -L`` prints it): two lent H200s can differ by 5% in step
time and by 0.2 ms of host work per step, so a validation says whether its engine ran on the profile's card.
"""
from __future__ import annotations

ROWS = 8
CTX = 256
WARMUP = 5
REPS = 30


def gpu_uuid(device) -> str | None:
    """The card's UUID (``GPU-xxxxxxxx-...``), or None where torch does not expose it."""
    import torch
    try:
        u = str(torch.cuda.get_device_properties(torch.device(device)).uuid)
    except (AttributeError, RuntimeError, AssertionError, ValueError):
        return None
    return u if u.startswith("GPU-") else f"GPU-{u}" if u else None


def reference_step(model, kv_caches, graphs, *, block_size: int, num_blocks: int, backend: str, device,
                   generator=None) -> dict | None:
    """``{"rows", "ctx", "graph", "time_s", "gpu_uuid"}`` of the reference step on ``device`` (None off CUDA).

    Writes K/V into random cache blocks: call it before any sequence holds blocks."""
    import torch

    from kvsim.engine.synthetic_step import synthetic_step
    if torch.device(device).type != "cuda":
        return None
    ids, pos, meta = synthetic_step([], [CTX] * ROWS, block_size=block_size, num_blocks=num_blocks,
                                    vocab_size=model.spec.vocab_size, device=device, backend=backend,
                                    generator=generator or torch.Generator().manual_seed(0))
    graph = graphs is not None and graphs.fits(meta)

    def step():
        with torch.inference_mode():
            hidden = graphs.run(ids, pos, meta) if graph else model(ids, pos, kv_caches, meta)
            return model.compute_logits(hidden).argmax(-1).tolist()
    from kvsim.engine.host_timing import host_timed
    t = host_timed(step, REPS, warmup=WARMUP)                  # step() reads the tokens back: it waits for the GPU
    return {"rows": ROWS, "ctx": CTX, "graph": bool(graph), "time_s": t,
            "gpu_uuid": gpu_uuid(device)}
