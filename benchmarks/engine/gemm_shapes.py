"""A decoder layer's GEMMs at the token counts the engine's prefill/mixed graphs replay, against the card's GEMM rate.

Why: a mixed or prefill step at 250-1,100 tokens spends 1.05-1.45x its FLOP time in cuBLAS (benchmarks/engine/
results_H200/mixed_1845), and the graph of a padded size can pick a slower kernel than the eager call at the
unpadded size. This times each of one layer's weight GEMMs (``F.linear``, the engine's call, real shapes from
:func:`kvsim.calibrate.measure.layer_weights`) at each token count in up to three ways, in one process:

* ``default``  torch's cuBLAS call as the engine makes it today;
* ``lt``       ``torch.backends.cuda.preferred_blas_library("cublaslt")``;
* ``tuned``    TunableOp (``torch.cuda.tunable``): every cuBLAS/cuBLASLt algorithm tried per shape, fastest kept
  (``--tuning-ms`` per candidate); its choices are written to DIR/tunableop_results.csv.

The GEMM rate is the median of an 8192-cube fp16 GEMM timed in the same run (the roofline of mixed_steps.py).
usage (GPU): python benchmarks/engine/gemm_shapes.py --model llama-3-8b --out DIR [--tokens 272,288,...]
Writes DIR/gemm_shapes.json and prints a table: per token count, the layer's GEMM time / FLOP time per way.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from kvsim.calibrate.measure import _bench, layer_weights
from kvsim.catalogue import get_model
from kvsim.engine.models import build_model

TOKENS = [16, 64, 128, 256, 272, 288, 384, 448, 512, 640, 1024, 1032, 1088, 1280, 1792, 2000, 2048]


def peak_rate(dev) -> float:
    a = torch.randn(8192, 8192, device=dev, dtype=torch.float16)
    return 2 * 8192 ** 3 / _bench(lambda: a @ a)


def time_layer(weights, tokens, dev) -> list[float]:
    out = []
    for w in weights:
        x = torch.randn(tokens, w.shape[1], device=dev, dtype=w.dtype)
        F.linear(x, w)            # TunableOp tunes a shape on its first call
        torch.cuda.synchronize()
        out.append(_bench(lambda: F.linear(x, w)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="llama-3-8b")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokens", default=",".join(map(str, TOKENS)))
    ap.add_argument("--ways", default="default,lt,tuned")
    ap.add_argument("--tuning-ms", type=int, default=15, help="TunableOp: tuning time per candidate (ms)")
    a = ap.parse_args()
    dev = torch.device("cuda")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tokens = [int(t) for t in a.tokens.split(",")]
    model = build_model(get_model(a.model), dtype=torch.float16, device=dev, weights="dummy")
    weights = layer_weights(model)
    del model
    torch.cuda.empty_cache()
    rate = peak_rate(dev)
    res = {"gpu": torch.cuda.get_device_name(), "model": a.model, "gemm_rate_flops": rate,
           "shapes": [list(w.shape) for w in weights], "tokens": tokens, "ways": {}}
    for way in a.ways.split(","):
        if way == "lt":
            torch.backends.cuda.preferred_blas_library("cublaslt")
        elif way == "tuned":
            torch.backends.cuda.preferred_blas_library("cublas")
            import torch.cuda.tunable as tn
            tn.set_filename(str(out / "tunableop_results.csv"))
            tn.enable(True)
            tn.tuning_enable(True)
            tn.set_max_tuning_duration(a.tuning_ms)
            tn.set_max_tuning_iterations(100)
        else:
            torch.backends.cuda.preferred_blas_library("cublas")
        rows = []
        for t in tokens:
            ms = [s * 1e3 for s in time_layer(weights, t, dev)]
            flop_ms = sum(2 * t * w.shape[0] * w.shape[1] for w in weights) / rate * 1e3
            rows.append({"tokens": t, "gemm_ms": ms, "layer_ms": sum(ms), "flop_ms": flop_ms,
                         "ratio": sum(ms) / flop_ms})
            print(f"{way:8s} T={t:5d}: layer GEMMs {sum(ms):.4f} ms, FLOP time {flop_ms:.4f} ms, "
                  f"x{sum(ms) / flop_ms:.2f}  ({' '.join(f'{m:.4f}' for m in ms)})", flush=True)
        res["ways"][way] = rows
        (out / "gemm_shapes.json").write_text(json.dumps(res, indent=1))      # after each way: a cut run keeps it
        if way == "tuned":
            if hasattr(tn, "write_file"):      # torch 2.11 has none: the results file is written as tuning goes
                tn.write_file()
            tn.enable(False)
    print(f"GEMM rate {rate / 1e12:.0f} TFLOP/s; shapes {res['shapes']}")


if __name__ == "__main__":
    main()
