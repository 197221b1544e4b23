"""kvsim's real engine end to end on the GPU: OPT-13B (dummy weights), ShareGPT-like requests.

Usage (one device call; see benchmarks/engine/run_gpu.sh):
    python benchmarks/engine/e2e.py --model opt-13b --rates 2,4 --allocators paged,orca_oracle \
        --duration 40 --offline 200 --out OUTDIR
Writes OUTDIR/e2e.csv (one row per run: throughput, latency percentiles, batch sizes, preemptions,
KV blocks, timing split), each run's records under OUTDIR/<run>/, and roofline.json: a large-batch
decode step against the memory roofline (weight bytes + KV bytes read) / measured copy bandwidth.
"""
from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path

import torch

import kvsim
from kvsim.catalogue import get_model
from kvsim.engine.engine import RealEngine
from kvsim.engine.models import build_model
from kvsim.output import write_engine_run

KEYS = ("throughput_req_s", "throughput_tok_s", "normalized_latency_s", "normalized_latency_p99_s",
        "ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s", "avg_batched_requests", "max_batched_requests",
        "preemptions", "peak_blocks_in_use", "requests_finished", "requests_total")


def scenario(model: str, allocator: str, rate: float | None, n: int, block_size: int):
    wl = {"dataset": "sharegpt_like", "num_requests": n}
    wl.update({"arrival": "burst"} if rate is None else {"arrival": "poisson", "rate_req_s": rate})
    return kvsim.load_scenario({"name": f"{model}-{allocator}-{'offline' if rate is None else f'{rate:g}rps'}",
                                "model": model, "gpu": "h100-80gb",
                                "engine": {"allocator": allocator, "block_size": block_size, "max_num_seqs": 256,
                                           "max_num_batched_tokens": 4096, "swap_space_gib": 8},
                                "workload": wl, "runtime": {"device": "cuda", "max_wall_s": 100}, "seed": 0})


def copy_bandwidth() -> float:
    x = torch.empty(2 << 30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    from triton.testing import do_bench
    t = do_bench(lambda: y.copy_(x), warmup=5, rep=30, return_mode="median") / 1e3
    return 2 * x.numel() / t          # bytes read + written per second


def decode_roofline(model, spec, shapes, pool_tokens: int = 32768) -> list[dict]:
    """Decode iterations (all layers, LM head, greedy sampling) at each ``(batch, ctx)`` of ``shapes``,
    eager and replayed from a CUDA graph, against the memory floor: weight bytes + KV bytes read, over
    the copy bandwidth measured in the same run. Block tables draw from a pool of ``pool_tokens``
    tokens (far beyond L2), so the KV reads come from DRAM without batch x ctx tokens of memory."""
    from kvsim.calibrate.measure import _bench
    from kvsim.engine.cuda_graphs import DecodeGraphs
    from kvsim.engine.synthetic_step import synthetic_step
    bs = 16
    pool = pool_tokens // bs
    kvh, hd, dt = model.num_kv_heads, model.head_dim, model.dtype
    caches = [(torch.randn(pool, bs, kvh, hd, device="cuda", dtype=dt),
               torch.randn(pool, bs, kvh, hd, device="cuda", dtype=dt)) for _ in range(model.num_layers)]
    graphs = DecodeGraphs(model, caches, block_size=bs, max_batch=max(b for b, _ in shapes),
                          max_context_len=spec.max_seq_len, backend="triton", batch_sizes=[b for b, _ in shapes])
    # fused q/k/v and gate/up weights are views of one tensor: count each storage once
    weight_bytes = sum(s.nbytes() for s in {p.untyped_storage().data_ptr(): p.untyped_storage()
                                            for p in model.parameters()}.values())
    bw = copy_bandwidth()
    gen = torch.Generator().manual_seed(0)
    rows = []
    for batch, ctx in shapes:
        ids, pos, meta = synthetic_step([], [ctx] * batch, block_size=bs, num_blocks=pool,
                                        vocab_size=spec.vocab_size, device="cuda", backend="triton", generator=gen)
        with torch.inference_mode():
            eager = _bench(lambda: model.compute_logits(model(ids, pos, caches, meta)).argmax(-1).tolist())
            graph = _bench(lambda: model.compute_logits(graphs.run(ids, pos, meta)).argmax(-1).tolist())
        kv_read = batch * ctx * spec.kv_bytes_per_token(2)
        floor = (weight_bytes + kv_read) / bw
        rows.append({"batch": batch, "ctx": ctx, "eager_step_s": eager, "graph_step_s": graph,
                     "graph_speedup": eager / graph, "weight_bytes": weight_bytes, "kv_bytes_read": kv_read,
                     "copy_bandwidth_Bps": bw, "roofline_s": floor, "eager_ratio_to_roofline": eager / floor,
                     "graph_ratio_to_roofline": graph / floor, "kv_pool_tokens": pool_tokens})
    del caches, graphs
    torch.cuda.empty_cache()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="opt-13b")
    ap.add_argument("--rates", default="2,4")
    ap.add_argument("--allocators", default="paged,orca_oracle")
    ap.add_argument("--duration", type=float, default=40.0, help="seconds of arrivals per online run")
    ap.add_argument("--offline", type=int, default=200, help="requests for the offline (burst) runs; 0 = skip")
    ap.add_argument("--offline-allocators", default="paged", help="allocators for the offline runs")
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--no-roofline", dest="roofline", action="store_false",
                    help="skip the decode-step roofline / CUDA-graph timing")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = get_model(a.model)
    t0 = time.perf_counter()
    model = build_model(spec, dtype=torch.float16, device=torch.device("cuda"), weights="dummy")
    print(f"built {spec.name} in {time.perf_counter() - t0:.1f} s", flush=True)
    runs = [(al, float(r)) for al in a.allocators.split(",") for r in a.rates.split(",") if r]
    if a.offline:
        runs += [(al, None) for al in a.offline_allocators.split(",")]
    runs = [r for r in runs if r[1] is None or a.rates]
    rows = []
    for al, rate in runs:
        n = a.offline if rate is None else max(1, int(rate * a.duration))
        sc = scenario(a.model, al, rate, n, a.block_size)
        t1 = time.perf_counter()
        res = RealEngine(sc, model=model).run()
        write_engine_run(res, out / sc.name)
        row = {"run": sc.name, "allocator": al, "rate_req_s": rate if rate is not None else "offline",
               "requests": n, **{k: res.summary[k] for k in KEYS}, "kv_blocks": res.info["kv_blocks"],
               "simulator_blocks": res.info["simulator_blocks"], "cpu_s_mean": res.info["cpu_s_mean"],
               "gpu_s_mean": res.info["gpu_s_mean"], "wall_s": time.perf_counter() - t1, "device": res.info["device"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
        del res
        gc.collect()                      # the engine's KV cache sits in reference cycles
        torch.cuda.empty_cache()
    import pandas as pd
    if rows:
        pd.DataFrame(rows).to_csv(out / "e2e.csv", index=False)
    gc.collect()
    torch.cuda.empty_cache()
    if a.roofline:
        shapes = [(1, 512), (8, 512), (32, 1024), (64, 1024), (128, 1024), (256, 512)]
        roofs = decode_roofline(model, spec, shapes)
        for r in roofs:
            r["device"] = torch.cuda.get_device_name(0)
            print(json.dumps(r), flush=True)
        (out / "roofline.json").write_text(json.dumps(roofs, indent=1) + "\n")


if __name__ == "__main__":
    main()
