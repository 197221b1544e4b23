"""Fig. 18a analogue: the kernel-level cost of paging, from the project's own decode-kernel benchmark.

The paper's Fig. 18a times vLLM's paged attention kernel against FasterTransformer's contiguous
one. The roofline model has no such term, so ``kvsim paper`` reads it from the committed
benchmark of ``kvsim/kernels`` (``kernels/bench_decode.py``; method and caveats in
``kernels/NOTES.md``): the ``grid`` rows of ``kernels/results_H200/run4_final_default`` (the
committed default kernel configuration), paged at block size 16 against the contiguous kernel of
the same code, CUDA-graph times (``graph_ms``; ``ms`` where a row has none), repeats averaged.
The card is the one ``meta.json`` names.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).resolve().parents[2] / "kernels" / "results_H200" / "run4_final_default"
OPT13B_LIKE = "opt13b-mha-40/40"       # 40 query and KV heads of dimension 128, as OPT-13B


def paging_overhead(results: Path = RESULTS, model: str = OPT13B_LIKE, block_size: int = 16) -> pd.DataFrame:
    """One row per (batch, ctx): ``paged_ms``, ``contiguous_ms`` and ``overhead`` = paged / contiguous - 1."""
    df = pd.read_csv(Path(results) / "decode_bench.csv")
    df = df[(df["section"] == "grid") & (df["model"] == model)]
    t = df["graph_ms"].where(df["graph_ms"].notna(), df["ms"])
    df = df.assign(t=t)
    paged = df[(df["impl"] == "paged") & (df["block_size"] == block_size)]
    contig = df[df["impl"] == "contiguous"]
    p = paged.groupby(["batch", "ctx"])["t"].mean().rename("paged_ms")
    c = contig.groupby(["batch", "ctx"])["t"].mean().rename("contiguous_ms")
    out = pd.concat([p, c], axis=1).dropna().reset_index()
    out["overhead"] = out["paged_ms"] / out["contiguous_ms"] - 1.0
    return out.astype({"batch": int, "ctx": int})


def card(results: Path = RESULTS) -> str:
    """The GPU the benchmark ran on (``meta.json``), or ``unknown GPU``."""
    try:
        return str(json.loads((Path(results) / "meta.json").read_text())["card"])
    except (OSError, KeyError, ValueError):
        return "unknown GPU"


def fig18a_reading(results: Path = RESULTS, model: str = OPT13B_LIKE) -> dict:
    """Min / median / max paging overhead over the benchmark grid, the card, and the shapes at the extremes."""
    t = paging_overhead(results, model)
    if t.empty:
        return {"card": card(results), "shapes": 0}
    lo, hi = t.loc[t.overhead.idxmin()], t.loc[t.overhead.idxmax()]
    big = t[t.batch >= 32]
    return {"card": card(results), "model": model, "shapes": int(len(t)),
            "min": float(t.overhead.min()), "median": float(np.median(t.overhead)), "max": float(t.overhead.max()),
            "median_batch_ge_32": float(np.median(big.overhead)) if len(big) else float("nan"),
            "min_shape": f"batch {int(lo.batch)} x ctx {int(lo.ctx)}",
            "max_shape": f"batch {int(hi.batch)} x ctx {int(hi.ctx)}"}
