"""Measure a profile for one model on the current GPU (see kvsim/cost/calibrated.py for the schema): the timers,
the per-layer GEMMs and layer rest, the LM head, the paged attention kernels' grids, block copies and swaps
(whole engine steps: :mod:`kvsim.calibrate.steps`).

Every timing is the median of :func:`_bench` (CUDA events around each call, the L2 cache flushed,
warm-up first, as ``triton.testing.do_bench`` times) on fresh random inputs, except the per-iteration overhead, which is
fitted from real engine decode steps: measured wall time minus the composed
op times at the same batch and context.
"""
from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
import time

import numpy as np
import torch


TOKENS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
BATCH = [1, 2, 4, 8, 16, 32, 64, 128, 256]
CTX = [16, 64, 256, 512, 1024, 2048]
PREFILL_NEW = [16, 64, 256, 512, 1024, 2048]
PREFILL_CACHED = [0, 256, 1024, 2048]
COPY_BLOCKS = [1, 4, 16, 64, 256]
BACKEND = "triton"      # the kernels timed (CPU tests of these code paths set "torch")


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


MIN_SAMPLES = 12
L2_FLUSH_BYTES = 256 * 2 ** 20     # zeroed before each timed call, as triton.testing.do_bench does


STEP_SAMPLES = 8       # whole engine steps (CUDA-graph replays: run-to-run spread ~0.5%, bench_timer_check.py)
# Idle time before each timed step with prompt tokens (prefill, prefill batch, cached-context and mixed steps:
# :func:`_bench_between`), as a multiple of the step's own time (kvsim calibrate --grid-idle): timed back to back,
# the H200's grids ran at its power limit with SM clocks ~1,600 MHz against ~1,970 in serving
# (benchmarks/engine/calib_clocks.py); an idle gap lets each compute-bound step start from serving's clocks.
# Memory-bound decode steps and the kernel grids are timed without it. 0: none.
GRID_IDLE = 0.0
SWAP_STAGED: bool | None = None    # swaps timed through the staging buffer? None: the engine's default
#                                    (RuntimeConfig().swap_staged); kvsim calibrate --swap-per-layer sets False


def swap_staged() -> bool:
    """Whether this calibration times (and records) staged swaps: :data:`SWAP_STAGED`, else the engine default."""
    from kvsim.config import RuntimeConfig
    return bool(RuntimeConfig().swap_staged if SWAP_STAGED is None else SWAP_STAGED)


def _bench(fn, warmup=10, rep=40, min_samples: int = MIN_SAMPLES) -> float:
    """Median seconds of ``fn`` over at least ``min_samples`` timed calls (CUDA events around each call, the L2
    cache flushed before it), the way ``triton.testing.do_bench`` times, without its fixed five-call estimate:
    two untimed calls (the first compiles and warms; the second, host-timed, sizes the budgets), then warm-up
    calls for ``warmup`` ms and timed calls for ``rep`` ms, both counted from that call. A whole 13B forward is
    then timed ``min_samples`` times after one more call (do_bench took nine more), a 20 us kernel ~2,000 times."""
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    once_ms = max((time.perf_counter() - t0) * 1e3, 1e-3)
    for _ in range(int(warmup / once_ms)):
        fn()
    n = max(min_samples, int(rep / once_ms))
    flush = torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.int32, device="cuda")
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    for s, e in zip(starts, ends):
        flush.zero_()
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return float(np.median([s.elapsed_time(e) for s, e in zip(starts, ends)])) / 1e3


def _card_reference(model, caches, graphs, bs: int, pool: int, dev, generator) -> dict | None:
    """The card's reference step (:mod:`kvsim.engine.reference_step`) on a CUDA device, None elsewhere."""
    if dev.type != "cuda":
        return None
    from kvsim.engine.reference_step import reference_step
    return reference_step(model, caches, graphs, block_size=bs, num_blocks=pool, backend=BACKEND, device=dev,
                          generator=generator)


LONG_STEP_S = 0.1      # _bench_between: a step at least this long (first call) is timed LONG_STEP_REPS times
LONG_STEP_REPS = 5     # (a 32 x 512-token OPT-13B prefill takes 0.7 s: 10 reps cost 7 s for one grid point)


def _bench_between(fn, between, reps: int = 10) -> float:
    """Median seconds of ``fn`` over ``reps`` calls (LONG_STEP_REPS when the untimed first call took
    LONG_STEP_S or more), each after an untimed ``between()``, on the host clock
    (:func:`kvsim.engine.host_timing.host_timed`).

    Back-to-back compute-bound steps (a long prefill timed by :func:`_bench` for ~1 s) hold the card at
    its power limit, so its clocks drop and each step runs several percent slower than it does in
    serving, where a prefill sits between memory-bound decode steps. ``between`` puts that work back."""
    from kvsim.engine.host_timing import host_timed
    t0 = time.perf_counter()
    fn()
    _sync()
    once = time.perf_counter() - t0
    long = once >= LONG_STEP_S
    if GRID_IDLE > 0:          # the decode steps between, then idle (:data:`GRID_IDLE`)
        plain = between

        def between():
            plain()
            _sync()
            time.sleep(GRID_IDLE * once)
    return host_timed(fn, min(reps, LONG_STEP_REPS) if long else reps, warmup=0, between=between)


def _log(msg: str) -> None:
    print(f"[calibrate {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _meta(command: str) -> dict:
    props = torch.cuda.get_device_properties(0)
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        driver = "unknown"
    import triton
    return {"gpu": torch.cuda.get_device_name(0), "gpu_memory_bytes": int(props.total_memory),
            "num_sms": int(props.multi_processor_count),
            "driver": driver, "torch": torch.__version__, "triton": triton.__version__,
            "cuda": torch.version.cuda, "python": platform.python_version(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "git_commit": os.environ.get("KVSIM_GIT_COMMIT", "unknown"), "command": command}


def _meta_for(meta_cls, *, T, P, qstart, pctx, ptable, maxq, dctx, dtable, maxd, slots, backend):
    return meta_cls(num_prefill_tokens=P, num_decode_tokens=T - P, slot_mapping=slots, prefill_query_start=qstart,
                    prefill_context_lens=pctx, prefill_block_tables=ptable, max_prefill_query_len=maxq,
                    decode_context_lens=dctx, decode_block_tables=dtable, max_decode_context_len=maxd,
                    backend=backend)


def layer_weights(model) -> list[torch.Tensor]:
    """Weights shaped like one decoder layer's GEMMs as the engine runs them: parameters that share
    storage (fused q/k/v, gate/up views) become one matrix with their rows stacked."""
    layer = next(m for m in model.modules() if isinstance(m, torch.nn.ModuleList))[0]
    groups: dict[int, list[torch.Tensor]] = {}
    for _, p in layer.named_parameters():
        if p.dim() == 2:
            groups.setdefault(p.untyped_storage().data_ptr(), []).append(p)
    return [torch.randn(sum(p.shape[0] for p in ps), ps[0].shape[1], device=ps[0].device, dtype=ps[0].dtype)
            for ps in groups.values()]


def measure_nonattention(model, dev) -> tuple[dict, dict]:
    """Per layer, over token counts: the GEMMs alone (cuBLAS, real shapes), and the rest of the
    layer (norms, activations, residuals, RoPE, launch gaps) = forward without attention / L − GEMMs."""
    from kvsim.engine.attention import AttnMetadata
    weights = layer_weights(model)
    L = model.num_layers
    z = torch.zeros(1, dtype=torch.int32, device=dev)
    lin, other = [], []
    for T in TOKENS:
        xs = [torch.randn(T, w.shape[1], device=dev, dtype=model.dtype) for w in weights]
        t_lin = _bench(lambda: [torch.nn.functional.linear(x, w) for x, w in zip(xs, weights)])
        ids = torch.randint(0, model.spec.vocab_size, (T,), device=dev)
        pos = torch.arange(T, device=dev) % model.spec.max_seq_len
        meta = _meta_for(AttnMetadata, T=T, P=0, qstart=z, pctx=z, ptable=z.view(1, 1), maxq=1, dctx=z,
                         dtable=z.view(1, 1), maxd=1, slots=pos, backend="none")
        with torch.inference_mode():
            t_fwd = _bench(lambda: model(ids, pos, [(None, None)] * L, meta))
        lin.append(t_lin)
        other.append(max(t_fwd / L - t_lin, 0.0))
    return {"tokens": TOKENS, "time_s": lin}, {"tokens": TOKENS, "time_s": other}


def measure_lm_head(model, dev) -> dict:
    out = []
    for n in BATCH:
        h = torch.randn(n, model.spec.hidden_size, device=dev, dtype=model.dtype)
        with torch.inference_mode():
            out.append(_bench(lambda: model.compute_logits(h).float().argmax(-1).tolist()))
    return {"rows": BATCH, "time_s": out}


def _cache(model, blocks, bs, dev):
    shape = (blocks, bs, model.num_kv_heads, model.head_dim)
    return (torch.randn(shape, device=dev, dtype=model.dtype), torch.randn(shape, device=dev, dtype=model.dtype))


def measure_decode(model, bs: int, dev, batch=BATCH, ctx_axis=CTX) -> dict:
    """One layer's paged decode attention + KV write, batch x context (uniform context)."""
    from kvsim.kernels import paged_decode_attention, write_kv
    hq, hkv, d = model.spec.num_heads, model.num_kv_heads, model.head_dim
    grid = []
    for n in batch:
        row = []
        for c in ctx_axis:
            per = -(-c // bs)
            kc, vc = _cache(model, n * per + 1, bs, dev)
            table = torch.randperm(n * per, device=dev, dtype=torch.int32).view(n, per)
            ctx = torch.full((n,), c, dtype=torch.int32, device=dev)
            q = torch.randn(n, hq, d, device=dev, dtype=model.dtype)
            k = torch.randn(n, hkv, d, device=dev, dtype=model.dtype)
            slots = (table[:, (c - 1) // bs].long() * bs + (c - 1) % bs)
            out = torch.empty_like(q)

            def step():
                write_kv(k, k, kc, vc, slots, backend=BACKEND)
                paged_decode_attention(q, kc, vc, table, ctx, max_context_len=c, out=out, backend=BACKEND)
            row.append(_bench(step))
            del kc, vc
        grid.append(row)
    return {"batch": list(batch), "ctx": list(ctx_axis), "time_s": grid}


def measure_prefill(model, bs: int, dev, new_axis=PREFILL_NEW, cached_axis=PREFILL_CACHED) -> dict:
    """One layer's paged prefill attention + KV write for one sequence: new x cached tokens."""
    from kvsim.kernels import paged_prefill_attention, write_kv
    hq, hkv, d = model.spec.num_heads, model.num_kv_heads, model.head_dim
    grid = []
    for new in new_axis:
        row = []
        for cached in cached_axis:
            total = new + cached
            per = -(-total // bs)
            kc, vc = _cache(model, per + 1, bs, dev)
            table = torch.randperm(per, device=dev, dtype=torch.int32).view(1, per)
            q = torch.randn(new, hq, d, device=dev, dtype=model.dtype)
            k = torch.randn(new, hkv, d, device=dev, dtype=model.dtype)
            pos = torch.arange(cached, total, device=dev)
            slots = table[0, pos // bs].long() * bs + pos % bs
            qs = torch.tensor([0, new], dtype=torch.int32, device=dev)
            cl = torch.tensor([cached], dtype=torch.int32, device=dev)
            out = torch.empty_like(q)

            def step():
                write_kv(k, k, kc, vc, slots, backend=BACKEND)
                paged_prefill_attention(q, kc, vc, table, qs, cl, max_query_len=new, out=out, backend=BACKEND)
            row.append(_bench(step))
        grid.append(row)
    return {"tokens": list(new_axis), "cached": list(cached_axis), "time_s": grid}


COPY_MEMORY_SHARE = 0.4     # of the free GPU memory (and of the host's available memory) the copy/swap pools may take


def copy_swap_blocks(blocks, block_bytes: int, gpu_free: int, host_free: int,
                     share: float = COPY_MEMORY_SHARE) -> list[int]:
    """The block counts of ``blocks`` whose copy and swap pools fit: ``2 x n + 8`` GPU blocks within ``share`` of
    the free GPU memory and ``n`` pinned CPU blocks within ``share`` of the host's available memory (``block_bytes``:
    one block, all layers, K and V). The two smallest are always kept: the profile's curves extend linearly past
    their largest point. At block 256, OPT-13B's 520-block pool asked for 101.6 GiB on an 80 GB H100 and ended the
    calibration (``benchmarks/engine/results_H100/lease_1206b``)."""
    pts = sorted(int(b) for b in blocks)
    fits = [b for b in pts if (2 * b + 8) * block_bytes <= share * gpu_free and b * block_bytes <= share * host_free]
    return sorted(set(pts[:2]) | set(fits))


def _host_available() -> int:
    """Bytes of host memory available now (Linux), or a large number where the system does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def measure_copy_swap(model, bs: int, dev, blocks=COPY_BLOCKS) -> tuple[dict, dict]:
    """Copy-on-write block copies and one-way GPU->CPU swaps of scattered blocks, all layers (the block counts
    that fit in memory at this block size: :func:`copy_swap_blocks`)."""
    from kvsim.engine.kv_cache import KVCache
    block_bytes = 2 * model.num_layers * bs * model.num_kv_heads * model.head_dim * torch.finfo(model.dtype).bits // 8
    asked = list(blocks)
    free = torch.cuda.mem_get_info()[0] if torch.device(dev).type == "cuda" else _host_available()
    blocks = copy_swap_blocks(asked, block_bytes, free, _host_available())
    if blocks != sorted(asked):
        _log(f"copies and swaps at block size {bs}: {blocks} blocks ({len(asked) - len(blocks)} larger counts "
             f"need more memory than {COPY_MEMORY_SHARE:.0%} of what is free)")
    n_blocks = max(blocks) * 2 + 8
    cache = KVCache(model.num_layers, n_blocks, bs, model.num_kv_heads, model.head_dim, max(blocks),
                    model.dtype, dev, BACKEND, staged_swap=swap_staged())     # as the engine will swap
    copies, swaps = [], []
    for nb in blocks:
        perm = torch.randperm(n_blocks).tolist()
        pairs = list(zip(perm[:nb], perm[nb:2 * nb]))
        copies.append(_bench(lambda: cache.copy(pairs), warmup=3, rep=20))
        gpu_ids = torch.randperm(n_blocks)[:nb].tolist()
        cpu_ids = torch.randperm(max(blocks))[:nb].tolist()
        swap_pairs = list(zip(gpu_ids, cpu_ids))

        def swap():
            cache.swap_out(swap_pairs)
            _sync()
        swaps.append(_bench(swap, warmup=2, rep=20))
    return {"blocks": list(blocks), "time_s": copies}, {"blocks": list(blocks), "time_s": swaps}

