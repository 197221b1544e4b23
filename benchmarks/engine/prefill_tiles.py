"""The paged prefill attention kernel's launch configuration, swept on the GPU: how far it runs from a
FLOP floor, per configuration, at the chunk shapes chunked prefill and whole prompts produce.

Why: a graph-replayed 1,024-token chunk of Llama-3-8B spends 2.84 ms of its 30 ms step in
``_prefill_kernel`` (``step_kernels.py --graphs``, results_H100/split_1207f), about 100 TFLOP/s of causal
attention, while its GEMMs run near the card's GEMM rate. This times
:func:`kvsim.kernels.prefill.paged_prefill_attention` alone (one layer's launch, the engine's inputs: paged
K/V through a random block table, ``cu_tiles`` computed once as the engine does per step) for every
``(block_m, block_n, num_warps, num_stages)``, with and without ``diag_split`` (and the persistent grid), checks each output against the
default configuration's, and reports time and achieved TFLOP/s (causal query-key pairs x 4 x heads x head_dim).

usage (GPU): python benchmarks/engine/prefill_tiles.py --model llama-3-8b --out DIR
             (CPU smoke: --device cpu --model tiny-llama, with TRITON_INTERPRET=1)
       python benchmarks/engine/prefill_tiles.py --pick DIR/prefill_tiles.json   (CPU)
Writes DIR/prefill_tiles.json and prints one line per shape and configuration, fastest first. ``--pick`` prints the
configuration with the least geometric-mean time over the shapes (among those that ran at every shape) as a
``mixed_steps.py`` setting (``pm128n64w8s3``, ``+diag`` when the diagonal-only mask is on) and, on stderr, its
speed-up over the default at each shape.
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch

from kvsim.catalogue import get_model
from kvsim.kernels.prefill import paged_prefill_attention, prefill_tile_starts

# (sequences, new tokens each, cached context each): whole prompts, chunks over a cached prefix, small batches
SHAPES = [(1, 512, 0), (1, 1024, 0), (1, 2000, 0), (1, 512, 2048), (1, 256, 3840), (4, 128, 0), (2, 1024, 1024)]
DEFAULT = dict(block_m=64, block_n=64, num_warps=4, num_stages=2, diag_split=False)


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def pairs(new: int, ctx: int) -> int:
    """Causal query-key pairs of ``new`` tokens after ``ctx`` cached ones."""
    return new * ctx + new * (new + 1) // 2


def inputs(seqs, new, ctx, heads, kv_heads, dim, bs, dtype, dev, gen):
    total = seqs * (new + ctx)
    width = -(-(new + ctx) // bs)
    num_blocks = seqs * width + 8
    perm = torch.randperm(num_blocks, generator=gen)[:seqs * width].view(seqs, width).to(torch.int32)
    k = torch.randn(num_blocks, bs, kv_heads, dim, generator=gen).to(dtype).to(dev)
    v = torch.randn(num_blocks, bs, kv_heads, dim, generator=gen).to(dtype).to(dev)
    q = torch.randn(seqs * new, heads, dim, generator=gen).to(dtype).to(dev)
    qsl = torch.arange(0, seqs * new + 1, new, dtype=torch.int32).to(dev)
    cl = torch.full((seqs,), ctx, dtype=torch.int32).to(dev)
    assert total <= num_blocks * bs
    return q, k, v, perm.to(dev), qsl, cl


def pick(path: str) -> str:
    """The configuration with the least geometric-mean time over every shape of a sweep (see module doc)."""
    import math
    import sys
    shapes = json.loads(Path(path).read_text())["shapes"]
    keys = ("block_m", "block_n", "num_warps", "num_stages", "diag_split")
    times: dict[tuple, list[float]] = {}
    for sh in shapes:
        for r in sh["results"]:
            if "ms" in r and not r["persistent"]:
                times.setdefault(tuple(r[k] for k in keys), []).append(r["ms"])
    full = {c: t for c, t in times.items() if len(t) == len(shapes)}
    best = min(full, key=lambda c: sum(math.log(x) for x in full[c]))
    base = full[tuple(DEFAULT[k] for k in keys)]
    print(" ".join(f"{b / x:.2f}x" for b, x in zip(base, full[best])), file=sys.stderr)
    m, n, w, st, d = best
    return f"pm{m}n{n}w{w}s{st}" + ("+diag" if d else "")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="llama-3-8b")
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--out")
    ap.add_argument("--pick", metavar="JSON", help="print the best configuration of a sweep's file and exit")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--persistent", choices=("both", "off"), default="off",
                    help="time each configuration with the persistent grid too (both) or not (off)")
    ap.add_argument("--block-m", type=ints, default=(64, 128))
    ap.add_argument("--block-n", type=ints, default=(32, 64, 128))
    ap.add_argument("--warps", type=ints, default=(4, 8))
    ap.add_argument("--stages", type=ints, default=(2, 3, 4))
    ap.add_argument("--diag", type=ints, default=(0, 1), help="diag_split off (0) / on (1)")
    a = ap.parse_args()
    if a.pick:
        print(pick(a.pick))
        return
    if not a.out:
        ap.error("--out is required")
    dev = torch.device(a.device)
    spec = get_model(a.model)
    heads, kv_heads = spec.num_heads, spec.num_kv_heads
    dim = spec.hidden_size // heads
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    shapes = SHAPES
    configs = [dict(block_m=m, block_n=n, num_warps=w, num_stages=st, diag_split=bool(d))
               for m, n, w, st, d in itertools.product(a.block_m, a.block_n, a.warps, a.stages, a.diag)]
    if DEFAULT not in configs:
        configs.insert(0, DEFAULT)
    if dev.type == "cuda":
        from kvsim.calibrate.measure import _bench
    else:
        shapes, configs = [(1, 24, 8), (2, 8, 16)], [DEFAULT, dict(DEFAULT, block_m=128, num_warps=8, diag_split=True)]

        def _bench(fn):
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
    gen = torch.Generator().manual_seed(0)
    rows = []
    for seqs, new, ctx in shapes:
        q, k, v, bt, qsl, cl = inputs(seqs, new, ctx, heads, kv_heads, dim, a.block_size, dtype, dev, gen)
        group = heads // kv_heads
        ref = paged_prefill_attention(q, k, v, bt, qsl, cl, **DEFAULT)
        flop = 4 * heads * dim * seqs * pairs(new, ctx)
        res = []
        for cfg in configs:
            for persistent in ((False, True) if a.persistent == "both" else (False,)):
                out = torch.empty_like(q)
                cu = prefill_tile_starts(qsl, group, cfg["block_m"])
                fn = lambda: paged_prefill_attention(q, k, v, bt, qsl, cl, out=out, cu_tiles=cu,   # noqa: E731
                                                     persistent=persistent, **cfg)
                try:
                    fn()
                    err = float((out.float() - ref.float()).abs().max())
                    t = _bench(fn)
                except Exception as e:                      # out of shared memory, say: recorded, not fatal
                    res.append(dict(cfg, persistent=persistent, error=f"{type(e).__name__}: {str(e)[:120]}"))
                    continue
                res.append(dict(cfg, persistent=persistent, ms=t * 1e3, tflops=flop / t / 1e12, max_abs_diff=err))
        ok = sorted((r for r in res if "ms" in r), key=lambda r: r["ms"])
        base = next(r for r in res if "ms" in r and not r["persistent"]
                    and all(r[key] == val for key, val in DEFAULT.items()))
        for r in ok[:8] + ([] if base in ok[:8] else [base]):
            print(f"{seqs} x {new:5d} + ctx {ctx:5d}: m{r['block_m']:3d} n{r['block_n']:3d} w{r['num_warps']} "
                  f"s{r['num_stages']} {'D' if r['diag_split'] else ' '}{'P' if r['persistent'] else ' '} {r['ms']:8.4f} ms {r['tflops']:6.1f} TFLOP/s "
                  f"({base['ms'] / r['ms']:.2f}x default, max diff {r['max_abs_diff']:.2e})"
                  + ("  <- default" if r is base else ""))
        rows.append(dict(seqs=seqs, new=new, ctx=ctx, flop=flop, results=res))
    meta = dict(model=a.model, block_size=a.block_size, device=torch.cuda.get_device_name() if dev.type == "cuda"
                else "cpu", heads=heads, kv_heads=kv_heads, head_dim=dim, dtype=str(dtype))
    Path(a.out).mkdir(parents=True, exist_ok=True)
    Path(a.out, "prefill_tiles.json").write_text(json.dumps(dict(meta=meta, shapes=rows), indent=1))


if __name__ == "__main__":
    main()
