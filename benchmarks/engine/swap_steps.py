"""Swap steps on the GPU: the profile's isolated swap timing against what a swap adds to an engine decode step.

The calibrated simulator prices a decode step that swaps KV blocks as the decode step plus ``swap_time`` of
each direction, from the profile's ``swap`` table (:func:`kvsim.calibrate.measure.measure_copy_swap`: one-way
GPU->CPU ``KVCache.swap_out`` of scattered blocks, alone, CUDA events after an L2 flush). The engine's runner
issues the swaps, then replays the decode graph. For each block count ``n`` this times, in one process:

* ``profile``: ``measure_copy_swap`` itself (swap out, scattered blocks: its random ids, so its transfers are not
  counted here), on its own cache;
* ``isolated``: the same timer (:func:`kvsim.calibrate.measure._bench`, ``_sync()`` inside) on this probe's
  cache, swap out and swap in, ``n`` scattered blocks (``2 x layers x n`` transfers) and ``n`` contiguous ones
  (ids consecutive in both pools: ``2 x layers`` transfers);
* ``step``: per decode batch (``--rows`` at ``--ctx`` tokens), the decode step replayed from its CUDA graph
  alone and preceded by each swap, on the host clock from a synchronised device to the sampled tokens on the
  host (:func:`kvsim.engine.host_timing.host_timed`, as the engine's steps are timed), the variants
  interleaved rep by rep, median of ``--reps``.

The swapped GPU blocks lie outside the decode step's block tables (its region of the pool comes first).
Table: per rows, n, direction and layout: isolated ms, in-step extra (step with swap - step alone), their
ratio, and the extra per block and per transfer.

``--staged`` swaps through the staging buffer (``runtime.swap_staged``): one copy per run of CPU blocks, so the
scattered layout's transfers are ``n`` and the contiguous one's 1. The profile row stays what ``kvsim calibrate``
times (``measure_copy_swap`` swaps as ``RuntimeConfig().swap_staged``, the engine's default, says).

usage (GPU): python benchmarks/engine/swap_steps.py --model opt-13b --out DIR [--staged]
CPU smoke run (tiny model, torch attention; not a measurement): ... --device cpu --model Tiny-Llama --blocks 1,2
Writes DIR/swap_steps.json (one row per measurement, plus the table's rows under "summary").
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from kvsim.calibrate import measure
from kvsim.catalogue import get_model
from kvsim.engine.cuda_graphs import DecodeGraphs
from kvsim.engine.host_timing import host_timed
from kvsim.engine.kv_cache import KVCache
from kvsim.engine.models import build_model
from kvsim.engine.synthetic_step import synthetic_step
from kvsim.kernels.cache_ops import swap_runs

LAYOUTS = ("scattered", "contiguous")
DIRECTIONS = ("out", "in")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _cpu_bench(fn, warmup=0, rep=0, min_samples: int = 3) -> float:
    """The CPU stand-in for :func:`measure._bench` (no CUDA events): median of a few host-timed calls."""
    fn()
    times = []
    for _ in range(min_samples):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def swap_pairs(layout: str, n: int, first_free: int, gen: torch.Generator) -> list[tuple[int, int]]:
    """``(gpu, cpu)`` block pairs of one swap: ``scattered``: GPU ids two apart in the free region, CPU ids two
    apart, shuffled (no two pairs form a run, either direction, nor two CPU ids: ``n`` runs); ``contiguous``: both
    consecutive (one run)."""
    if layout == "contiguous":
        return [(first_free + i, i) for i in range(n)]
    gpu = [first_free + 2 * i for i in torch.randperm(n, generator=gen).tolist()]
    return list(zip(gpu, [2 * i for i in torch.randperm(n, generator=gen).tolist()]))


def swap_fn(cache: KVCache, direction: str, pairs: list[tuple[int, int]]):
    """The swap as the runner issues it: ``swap_out`` of ``(gpu, cpu)`` pairs or ``swap_in`` of ``(cpu, gpu)``."""
    if direction == "out":
        return lambda: cache.swap_out(pairs)
    flipped = [(c, g) for g, c in pairs]
    return lambda: cache.swap_in(flipped)


def transfers_of(cache: KVCache, fn) -> int:
    """Transfers one call of ``fn`` issues (``cache.transfers`` before and after)."""
    before = cache.transfers
    fn()
    measure._sync()
    return cache.transfers - before


def time_isolated(cache: KVCache, fn) -> float:
    """Seconds of ``fn`` alone, as ``measure_copy_swap`` times a swap (``_sync()`` inside, ``_bench``)."""
    def call():
        fn()
        measure._sync()
    return measure._bench(call, warmup=2, rep=20)


def time_steps(variants: dict, reps: int, warmup: int = 2) -> dict:
    """Median host-clock seconds of each variant (name -> callable), the variants interleaved rep by rep."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    samples: dict = {k: [] for k in variants}
    for _ in range(reps):
        for k, fn in variants.items():
            samples[k].append(host_timed(fn, 1))
    return {k: statistics.median(v) for k, v in samples.items()}


def summarise(rows: list[dict]) -> list[dict]:
    """The table: per decode batch, n, direction and layout, isolated vs in-step extra."""
    iso = {(r["direction"], r["layout"], r["n"]): r for r in rows if r["kind"] == "isolated"}
    prof = {r["n"]: r["ms"] for r in rows if r["kind"] == "profile"}
    alone = {(r["rows"], r["n"]): r["ms"] for r in rows if r["kind"] == "step" and r["direction"] == "none"}
    out = []
    for r in rows:
        if r["kind"] != "step" or r["direction"] == "none":
            continue
        i = iso[(r["direction"], r["layout"], r["n"])]
        extra = r["ms"] - alone[(r["rows"], r["n"])]
        out.append({"rows": r["rows"], "n": r["n"], "direction": r["direction"], "layout": r["layout"],
                    "transfers": r["transfers"], "profile_out_ms": prof.get(r["n"]), "isolated_ms": i["ms"],
                    "step_alone_ms": alone[(r["rows"], r["n"])], "step_ms": r["ms"], "in_step_extra_ms": extra,
                    "in_step_over_isolated": extra / i["ms"], "extra_per_block_ms": extra / r["n"],
                    "extra_per_transfer_ms": extra / r["transfers"],
                    "isolated_per_transfer_ms": i["ms"] / i["transfers"]})
    return out


def print_table(summary: list[dict]) -> None:
    print(f"{'rows':>4} {'n':>3} {'dir':>3} {'layout':>10} {'xfers':>5} {'profile':>8} {'isolated':>8} "
          f"{'alone':>7} {'extra':>8} {'ratio':>6} {'ms/blk':>7} {'ms/xfer':>8}")
    for s in summary:
        prof = f"{s['profile_out_ms']:8.3f}" if s["profile_out_ms"] is not None and s["direction"] == "out" \
            and s["layout"] == "scattered" else f"{'':8}"
        print(f"{s['rows']:4d} {s['n']:3d} {s['direction']:>3} {s['layout']:>10} {s['transfers']:5d} {prof} "
              f"{s['isolated_ms']:8.3f} {s['step_alone_ms']:7.3f} {s['in_step_extra_ms']:8.3f} "
              f"{s['in_step_over_isolated']:6.2f} {s['extra_per_block_ms']:7.4f} {s['extra_per_transfer_ms']:8.5f}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="opt-13b")
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--blocks", default="1,4,16,64", help="comma list of block counts swapped")
    ap.add_argument("--rows", default="8,32", help="comma list of decode batches")
    ap.add_argument("--ctx", type=int, default=512, help="decode context (tokens) of every row")
    ap.add_argument("--reps", type=int, default=10, help="host-timed reps of each step variant")
    ap.add_argument("--staged", action="store_true",
                    help="swap through the staging buffer (runtime.swap_staged; kvsim/engine/swap_staged.py)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run (tiny model, torch attention)")
    a = ap.parse_args(argv)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    backend = "triton" if cuda else "torch"
    if not cuda:
        measure._bench, measure.BACKEND = _cpu_bench, "torch"
    ns, batches, bs = _ints(a.blocks), _ints(a.rows), a.block_size
    spec = get_model(a.model)
    model = build_model(spec, dtype=torch.float16 if cuda else torch.float32, device=dev, weights="dummy")
    L = model.num_layers
    decode_blocks = max(batches) * -(-a.ctx // bs)
    pool = decode_blocks + 2 * max(ns) + 8                  # the decode region, then the swap region
    cache = KVCache(L, pool, bs, model.num_kv_heads, model.head_dim, 2 * max(ns), model.dtype, dev, backend,
                    staged_swap=a.staged)
    cache.planes.normal_(0, 0.1)
    for k, v in cache.cpu:
        k.normal_(0, 0.1), v.normal_(0, 0.1)
    block_bytes = 2 * L * bs * model.num_kv_heads * model.head_dim * cache.planes.element_size()
    gen = torch.Generator().manual_seed(0)
    rows: list[dict] = []

    def add(**row):
        rows.append(row)
        print(json.dumps(row), flush=True)

    _, prof_swaps = measure.measure_copy_swap(model, bs, dev, blocks=ns)    # the profile's own numbers
    for n, t in zip(prof_swaps["blocks"], prof_swaps["time_s"]):
        add(kind="profile", direction="out", layout="scattered", n=n, rows=0, ms=t * 1e3, transfers=None)
    pairs = {(lay, n): swap_pairs(lay, n, decode_blocks, gen) for lay in LAYOUTS for n in ns}
    for (lay, n), p in pairs.items():
        for d in DIRECTIONS:
            fn = swap_fn(cache, d, p)
            add(kind="isolated", direction=d, layout=lay, n=n, rows=0, ms=time_isolated(cache, fn) * 1e3,
                transfers=transfers_of(cache, fn), runs=len(swap_runs(p)))
    dg = DecodeGraphs(model, cache.gpu, block_size=bs, max_batch=max(batches), batch_sizes=batches,
                      max_context_len=spec.max_seq_len, backend=backend)
    with torch.inference_mode():
        for b in batches:
            ids, pos, meta = synthetic_step([], [a.ctx] * b, block_size=bs, num_blocks=decode_blocks,
                                            vocab_size=spec.vocab_size, device=dev, backend=backend, generator=gen)

            def step():
                return model.compute_logits(dg.run(ids, pos, meta)).argmax(-1).tolist()
            for n in ns:
                variants = {("none", "-"): step}
                for (lay, m), p in pairs.items():
                    if m == n:
                        for d in DIRECTIONS:
                            variants[(d, lay)] = (lambda f: lambda: (f(), step())[1])(swap_fn(cache, d, p))
                medians = time_steps(variants, a.reps)
                for (d, lay), t in medians.items():
                    p = pairs.get((lay, n), [])
                    add(kind="step", direction=d, layout=lay, n=n, rows=b, ctx=a.ctx, ms=t * 1e3,
                        transfers=transfers_of(cache, swap_fn(cache, d, p)) if d != "none" else 0,
                        runs=len(swap_runs(p)) if d != "none" else 0)
    summary = summarise(rows)
    print_table(summary)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "swap_steps.json").write_text(json.dumps(
        {"gpu": torch.cuda.get_device_name(0) if cuda else "cpu (smoke run, not a measurement)",
         "model": spec.name, "staged": a.staged, "layers": L, "block_size": bs, "block_bytes": block_bytes, "ctx": a.ctx,
         "reps": a.reps, "graphs_captured": dg.captured if cuda else False, "torch": torch.__version__,
         "rows": rows, "summary": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
