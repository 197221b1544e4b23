"""Launch/pipelining/split sweep of the decode kernels, run as section (3) of bench_decode.py.

The first H200 run (NOTES.md, v1) showed the paged kernel 12-29 % slower than the contiguous
one exactly where there are few (sequence, KV head, split) programs (batch 8-32), and ~0 % where
there are >= ~1000 programs: the block-table load sits on the address path of the K/V loads, and
with few resident programs its latency is not hidden. This sweep times, with CUDA-graph replays
(no launch overhead), every combination of

* ``pipe``: 0 (Triton's pipeliner only), 1 (table prefetched one tile ahead), 2 (register
  double-buffering of K/V plus the table two tiles ahead);
* launch config ``(block_n, num_warps, num_stages)``;
* ``split_waves``: the split heuristic's target of ``split_waves * num_sms`` programs,

on shapes where the overhead showed plus one large no-split shape, per model. The paged choice
minimises the geometric mean of ``paged time / best contiguous time`` over the shapes; the
contiguous baseline gets its own best combination, so each side is measured at its best.
"""
from __future__ import annotations

import itertools
import math

import _bench_lib as L
from kvsim.kernels import DecodeConfig

LAUNCH = [(64, 4, 3), (64, 4, 2), (32, 4, 3), (128, 8, 2)]
PIPES = (0, 1, 2)
WAVES = (4, 8, 16)
SHAPES = {"llama-gqa-32/8": [(32, 8192), (8, 8192), (128, 8192)],
          "opt13b-mha-40/40": [(8, 8192), (8, 2048), (1, 8192)]}


def _configs(pipes, launch, waves):
    for pipe, (bn, nw, ns), sw in itertools.product(pipes, launch, waves):
        yield DecodeConfig(block_n=bn, num_warps=nw, num_stages=ns, pipe=pipe, split_waves=sw)


def _geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("inf")


def tune(b, paged_fn, contig_fn, auto_splits):
    """Fill ``b.best[model]`` (paged) and ``b.best_contig[model]``; append rows to ``b.rows``."""
    b.best_contig = getattr(b, "best_contig", {})
    for model, shapes in SHAPES.items():
        hq, hkv = L.MODELS[model]
        paged_t, contig_t = {}, {}
        for batch, ctx in shapes:
            sh = L.Shape(batch, ctx, hq, hkv)
            for kind, fn_of, cfgs, store in (
                    ("contiguous", lambda c: contig_fn(sh, c, None),
                     list(_configs((0, 2), LAUNCH[:2], WAVES)), contig_t),
                    ("paged", lambda c: paged_fn(sh, 16, c, None),
                     list(_configs(PIPES, LAUNCH, WAVES)), paged_t)):
                seen = {}
                for cfg in cfgs:
                    splits = auto_splits(sh, cfg)
                    key = (cfg.block_n, cfg.num_warps, cfg.num_stages, cfg.pipe, splits)
                    if key in seen:  # same kernel and grid as an earlier combination: reuse
                        store.setdefault(cfg, []).append(seen[key])
                        continue
                    row = dict(section="tune", model=model, hq=hq, hkv=hkv, batch=batch, ctx=ctx,
                               block_size=16 if kind == "paged" else "", impl=f"{kind}_pipe{cfg.pipe}",
                               splits=splits, block_n=cfg.block_n, num_warps=cfg.num_warps,
                               num_stages=cfg.num_stages, bytes=sh.kv_bytes,
                               error=f"split_waves={cfg.split_waves}")
                    try:
                        row["graph_ms"] = round(L.graph_ms(fn_of(cfg)), 5)
                        row["ms"] = row["graph_ms"]
                    except Exception as e:  # noqa: BLE001 - e.g. out of shared memory
                        row["error"] += "; " + repr(e)[:200]
                    b.add(**row)
                    t = row.get("graph_ms", float("inf"))
                    seen[key] = t
                    store.setdefault(cfg, []).append(t)
            sh.free()
        n = len(shapes)
        best_c = {i: min(ts[i] for ts in contig_t.values() if len(ts) == n) for i in range(n)}
        score_p = {c: _geomean([ts[i] / best_c[i] for i in range(n)]) for c, ts in paged_t.items() if len(ts) == n}
        score_c = {c: _geomean([ts[i] / best_c[i] for i in range(n)]) for c, ts in contig_t.items() if len(ts) == n}
        b.best[model] = min(score_p, key=score_p.get)
        b.best_contig[model] = min(score_c, key=score_c.get)
        top = sorted(score_p.items(), key=lambda kv: kv[1])[:5]
        print(f"[tune] {model}: paged best {b.best[model]} x{score_p[b.best[model]]:.3f} of best contiguous;"
              f" contiguous best {b.best_contig[model]} x{score_c[b.best_contig[model]]:.3f}", flush=True)
        for cfg, sc in top:
            print(f"   {sc:.3f} {cfg}", flush=True)
        for pipe in PIPES:
            best_pipe = min((s for c, s in score_p.items() if c.pipe == pipe), default=float("nan"))
            print(f"   best with pipe={pipe}: x{best_pipe:.3f}", flush=True)
    b.flush()


EXPERIMENT_SHAPES = [("llama-gqa-32/8", 32, 8192), ("llama-gqa-32/8", 8, 8192),
                     ("opt13b-mha-40/40", 8, 8192), ("opt13b-mha-40/40", 32, 8192)]


def pipe_experiment(b, paged_fn, contig_fn, auto_splits):
    """Smaller follow-up sweep (run 3): pipe 0/1/3 x num_stages 2/3 at block_n 64, 4 warps, default
    split heuristic, on the shapes where paging cost most; contiguous at stages 2/3 alongside."""
    for model, batch, ctx in EXPERIMENT_SHAPES:
        hq, hkv = L.MODELS[model]
        sh = L.Shape(batch, ctx, hq, hkv)
        for rep in (0, 1):
            for stages in (2, 3):
                c = DecodeConfig(num_stages=stages, pipe=0)
                variants = [("contiguous_pipe0", contig_fn(sh, c, None), c)]
                for pipe in (0, 1, 3):
                    c = DecodeConfig(num_stages=stages, pipe=pipe)
                    variants.append((f"paged_pipe{pipe}", paged_fn(sh, 16, c, None), c))
                for impl, fn, cfg in variants:
                    row = dict(section="pipe_experiment", model=model, hq=hq, hkv=hkv, batch=batch,
                               ctx=ctx, impl=impl, splits=auto_splits(sh, cfg), block_n=cfg.block_n,
                               num_warps=cfg.num_warps, num_stages=cfg.num_stages, bytes=sh.kv_bytes,
                               rep=rep, block_size=16 if impl.startswith("paged") else "")
                    try:
                        row["graph_ms"] = row["ms"] = round(L.graph_ms(fn), 5)
                    except Exception as e:  # noqa: BLE001
                        row["error"] = repr(e)[:200]
                    b.add(**row)
        sh.free()
    b.flush()
