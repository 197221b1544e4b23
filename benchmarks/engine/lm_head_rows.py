"""The LM head's time by the number of rows it runs on: does a row count between CUDA-graph batch sizes cost more?

Why. A decode step of ``n`` rows replays the decode graph of the next captured batch size ``b >= n``, but the LM
head ran after the graph on exactly the ``n`` rows the step samples, so its GEMM (``n x hidden`` by ``hidden x
vocab``) got whichever kernel cuBLAS picks for ``n``. In ``validation/H100-async-1207b`` a 3-row decode step took
0.14 ms more GPU time than a 4-row step at similar contexts, and 7 rows 0.08 ms more than 8 (H200-async ~0.1 ms;
OPT-13B, half the LM head's weights, 0.02 ms). Since then the runner pads the LM head's rows to the next graph size
(:meth:`kvsim.engine.runner.ModelRunner._logits`). This times the head alone, per row count, both ways:

* ``own_ms``: ``lm_head(x[:n]).float()`` at ``n`` rows (the engine before the change);
* ``padded_ms``: at ``b = padded(n)`` rows, the first ``n`` kept (the engine now).

Prediction (written before any run): ``own_ms`` at 3 and 7 rows is 0.05-0.15 ms above ``own_ms`` at 4 and 8 on an
H100 with Llama-3-8B, and ``padded_ms`` is within 0.01 ms of ``own_ms`` at the graph size. Each point is the median
of ``--reps`` calls timed one by one with CUDA events, after warm-up; random fp16 weights of the model's shape.

Result (an H100, 2026-12-07 08:06, ``benchmarks/engine/results_H100/lm_head_1207/``): wrong at 3 rows,
right at 7. Llama-3-8B: ``own_ms`` 0.3905 at 3 rows, 0.3909 at 4; 0.4477 at 7, 0.3959 at 8 (+0.052), padded 7 ->
0.4208; between graph sizes padded minus own a median +0.002 ms. OPT-13B: no row count over its graph size's by more
than 0.02 ms, padded minus own a median 0.000 ms. A 3-row decode step's 0.14 ms over a 4-row one is not the head's.

usage (GPU): python benchmarks/engine/lm_head_rows.py --model llama-3-8b [--rows 1-33] [--reps 200] --out DIR
CPU check of the plumbing (tiny model, wall clock): ... --model tiny-llama --cpu
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from kvsim.catalogue import get_model
from kvsim.graph_sizes import graph_batch_sizes, padded


def parse_rows(text: str) -> list[int]:
    """``"1-33"`` or ``"1,3,4"`` (or both, comma-separated) -> sorted row counts >= 1 (one-line error otherwise)."""
    out: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise SystemExit(f"error: --rows: {part!r} is not a row count or a range like 1-33") from None
        if a < 1 or b < a:
            raise SystemExit(f"error: --rows: {part!r} must be counts >= 1, low to high")
        out.update(range(a, b + 1))
    return sorted(out)


def pick_device(cpu: bool) -> torch.device:
    """The CUDA GPU, or the CPU where ``cpu`` (a plumbing check: the times mean nothing); a one-line error where
    there is no GPU and the CPU was not asked for."""
    if not cpu and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA GPU (use --cpu for a plumbing check)")
    return torch.device("cpu" if cpu else "cuda")


def time_call(fn, reps: int, cuda: bool) -> float:
    """Median seconds of ``fn()`` over ``reps`` calls, each timed alone (CUDA events, or the wall clock)."""
    for _ in range(10):
        fn()
    times = []
    for _ in range(reps):
        if cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(model: str, rows: list[int], reps: int, device: torch.device, max_batch: int = 256) -> list[dict]:
    spec = get_model(model)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    gen = torch.Generator(device=device).manual_seed(0)
    head = torch.nn.Linear(spec.hidden_size, spec.vocab_size, bias=False, device=device, dtype=dtype)
    with torch.no_grad():
        head.weight.normal_(0.0, 0.02, generator=gen)
    sizes = graph_batch_sizes(max_batch)
    x = torch.randn(max(padded(max(rows), sizes), max(rows)), spec.hidden_size, device=device, dtype=dtype,
                    generator=gen)
    out = []
    with torch.inference_mode():
        for n in rows:
            b = padded(n, sizes)
            own = time_call(lambda: head(x[:n]).float(), reps, device.type == "cuda")
            pad = time_call(lambda: head(x[:b]).float()[:n], reps, device.type == "cuda")
            out.append({"rows": n, "graph_rows": b, "own_ms": round(own * 1e3, 4), "padded_ms": round(pad * 1e3, 4)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama-3-8b")
    ap.add_argument("--rows", default="1-33")
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cpu", action="store_true", help="run on the CPU (plumbing check; the times mean nothing)")
    a = ap.parse_args()
    if a.reps < 1:
        raise SystemExit("error: --reps: must be >= 1")
    rows = parse_rows(a.rows)
    device = pick_device(a.cpu)
    res = measure(a.model, rows, a.reps, device)
    card = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "lm_head_rows.json").write_text(json.dumps({"model": a.model, "card": card, "reps": a.reps,
                                                               "rows": res}, indent=1))
    print(f"LM head of {a.model} on {card}: ms per call by rows (own: at the rows; padded: at the graph size)")
    for r in res:
        print(f"{r['rows']:>4} -> {r['graph_rows']:>4}  own {r['own_ms']:.4f}  padded {r['padded_ms']:.4f}")


if __name__ == "__main__":
    main()
