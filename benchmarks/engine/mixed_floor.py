"""A second floor for the engine's steps, beside mixed_steps.py's roofline: the kernels run one after another.

``mixed_steps.py`` compares each graph-replayed step with the classic roofline, ``max(bytes / bandwidth,
FLOPs / GEMM rate)``. A layer's kernels are sequential (the attention of layer i needs its QKV GEMM, the MLP
needs the attention), so the KV read of a mixed step cannot hide under its compute-bound GEMMs. This script
adds the *sequential floor*: linear-layer and attention FLOPs at the measured GEMM rate, plus the KV read at the
measured copy bandwidth (plus the weights' read where a GEMM is memory-bound: ``max`` per term, summed). It
reads the ceilings mixed_steps.py measured in the same run (``gemm_flops``, ``copy_bw_Bps``) and the model's
shapes from the catalogue; no GPU needed.

usage: python benchmarks/engine/mixed_floor.py benchmarks/engine/results_H200/mixed_1845/mixed_steps.json
"""
from __future__ import annotations

import argparse
import json

from kvsim.catalogue import get_model
from kvsim.cost.profile import spread_contexts


def floors(doc: dict, row: dict) -> tuple[float, float]:
    """(roofline, sequential floor) in ms of one row of mixed_steps.json."""
    m = get_model(doc["model"])
    bw, rate = doc["copy_bw_Bps"], doc["gemm_flops"]
    h, kvh, hd, L = m.hidden_size, m.num_kv_heads, m.head_dim, m.num_layers
    layer = L * (h * (m.num_heads + 2 * kvh) * hd + m.num_heads * hd * h + m.mlp_matrices * h * m.ffn_hidden_size)
    head = m.vocab_size * h
    n, ctx, chunk = row["decode_rows"], row["ctx"], row["chunk"]
    if row["kind"] == "prefill":
        tokens, sampled, kv_tokens, pairs = chunk, row.get("prompts", 1), chunk, chunk * chunk / 2 / row.get("prompts", 1)
    else:
        # (a mixed_spread row's decode rows hold the bench's evenly spaced contexts up to ``ctx``)
        kv_rows = sum(spread_contexts(n, ctx)) if row["kind"] == "mixed_spread" else n * ctx
        tokens, sampled, kv_tokens = chunk + n, n + (1 if chunk else 0), kv_rows + chunk
        pairs = chunk * chunk / 2 + kv_rows
    kv_bytes = 2 * L * kvh * hd * 2 * kv_tokens
    w_bytes = 2 * (layer + 2 * head)          # fp16 weights (embedding + LM head)
    attn_flops = 4 * L * m.num_heads * hd * pairs
    gemm = max((2 * layer * tokens + 2 * head * sampled) / rate, w_bytes / bw)
    attention = max(attn_flops / rate, kv_bytes / bw)
    return row["roofline_ms"], (gemm + attention) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("json")
    a = ap.parse_args()
    doc = json.load(open(a.json))
    print(f"{doc['gpu']}, {doc['model']}: GEMM {doc['gemm_flops'] / 1e12:.0f} TFLOP/s, copy {doc['copy_bw_Bps'] / 1e12:.2f} TB/s")
    print("| step | setting | graph ms | roofline ms | / roofline | sequential floor ms | / floor |")
    print("|---|---|---|---|---|---|---|")
    for r in doc["rows"]:
        roof, seq = floors(doc, r)
        shape = (f"{r['decode_rows']} x {r['ctx']} + {r['chunk']}" if r["kind"] == "mixed" else
                 f"{r.get('prompts', 1)} x {r['chunk'] // r.get('prompts', 1)}" if r["kind"] == "prefill" else
                 f"{r['decode_rows']} x {r['ctx']}")
        print(f"| {r['kind']} {shape} | {r['setting']} | {r['graph_ms']:.2f} | {roof:.2f} | {r['graph_ms'] / roof:.2f} "
              f"| {seq:.2f} | {r['graph_ms'] / seq:.2f} |")


if __name__ == "__main__":
    main()
