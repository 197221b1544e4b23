"""Can a mixed step's memory-bound attention run under its compute-bound GEMMs? A probe before building it.

Issue #10 asks for mixed steps within 1.3x of their roofline, ``max(bytes / bandwidth, FLOPs / GEMM rate)``.
The engine runs a layer's kernels one after another, so the decode rows' KV read adds to the GEMM time (the
*sequential floor* of ``mixed_floor.py``, already 1.17-1.5x that roofline on the H200). Meeting the target needs
the two to overlap: e.g. two micro-batches per step (NanoFlow-style), one's attention beside the other's GEMMs.
Whether that can pay depends on whether the card runs a full-occupancy GEMM and a paged decode-attention kernel
side by side at all (both want every SM). This script measures exactly that, per layer of the model's shapes:

* ``gemm``: the layer's four products for ``T`` tokens (QKV, output, gate+up or fc1, down or fc2), fp16;
* ``attn``: paged decode attention of ``n`` rows over ``ctx`` tokens each (kvsim's Triton kernel, block 16);
* ``sequential``: both on one stream; ``concurrent``: GEMMs on one stream, attention on another, joined.

It prints, per shape, the four times (median of many replays of a CUDA graph of ``--layers`` layers, so launch
gaps do not count), ``concurrent / sequential`` and how much of the attention was hidden
(``(sequential - concurrent) / attn``), and writes them as JSON. No kvsim engine change is involved.

usage (GPU): python benchmarks/engine/overlap_probe.py --model llama-3-8b --out DIR
             [--shapes 64x1024+448,16x1024+256,128x512+384] [--layers 8]
CPU check of the plumbing (tiny shapes, torch attention, no streams): ... --model tiny-llama --cpu
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from kvsim.catalogue import get_model

BS = 16


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
    """``"64x1024+448,16x1024+256"`` -> [(rows, ctx, chunk), ...] (one-line error on anything else)."""
    out = []
    for part in text.split(","):
        try:
            rows_ctx, chunk = part.strip().split("+")
            rows, ctx = rows_ctx.split("x")
            shape = (int(rows), int(ctx), int(chunk))
        except ValueError:
            raise SystemExit(f"error: --shapes: {part!r} is not ROWSxCTX+CHUNK (e.g. 64x1024+448)") from None
        if min(shape) < 1:
            raise SystemExit(f"error: --shapes: {part!r}: rows, context and chunk must be >= 1")
        out.append(shape)
    return out


class Layer:
    """One layer's weights and a paged KV cache for ``n`` rows of ``ctx`` tokens, on ``dev``."""

    def __init__(self, spec, n: int, ctx: int, chunk: int, dev, dtype):
        h, hd = spec.hidden_size, spec.head_dim
        t = n + chunk                                  # the step's tokens: one per decode row + the chunk
        mk = lambda *s: torch.randn(*s, device=dev, dtype=dtype) * 0.02   # noqa: E731
        self.x = mk(t, h)
        self.w = [mk(h, (spec.num_heads + 2 * spec.num_kv_heads) * hd), mk(spec.num_heads * hd, h),
                  mk(h, (spec.mlp_matrices - 1) * spec.ffn_hidden_size), mk(spec.ffn_hidden_size, h)]
        per = -(-ctx // BS)
        self.k, self.v = mk(n * per, BS, spec.num_kv_heads, hd), mk(n * per, BS, spec.num_kv_heads, hd)
        self.table = torch.arange(n * per, device=dev, dtype=torch.int32).view(n, per)
        self.lens = torch.full((n,), ctx, device=dev, dtype=torch.int32)
        self.q = mk(n, spec.num_heads, hd)
        self.out = torch.empty_like(self.q)
        self.ctx = ctx
        self.buf = [torch.empty(t, w.shape[1], device=dev, dtype=dtype) for w in self.w]

    def gemm(self) -> None:
        """QKV, the output projection (on the attention-output width), gate+up (or fc1), down (or fc2)."""
        torch.matmul(self.x, self.w[0], out=self.buf[0])
        torch.matmul(self.buf[0][:, : self.w[1].shape[0]], self.w[1], out=self.buf[1])
        torch.matmul(self.x, self.w[2], out=self.buf[2])
        torch.matmul(self.buf[2][:, : self.w[3].shape[0]], self.w[3], out=self.buf[3])

    def attn(self, backend: str) -> None:
        from kvsim.kernels.decode import paged_decode_attention
        paged_decode_attention(self.q, self.k, self.v, self.table, self.lens, max_context_len=self.ctx,
                               out=self.out, backend=backend)


def _time(fn, dev, reps: int) -> float:
    """Median ms of ``fn`` (a graph replay on CUDA, a plain call on the CPU)."""
    samples = []
    for _ in range(reps):
        if dev.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            samples.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def probe(spec, shape, dev, dtype, layers: int, reps: int) -> dict:
    n, ctx, chunk = shape
    stack = [Layer(spec, n, ctx, chunk, dev, dtype) for _ in range(layers)]
    backend = "triton" if dev.type == "cuda" else "torch"
    cuda = dev.type == "cuda"
    side = torch.cuda.Stream() if cuda else None

    def gemm():
        for lay in stack:
            lay.gemm()

    def attn():
        for lay in stack:
            lay.attn(backend)

    def sequential():
        for lay in stack:
            lay.gemm()
            lay.attn(backend)

    def concurrent():
        if not cuda:                       # no streams on the CPU: the plumbing only
            return sequential()
        main = torch.cuda.current_stream()
        for lay in stack:
            side.wait_stream(main)
            with torch.cuda.stream(side):
                lay.attn(backend)
            lay.gemm()
            main.wait_stream(side)

    out = {}
    for name, fn in (("gemm", gemm), ("attn", attn), ("sequential", sequential), ("concurrent", concurrent)):
        run = fn
        if cuda:                           # one graph of all layers: no launch gaps in the timing
            fn()
            torch.cuda.synchronize()
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                fn()
            run = g.replay
            for _ in range(3):
                run()
            torch.cuda.synchronize()
        out[name] = _time(run, dev, reps) / layers
    seq, con = out["sequential"], out["concurrent"]
    return {"rows": n, "ctx": ctx, "chunk": chunk, **{f"{k}_ms_per_layer": round(v, 4) for k, v in out.items()},
            "concurrent_over_sequential": round(con / seq, 4),
            "attention_hidden": round((seq - con) / out["attn"], 4) if out["attn"] > 0 else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama-3-8b")
    ap.add_argument("--shapes", default="64x1024+448,16x1024+256,128x512+384,32x2048+480,192x1024+1792")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--cpu", action="store_true", help="check the plumbing on the CPU (tiny model, no streams)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    shapes = parse_shapes(a.shapes)
    if a.layers < 1 or a.reps < 1:
        raise SystemExit("error: --layers and --reps must be >= 1")
    if not a.cpu and not torch.cuda.is_available():
        raise SystemExit("error: needs a CUDA GPU (or --cpu to check the plumbing)")
    dev = torch.device("cpu" if a.cpu else "cuda")
    dtype = torch.float32 if a.cpu else torch.float16
    spec = get_model(a.model)
    rows = [probe(spec, s, dev, dtype, a.layers, a.reps) for s in shapes]
    card = torch.cuda.get_device_name() if not a.cpu else "CPU (plumbing check, not a measurement)"
    doc = {"card": card, "model": spec.name, "layers_per_graph": a.layers, "rows": rows,
           "command": "python benchmarks/engine/overlap_probe.py " + " ".join(
               f"--{k.replace('_', '-')} {v}" if not isinstance(v, bool) else f"--{k}" for k, v in vars(a).items()
               if v is not False)}
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "overlap_probe.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{card}, {spec.name}, per layer (ms), graph of {a.layers} layers, median of {a.reps}")
    print("| rows x ctx + chunk | gemm | attn | sequential | concurrent | conc / seq | attention hidden |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['rows']} x {r['ctx']} + {r['chunk']} | {r['gemm_ms_per_layer']:.3f} | {r['attn_ms_per_layer']:.3f} "
              f"| {r['sequential_ms_per_layer']:.3f} | {r['concurrent_ms_per_layer']:.3f} "
              f"| {r['concurrent_over_sequential']:.3f} | {r['attention_hidden']} |")


if __name__ == "__main__":
    main()
