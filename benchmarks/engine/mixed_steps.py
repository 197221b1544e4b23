"""Engine steps on the GPU against their roofline, under engine settings compared in one process.

Settings (``--settings``, comma list, each ``+``-joined): ``fused`` / ``plain`` layer ops; a mixed step's decode
rows attended inside the prefill kernel (``unified``: 64-row query tiles) or by the varlen decode kernel beside
it (``decodekernel``, :mod:`kvsim.kernels.varlen_decode`); ``persistent`` prefill grid; ``split`` (the decode
rows' contexts cut into partitions, :mod:`kvsim.kernels.varlen_split`); a token ladder
(``v1`` / ``v2`` of :data:`kvsim.graph_sizes.PREFILL_LADDERS`, default the current one); the prefill kernel's
``diag`` loop (:data:`kvsim.kernels.prefill.DIAG_SPLIT`) and launch (``pm128n64w8s3``: block_m, block_n, warps,
stages; default :data:`kvsim.kernels.prefill.LAUNCH`). Default: the engine
before issue #10's last changes (``fused+unified+v1``) against the current one (``fused+decodekernel``). For each
setting the script captures the engine's CUDA graphs (prefill/mixed graphs by token count, decode graphs by
batch) and times, through them: mixed steps (one fresh chunk + decode rows, the unified layout of chunked
prefill), prefill-only steps and decode-only steps. A step of T tokens replays the graph of ``padded`` T (the
token ladder of :mod:`kvsim.graph_sizes`): ``roofline_padded_ms`` is the roofline of that many tokens, so
the padding's share of the gap is visible. Roofline = max(bytes / copy bandwidth,
FLOPs / GEMM rate), both ceilings measured in the same run: bytes = every weight once + the KV read;
FLOPs = 2 x decoder-layer parameters x tokens + 2 x LM-head parameters x sampled rows + attention
(4 x layers x heads x head_dim x query-key pairs). Embedding lookups count as bytes, not FLOPs (the whole table:
this overstates the bytes by the table, ~1 GB for Llama-3-8B). Each row also has ``floor_ms``, the sequential
floor of :mod:`mixed_floor` (the kernels one after another, each at its own ceiling) at the same two ceilings.

usage (GPU): python benchmarks/engine/mixed_steps.py --model llama-3-8b --out DIR
Writes DIR/mixed_steps.json; prints one line per step and setting.
"""
from __future__ import annotations

import argparse
import json
import re
from dataclasses import replace
from pathlib import Path

import torch

from kvsim.calibrate.measure import _bench, _cache
from kvsim.catalogue import get_model
from kvsim.cost.calibrated import spread_contexts
from kvsim.engine.attention import as_unified
from kvsim.engine.cuda_graphs import DecodeGraphs, PrefillGraphs
from kvsim.engine.models import build_model
from kvsim.engine.synthetic_step import synthetic_step
from kvsim.graph_sizes import PREFILL_LADDER, PREFILL_LADDERS, padded, prefill_token_sizes
from mixed_floor import floors

SHAPES = [(16, 1024, 256), (64, 1024, 448), (128, 512, 384), (32, 2048, 480), (8, 2048, 504), (8, 256, 1024),
          (192, 1024, 1792)]
# decode rows of unequal contexts (evenly spaced up to the second number, as the spread grid's steps) beside a
# chunk: the longest row sets the decode kernel's makespan when rows x KV heads are few (split-KV's case); each
# also timed with every row at the mean context (kind mixed_twin): what the spread itself costs
SPREAD_SHAPES = [(18, 2048, 32), (24, 4096, 64), (8, 4096, 256), (64, 2048, 128)]
DECODE = [(1, 512), (8, 512), (32, 1024), (64, 1024), (128, 1024), (256, 512)]
PREFILL = [(1, 512), (4, 128), (1, 2000)]          # prompts x tokens, fresh (no cached context)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="llama-3-8b")
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run (tiny model, TRITON_INTERPRET=1)")
    ap.add_argument("--settings", default="fused+unified+v1,fused+decodekernel",
                    help="comma list of fused|plain + unified|decodekernel [+persistent] [+split|+split512] [+hosttimed [+idle]] [+v1|+v2] [+diag] [+pm<block_m>n<block_n>w<warps>s<stages>]")
    ap.add_argument("--persistent-prefill", action="store_true",
                    help="capture the prefill/mixed graphs with the persistent prefill grid (kvsim.kernels.prefill)")
    a = ap.parse_args()
    dev = torch.device(a.device)
    if dev.type != "cuda":
        global _bench, SHAPES, SPREAD_SHAPES, DECODE, PREFILL

        def _bench(fn):
            import time
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
        SHAPES, SPREAD_SHAPES, DECODE, PREFILL = [(2, 24, 8)], [(3, 24, 8)], [(2, 16)], [(2, 8)]
    spec = get_model(a.model)
    model = build_model(spec, dtype=torch.float16 if dev.type == "cuda" else torch.float32, device=dev,
                        weights="dummy")
    bs = a.block_size
    pool = (65536 if dev.type == "cuda" else 512) // bs
    caches = [_cache(model, pool, bs, dev) for _ in range(model.num_layers)]
    # the card's ceilings, measured here: copy bandwidth and fp16 GEMM rate
    x = torch.empty((2 << 30) if dev.type == "cuda" else 1 << 20, dtype=torch.uint8, device=dev)
    y = torch.empty_like(x)
    bw = 2 * x.numel() / _bench(lambda: y.copy_(x))
    del x, y
    g = 8192 if dev.type == "cuda" else 256
    m = torch.randn(g, g, dtype=torch.float16 if dev.type == "cuda" else torch.float32, device=dev)
    flops = 2 * g ** 3 / _bench(lambda: m @ m)
    wbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    layers = next(m for m in model.modules() if isinstance(m, torch.nn.ModuleList))
    layer_params = sum(p.numel() for p in layers.parameters())
    head_params = spec.vocab_size * spec.hidden_size
    kv_tok = 2 * model.num_layers * model.num_kv_heads * model.head_dim * 2
    attn = 4 * model.num_layers * spec.num_heads * model.head_dim
    gen = torch.Generator().manual_seed(0)
    rows = []

    def roofline(tokens, sampled, kv_read_tokens, pairs):
        mem = (wbytes + kv_tok * kv_read_tokens) / bw
        comp = (2 * layer_params * tokens + 2 * head_params * sampled + attn * pairs) / flops
        return max(mem, comp), ("memory" if mem >= comp else "compute")

    import kvsim.kernels.prefill as prefill
    DEFAULT_LAUNCH = dict(prefill.LAUNCH)
    import kvsim.kernels.varlen_decode as varlen_decode
    import kvsim.kernels.varlen_split as varlen_split
    from kvsim.calibrate import measure
    for setting in a.settings.split(","):
        parts = setting.split("+")
        fused, dkernel = "fused" in parts, "decodekernel" in parts
        prefill.PERSISTENT = a.persistent_prefill or "persistent" in parts
        # +diag: the prefill kernel masks only its window-start and diagonal key blocks; +pm128n64w8s3: its launch
        # (block_m, block_n, num_warps, num_stages), else the default
        prefill.DIAG_SPLIT = "diag" in parts
        launch = next((x for x in parts if re.fullmatch(r"pm\d+n\d+w\d+s\d+", x)), None)
        prefill.LAUNCH = (dict(zip(("block_m", "block_n", "num_warps", "num_stages"),
                                   map(int, re.findall(r"\d+", launch)))) if launch else dict(DEFAULT_LAUNCH))
        varlen_decode.SPLIT = "split" in parts or "split512" in parts
        varlen_split.BALANCED = "split512" not in parts      # +split512: every partition 512 positions
        # +hosttimed: each step on the host clock after the last (the calibration's prompt-step timer); +idle: and
        # after an idle gap of its own length (kvsim calibrate --grid-idle 1): does the card's power limit show?
        measure.GRID_IDLE = 1.0 if "idle" in parts else 0.0
        timer = (lambda fn: measure._bench_between(fn, lambda: None, reps=10)) if "hosttimed" in parts else _bench
        ladder = next((x for x in parts if x in PREFILL_LADDERS), None)
        if hasattr(model, "fused_ops"):
            model.fused_ops = fused
        common = dict(block_size=bs, max_context_len=spec.max_seq_len, backend="triton")
        pg = PrefillGraphs(model, caches, max_tokens=2048, max_seqs=256, decode_kernel=dkernel,
                           token_sizes=prefill_token_sizes(2048, ladder), **common)
        dg = DecodeGraphs(model, caches, max_batch=256, batch_sizes=sorted({n for n, _ in DECODE}), **common)
        tag = {"setting": setting, "fused_layer_ops": fused, "mixed_decode_kernel": dkernel,
               "prefill_launch": dict(prefill.LAUNCH), "prefill_diag_split": prefill.DIAG_SPLIT,
               "persistent_prefill": prefill.PERSISTENT, "prefill_ladder": ladder or PREFILL_LADDER}
        with torch.inference_mode():
            twins = [(n, round(sum(spread_contexts(n, c)) / n), t, "twin") for n, c, t in SPREAD_SHAPES]
            for n, ctx, chunk, spread in ([s + (False,) for s in SHAPES] + [s + ("spread",) for s in SPREAD_SHAPES]
                                          + twins):
                ctxs = spread_contexts(n, ctx) if spread == "spread" else [ctx] * n
                ids, pos, meta = synthetic_step([(chunk, 0)], ctxs, block_size=bs, num_blocks=pool,
                                                vocab_size=spec.vocab_size, device=dev, backend="triton",
                                                generator=gen)
                umeta = as_unified(meta, decode_kernel=dkernel)
                t = timer(lambda: model.compute_logits(pg.run(ids, pos, umeta)[-(n + 1):]).argmax(-1).tolist())
                kv = sum(ctxs)
                roof, bound = roofline(chunk + n, n + 1, kv + chunk, chunk * chunk / 2 + kv)
                tp = padded(chunk + n, pg.sizes)
                rows.append({"kind": f"mixed_{spread}" if spread else "mixed", **tag, "decode_rows": n, "ctx": ctx, "chunk": chunk,
                             "graph_ms": t * 1e3, "roofline_ms": roof * 1e3, "graph_over_roofline": t / roof,
                             "bound": bound, "padded_tokens": tp,
                             "roofline_padded_ms": roofline(tp, n + 1, kv + chunk, chunk * chunk / 2 + kv)[0] * 1e3})
                rows[-1]["floor_ms"] = floors({"model": spec.name, "copy_bw_Bps": bw, "gemm_flops": flops}, rows[-1])[1]
                rows[-1]["graph_over_floor"] = rows[-1]["graph_ms"] / rows[-1]["floor_ms"]
                print(json.dumps(rows[-1]), flush=True)
            for k, length in PREFILL:
                ids, pos, meta = synthetic_step([(length, 0)] * k, [], block_size=bs, num_blocks=pool,
                                                vocab_size=spec.vocab_size, device=dev, backend="triton",
                                                generator=gen)
                pmeta = replace(meta, single_rows_decode=dkernel)
                t = timer(lambda: model.compute_logits(pg.run(ids, pos, pmeta)[-k:]).argmax(-1).tolist())
                roof, bound = roofline(k * length, k, k * length, k * length * length / 2)
                rows.append({"kind": "prefill", **tag, "decode_rows": 0, "ctx": 0, "chunk": k * length, "prompts": k,
                             "graph_ms": t * 1e3, "roofline_ms": roof * 1e3, "graph_over_roofline": t / roof,
                             "bound": bound, "padded_tokens": padded(k * length, pg.sizes)})
                rows[-1]["floor_ms"] = floors({"model": spec.name, "copy_bw_Bps": bw, "gemm_flops": flops}, rows[-1])[1]
                rows[-1]["graph_over_floor"] = rows[-1]["graph_ms"] / rows[-1]["floor_ms"]
                print(json.dumps(rows[-1]), flush=True)
            for n, ctx in DECODE:
                ids, pos, meta = synthetic_step([], [ctx] * n, block_size=bs, num_blocks=pool,
                                                vocab_size=spec.vocab_size, device=dev, backend="triton",
                                                generator=gen)
                t = timer(lambda: model.compute_logits(dg.run(ids, pos, meta)).argmax(-1).tolist())
                roof, bound = roofline(n, n, n * ctx, n * ctx)
                rows.append({"kind": "decode", **tag, "decode_rows": n, "ctx": ctx, "chunk": 0,
                             "graph_ms": t * 1e3, "roofline_ms": roof * 1e3, "graph_over_roofline": t / roof,
                             "bound": bound})
                rows[-1]["floor_ms"] = floors({"model": spec.name, "copy_bw_Bps": bw, "gemm_flops": flops}, rows[-1])[1]
                rows[-1]["graph_over_floor"] = rows[-1]["graph_ms"] / rows[-1]["floor_ms"]
                print(json.dumps(rows[-1]), flush=True)
        del pg, dg
        torch.cuda.empty_cache()
    first = a.settings.split(",")[0]
    for r in rows:
        if r["setting"] != first:
            base = next(o for o in rows if o["setting"] == first and all(
                o[k] == r[k] for k in ("kind", "decode_rows", "ctx", "chunk")))
            print(f"{r['kind']:7s} rows {r['decode_rows']:3d} ctx {r['ctx']:4d} chunk {r['chunk']:4d}: "
                  f"{first} {base['graph_ms']:6.2f} ms -> {r['setting']} {r['graph_ms']:6.2f} ms "
                  f"({base['graph_ms'] / r['graph_ms']:.2f}x), roofline {r['roofline_ms']:6.2f} ms ({r['bound']}), "
                  f"/ roofline {base['graph_over_roofline']:.2f} -> {r['graph_over_roofline']:.2f}, "
                  f"/ sequential floor {base['graph_over_floor']:.2f} -> {r['graph_over_floor']:.2f}"
                  + (f" (padded to {r['padded_tokens']} tokens: roofline {r['roofline_padded_ms']:.2f} ms)"
                     if r.get("roofline_padded_ms") and r["padded_tokens"] != r["chunk"] + r["decode_rows"] else ""))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mixed_steps.json").write_text(json.dumps(
        {"gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu", "model": spec.name, "block_size": bs, "copy_bw_Bps": bw,
         "gemm_flops": flops, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
