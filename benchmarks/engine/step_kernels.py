"""Where a step's GPU time goes, kernel by kernel: the next question after `mixed_steps.py`.

Runs one mixed step (a fresh chunk + decode rows, the unified layout of chunked prefill) and one decode
step of the engine's model eagerly under `torch.profiler`, and sums the device time of every kernel into
groups (GEMM, attention, fused layer ops, cache writes, sampling/LM head, other), beside the step's roofline
terms. Kernel times are the same inside a CUDA graph; only the gaps between them differ, so the sum is
compared with the graph step time from `mixed_steps.py`.

With ``--graphs SETTINGS`` (GPU; e.g. ``unified,decodekernel``) it profiles the steps as the engine runs
them instead: replayed from the prefill/mixed and decode CUDA graphs (the mixed step's decode rows in the
prefill kernel, or by the decode kernel), and adds the replay's span on the GPU timeline (first kernel start
to last kernel end), the idle time between kernels inside it, and the kernel count.

usage (GPU): python benchmarks/engine/step_kernels.py --model llama-3-8b --out DIR [--graphs unified,decodekernel]
             (CPU smoke: --device cpu --model tiny-llama, with TRITON_INTERPRET=1)
Writes DIR/step_kernels.json (DIR/step_kernels_graphs.json with --graphs) and prints one table per step.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch

from kvsim.calibrate.measure import _cache
from kvsim.catalogue import get_model
from kvsim.engine.attention import as_unified
from kvsim.engine.models import build_model
from kvsim.engine.synthetic_step import synthetic_step

STEPS = [("mixed", 16, 1024, 256), ("mixed", 64, 1024, 448), ("mixed", 1, 256, 1024), ("mixed", 8, 2048, 504),
         ("decode", 32, 1024, 0)]
GROUPS = [("gemm", r"gemm|gemv|cutlass|sm90|cublas|ampere|hopper|splitk|nvjet|xmma|aten::mm|addmm"),
          ("attention", r"prefill_kernel|decode_kernel|reduce_kernel|attn"),
          ("fused layer ops", r"rmsnorm|rope|silu"),
          ("cache write", r"write_kv"),
          ("lm head / sampling", r"argmax|reduce|softmax|max_|index|gather"),
          ("other", r".")]


def group_of(name: str) -> str:
    n = name.lower()
    return next(g for g, pat in GROUPS if re.search(pat, n))


def timeline(prof) -> dict:
    """Span of the profiled kernels on the GPU timeline, the idle time inside it, and their count."""
    ivs = sorted((e.time_range.start, e.time_range.end) for e in prof.events()
                 if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA and e.time_range.end > 0)
    if not ivs:
        return {}
    busy, cur_s, cur_e = 0.0, ivs[0][0], ivs[0][1]
    for a, b in ivs[1:]:
        if a > cur_e:
            busy += cur_e - cur_s
            cur_s, cur_e = a, b
        else:
            cur_e = max(cur_e, b)
    busy += cur_e - cur_s
    span = ivs[-1][1] - ivs[0][0]
    return {"span_ms": span / 1e3, "idle_ms": (span - busy) / 1e3, "kernels": len(ivs)}


def profile_step(model, caches, ids, pos, meta, rows: int, dev, run=None) -> dict:
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])

    def step():
        hidden = model(ids, pos, caches, meta) if run is None else run(ids, pos, meta)
        model.compute_logits(hidden[-rows:]).argmax(-1).tolist()
    with torch.inference_mode():
        for _ in range(3):
            step()
        with profile(activities=acts) as prof:
            step()
    kernels: dict[str, float] = {}
    for ev in prof.key_averages():
        t = getattr(ev, "device_time_total", 0.0) if dev.type == "cuda" else ev.self_cpu_time_total
        if t > 0 and (dev.type != "cuda" or getattr(ev, "device_type", None) == torch.autograd.DeviceType.CUDA):
            kernels[ev.key] = kernels.get(ev.key, 0.0) + t / 1e3        # ms
    groups: dict[str, float] = {}
    for k, t in kernels.items():
        g = group_of(k)
        groups[g] = groups.get(g, 0.0) + t
    top = sorted(kernels.items(), key=lambda kv: -kv[1])[:12]
    return {"groups_ms": groups, "total_ms": sum(kernels.values()), "top_kernels_ms": top,
            **(timeline(prof) if dev.type == "cuda" else {})}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="llama-3-8b")
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", required=True)
    ap.add_argument("--graphs", default="", help="profile graph replays: comma list of unified|decodekernel "
                                                  "[+persistent] [+split] [+v1|+v2] (the mixed_steps.py settings)")
    a = ap.parse_args()
    dev = torch.device(a.device)
    spec = get_model(a.model)
    cuda = dev.type == "cuda"
    model = build_model(spec, dtype=torch.float16 if cuda else torch.float32, device=dev, weights="dummy")
    bs = a.block_size
    pool = (65536 if cuda else 512) // bs
    caches = [_cache(model, pool, bs, dev) for _ in range(model.num_layers)]
    steps = STEPS if cuda else [("mixed", 2, 24, 8), ("decode", 2, 16, 0)]
    gen = torch.Generator().manual_seed(0)
    out = []
    import kvsim.kernels.prefill as prefill
    import kvsim.kernels.varlen_decode as varlen_decode
    from kvsim.graph_sizes import PREFILL_LADDERS, prefill_token_sizes
    for setting in (a.graphs.split(",") if a.graphs else ["eager"]):
        parts = setting.split("+")
        dk = "decodekernel" in parts
        prefill.PERSISTENT = "persistent" in parts
        varlen_decode.SPLIT = "split" in parts
        pg = dg = None
        if setting != "eager":
            from kvsim.engine.cuda_graphs import DecodeGraphs, PrefillGraphs
            common = dict(block_size=bs, max_context_len=spec.max_seq_len, backend="triton")
            ladder = next((x for x in parts if x in PREFILL_LADDERS), None)
            pg = PrefillGraphs(model, caches, max_tokens=2048, max_seqs=256, decode_kernel=dk,
                               token_sizes=prefill_token_sizes(2048, ladder), **common)
            dg = DecodeGraphs(model, caches, max_batch=256, batch_sizes=sorted({n for k, n, _, _ in steps if k == "decode"}),
                              **common)
        for kind, n, ctx, chunk in steps:
            prefills = [(chunk, 0)] if chunk else []
            ids, pos, meta = synthetic_step(prefills, [ctx] * n, block_size=bs, num_blocks=pool,
                                            vocab_size=spec.vocab_size, device=dev, backend="triton", generator=gen)
            if chunk:
                meta = as_unified(meta, decode_kernel=dk)
            run = None if pg is None else (pg.run if chunk else dg.run)
            r = {"setting": setting, "kind": kind, "decode_rows": n, "ctx": ctx, "chunk": chunk,
                 **profile_step(model, caches, ids, pos, meta, n + (1 if chunk else 0), dev, run)}
            out.append(r)
            print(f"[{setting}] {kind} {n} x {ctx} + {chunk}: kernels {r['total_ms']:.2f} ms"
                  + (f", span {r['span_ms']:.2f} ms, idle {r['idle_ms']:.2f} ms, {r['kernels']} kernels"
                     if "span_ms" in r else "") + " — " + ", ".join(
                f"{g} {t:.2f}" for g, t in sorted(r["groups_ms"].items(), key=lambda kv: -kv[1])), flush=True)
            for name, t in r["top_kernels_ms"][:6]:
                print(f"    {t:7.3f} ms  {name[:100]}")
        del pg, dg
    p = Path(a.out)
    p.mkdir(parents=True, exist_ok=True)
    (p / ("step_kernels_graphs.json" if a.graphs else "step_kernels.json")).write_text(json.dumps(
        {"gpu": torch.cuda.get_device_name(0) if cuda else "cpu", "model": spec.name, "steps": out}, indent=1) + "\n")


if __name__ == "__main__":
    main()
