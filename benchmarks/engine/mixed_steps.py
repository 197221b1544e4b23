"""Mixed prefill+decode steps on the GPU: unified graph launch vs the two-launch eager step, and
the roofline of each (weights + KV bytes / measured copy bandwidth; FLOPs / measured GEMM rate).

usage (GPU): python benchmarks/engine/mixed_steps.py --model llama-3-8b --out DIR
Writes DIR/mixed_steps.json; prints one line per shape.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from kvsim.calibrate.measure import _bench, _cache
from kvsim.catalogue import get_model
from kvsim.engine.attention import as_unified
from kvsim.engine.cuda_graphs import PrefillGraphs
from kvsim.engine.models import build_model
from kvsim.engine.synthetic_step import synthetic_step

SHAPES = [(16, 1024, 256), (64, 1024, 448), (128, 512, 384), (32, 2048, 480), (8, 256, 1024), (192, 1024, 1792)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="llama-3-8b")
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    dev = torch.device("cuda")
    spec = get_model(a.model)
    model = build_model(spec, dtype=torch.float16, device=dev, weights="dummy")
    bs = a.block_size
    pool = 65536 // bs
    caches = [_cache(model, pool, bs, dev) for _ in range(model.num_layers)]
    graphs = PrefillGraphs(model, caches, block_size=bs, max_tokens=2048, max_seqs=256,
                           max_context_len=spec.max_seq_len, backend="triton")
    # the card's ceilings, measured here: copy bandwidth and fp16 GEMM rate
    x = torch.empty(2 << 30, dtype=torch.uint8, device=dev)
    y = torch.empty_like(x)
    bw = 2 * x.numel() / _bench(lambda: y.copy_(x))
    del x, y
    m = torch.randn(8192, 8192, dtype=torch.float16, device=dev)
    flops = 2 * 8192 ** 3 / _bench(lambda: m @ m)
    wbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    params = sum(p.numel() for p in model.parameters())
    kv_tok = 2 * model.num_layers * model.num_kv_heads * model.head_dim * 2
    gen = torch.Generator().manual_seed(0)
    rows = []
    with torch.inference_mode():
        for n, ctx, chunk in SHAPES:
            ids, pos, meta = synthetic_step([(chunk, 0)], [ctx] * n, block_size=bs, num_blocks=pool,
                                            vocab_size=spec.vocab_size, device=dev, backend="triton", generator=gen)
            umeta = as_unified(meta)
            t_eager = _bench(lambda: model.compute_logits(model(ids, pos, caches, meta)[-(n + 1):]).argmax(-1).tolist())
            t_graph = _bench(lambda: model.compute_logits(graphs.run(ids, pos, umeta)[-(n + 1):]).argmax(-1).tolist())
            tokens = chunk + n
            mem = (wbytes + kv_tok * (n * ctx + chunk)) / bw
            comp = (2 * params * tokens + 4 * model.num_layers * spec.num_heads * model.head_dim
                    * (chunk * chunk / 2 + n * ctx)) / flops
            roof = max(mem, comp)
            r = {"decode_rows": n, "ctx": ctx, "chunk": chunk, "eager_ms": t_eager * 1e3, "graph_ms": t_graph * 1e3,
                 "speedup": t_eager / t_graph, "roofline_ms": roof * 1e3, "graph_over_roofline": t_graph / roof,
                 "bound": "memory" if mem >= comp else "compute"}
            rows.append(r)
            print(json.dumps(r), flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mixed_steps.json").write_text(json.dumps(
        {"gpu": torch.cuda.get_device_name(0), "model": spec.name, "block_size": bs, "copy_bw_Bps": bw,
         "gemm_flops": flops, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
