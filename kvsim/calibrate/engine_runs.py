"""The calibration's short real-engine runs (step overhead, serving fit, prefill overhead fits): how each is
made, one :class:`~kvsim.engine.reuse.EngineParts` they share so the KV cache and CUDA graphs are built
once for all of them instead of once per run (:mod:`kvsim.engine.reuse`), and which serving runs the free GPU
memory allows (:func:`fits_memory`)."""
from __future__ import annotations

OVERHEAD_BATCH = [1, 4, 16, 64, 128, 256]
KV_MEMORY_SHARE = 0.6              # a serving run goes only if its worst-case KV fits this share of the free GPU memory
OVERHEAD_PER_SEQ_TOKENS = 200      # a step-overhead run's KV per request (128 prompt + 48 output + room)
ASYNC_SCHEDULING: bool | None = None   # these runs overlapped? None: the engine's default
#                                        (RuntimeConfig().async_scheduling); kvsim calibrate --async-scheduling: True
MIXED_DECODE_SPLIT: bool | None = None  # mixed steps' long rows cut (split-KV)? None: the engine's default (off);
#                                        kvsim calibrate --split-kv: True


def async_scheduling() -> bool:
    """Whether this calibration's engine runs (the fits after the grids) overlap the host's next step with the
    GPU's decode step: :data:`ASYNC_SCHEDULING`, else the engine default. Recorded as ``meta.async_scheduling``;
    a live ``kvsim validate`` runs the engine the same way (:func:`kvsim.validate_settings.profile_sets`)."""
    from kvsim.config import RuntimeConfig
    return bool(RuntimeConfig().async_scheduling if ASYNC_SCHEDULING is None else ASYNC_SCHEDULING)


def async_prompt_steps() -> bool:
    """Whether those runs also overlap steps with prompt tokens (``runtime.async_prompt_steps``, the engine's
    default, when they overlap at all). Recorded as ``meta.async_prompt_steps``."""
    from kvsim.config import RuntimeConfig
    return async_scheduling() and bool(RuntimeConfig().async_prompt_steps)


def mixed_decode_split() -> bool:
    """Whether the calibration cuts mixed steps' few long decode rows into partitions (``runtime.mixed_decode_split``):
    :data:`MIXED_DECODE_SPLIT`, else the engine default. The grids read it too (``varlen_decode.SPLIT``)."""
    from kvsim.config import RuntimeConfig
    return bool(RuntimeConfig().mixed_decode_split if MIXED_DECODE_SPLIT is None else MIXED_DECODE_SPLIT)


def runtime_mode() -> dict:
    """The runtime settings of every engine run of the calibration: stepped or overlapped, which steps, whether
    the LM head ran at the decode graphs' row counts (the engine's default) and whether mixed steps cut rows."""
    from kvsim.config import RuntimeConfig
    return {"async_scheduling": async_scheduling(), "async_prompt_steps": async_prompt_steps(),
            "pad_logits": bool(RuntimeConfig().pad_logits), "mixed_decode_split": mixed_decode_split()}


def overhead_blocks(n: int, bs: int) -> int:
    """KV blocks of the step-overhead run at ``n`` rows."""
    return n * -(-OVERHEAD_PER_SEQ_TOKENS // bs) + 64


def prefill_blocks(tokens: int, out_len: int, bs: int, busy_output: int) -> int:
    """KV blocks of a prefill-overhead run of ``tokens``-token prompts (eight in flight at most)."""
    return 8 * -(-(tokens + max(out_len, busy_output) + 8) // bs) + 64


def engine_iterations(model, profile: dict, name: str, device: str, cuda_graphs: bool, engine: dict,
                      workload: dict, parts=None):
    """Iteration records of a real engine run of ``model`` on fixed-length requests (the fits), through
    ``parts`` when given."""
    return engine_records(model, profile, name, device, cuda_graphs, engine, workload, parts)[0]


def engine_records(model, profile: dict, name: str, device: str, cuda_graphs: bool, engine: dict,
                   workload: dict, parts=None):
    """``(iterations, requests)``: the records of a real engine run of ``model`` on fixed-length requests (the
    fits), through ``parts`` when given."""
    import kvsim
    from kvsim.engine.engine import RealEngine
    sc = kvsim.load_scenario({
        "name": name, "model": profile["model"], "gpu": "h100-80gb", "dtype": profile["dtype"],
        "engine": {"max_num_seqs": 256, "max_num_batched_tokens": 8192, "swap_space_gib": 0, **engine},
        "workload": {"dataset": "fixed", **workload},
        "runtime": {"device": device, "cuda_graphs": cuda_graphs, **runtime_mode()},
        "seed": 0})
    res = RealEngine(sc, model=model, parts=parts).run()
    return res.iterations, res.requests


def calibration_parts(profile: dict, bs: int, device: str, *, overhead: bool = True, serving: bool = True):
    """An EngineParts whose cache holds the largest run the fits after the grids will make at block size ``bs``:
    the step-overhead runs (``overhead``), the serving runs whose KV fits the free memory (``serving``; the
    others are skipped by :func:`kvsim.calibrate.serving_fit.fit_serving` as before) and the prefill overhead
    runs (bounded by the model's longest sequence)."""
    from kvsim.calibrate.serving_fit import serving_scenario, ROWS
    from kvsim.catalogue import get_model
    from kvsim.engine.reuse import EngineParts
    spec = get_model(profile["model"])
    parts = EngineParts()
    need = [prefill_blocks(spec.max_seq_len, 0, bs, 0)]
    if overhead:
        need += [overhead_blocks(n, bs) for n in OVERHEAD_BATCH]
    if serving:
        for n in ROWS:
            sc = serving_scenario(profile, bs, n, device)
            if fits_memory(sc, spec, bs, device, parts) is None:
                need.append(sc.engine.num_gpu_blocks)
    parts.reserve(max(need))
    return parts


def free_gpu_bytes(device: str) -> int | None:
    """Free GPU memory now (None off CUDA: nothing to cap)."""
    import torch
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return None
    torch.cuda.empty_cache()
    return int(torch.cuda.mem_get_info()[0])


def kv_room_bytes(device: str, parts=None, free: int | None = None) -> int | None:
    """What a serving run's KV pool may take: KV_MEMORY_SHARE of the free GPU memory, what a kept cache of
    ``parts`` holds counted as free (None where the free memory is not known)."""
    free = free_gpu_bytes(device) if free is None else free
    if free is None:
        return None
    return int(KV_MEMORY_SHARE * (free + (parts.kept_bytes() if parts is not None else 0)))


def fits_memory(sc, spec, bs: int, device: str, parts=None, free: int | None = None) -> str | None:
    """None when the serving run ``sc``'s worst-case KV fits in KV_MEMORY_SHARE of the free GPU memory (what a
    kept cache of ``parts`` holds counts as free: it is given back before a bigger one is built); else why not."""
    need = sc.engine.num_gpu_blocks * bs * spec.kv_bytes_per_token(sc.dtype_bytes)
    room = kv_room_bytes(device, parts, free)
    if room is None or (parts is not None and parts.kept is not None and parts.kept.cache.num_blocks >=
                        sc.engine.num_gpu_blocks) or need <= room:
        return None
    return (f"its KV ({need / 2**30:.1f} GiB) is over {KV_MEMORY_SHARE:.0%} of the free memory "
            f"({room / KV_MEMORY_SHARE / 2**30:.1f} GiB)")
