"""Decode-only steps of committed engine traces against their calibrated price, step by step (CPU).

The engine's ``iterations.csv`` holds each step's rows but not their contexts; they are rebuilt from
``requests.csv``: a request decoding in a step has its prompt plus one token per step since its first token
(exact for requests that are never preempted and run one sequence; steps with preemptions, swaps or copies are
left out, and so is a step whose rebuilt row count differs from the trace's). Each step is priced by the
simulator's own pricing (padded CUDA-graph batch, unequal-context term) and, for comparison, without the
unequal-context term. Output: per batch bin, the mean engine step, the price and the error. Static-batching
traces are skipped (finished rows stay in the batch with a context that no longer grows).

usage: python benchmarks/engine/decode_price_check.py --profile calibrate/profiles/H200/llama-3-8b.json \\
           validation/H200/v15*/engine validation/H200/v16*/engine
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from kvsim.cost.calibrated import CalibratedCostModel, load_profile
from kvsim.graph_sizes import graph_batch_sizes, prefill_token_sizes
from kvsim.validate_records import record_file

BINS = [0, 8, 16, 24, 32, 64, 256]


def decode_steps(folder: Path) -> pd.DataFrame:
    """``n``, context sum and longest context, and duration of every decode-only step whose rows rebuild."""
    it = pd.read_csv(record_file(folder, "iterations.csv"))        # or iterations.csv.gz
    rq = pd.read_csv(record_file(folder, "requests.csv"))
    rq = rq[(rq.n == 1) & (rq.beam_width == 1) & (rq.preemptions == 0)]
    starts = it.start_s.to_numpy()
    ft, fin, pl = rq.first_token_s.to_numpy(), rq.finish_s.to_numpy(), rq.prompt_len.to_numpy()
    first = np.searchsorted(starts, ft, side="left")          # the step that produced each first token
    dec = it[(it.prefill_tokens == 0) & (it.cow_copies == 0) & (it.swap_in_blocks == 0)
             & (it.swap_out_blocks == 0) & (it.preempted == 0)]
    rows = []
    for r in dec.itertuples():
        run = (ft < r.start_s) & (fin > r.start_s)
        if int(run.sum()) != int(r.decode_seqs):
            continue
        ctx = pl[run] + (r.Index - first[run]) + 1
        rows.append({"n": len(ctx), "ctx_sum": float(ctx.sum()), "ctx_max": float(ctx.max()),
                     "ctx_mean": float(ctx.mean()), "engine_s": r.duration_s})
    return pd.DataFrame(rows), len(dec)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("traces", nargs="+", help="engine record folders (iterations.csv, requests.csv)")
    ap.add_argument("--profile", required=True)
    ap.add_argument("--block-size", type=int, default=16)
    a = ap.parse_args()
    p = load_profile(a.profile)
    cm = CalibratedCostModel(p, model_name=p.model, dtype=p.dtype, block_size_tokens=a.block_size,
                             decode_graph_batches=graph_batch_sizes(256), prefill_graph_tokens=prefill_token_sizes(2048))
    for t in a.traces:
        summary = Path(t) / "summary.json"
        if summary.exists() and json.loads(summary.read_text())["scenario"]["engine"].get("scheduler") == "static":
            print(f"{t}: skipped (static batching keeps finished rows, whose contexts stop growing)\n")
            continue
        d, total = decode_steps(Path(t))
        if d.empty:
            print(f"{t}: no decode step rebuilt")
            continue
        d["price_s"] = [float(cm.decode_step_times(n, np.array([s]), np.array([m]))[0])
                        for n, s, m in zip(d.n, d.ctx_sum, d.ctx_max)]
        d["uniform_s"] = [float(cm.decode_step_times(n, np.array([s]))[0]) for n, s in zip(d.n, d.ctx_sum)]
        g = d.groupby(pd.cut(d.n, BINS), observed=True).agg(
            steps=("n", "size"), ctx_mean=("ctx_mean", "mean"), ctx_max=("ctx_max", "mean"),
            engine_ms=("engine_s", "mean"), price_ms=("price_s", "mean"), uniform_ms=("uniform_s", "mean"))
        for c in ("engine_ms", "price_ms", "uniform_ms"):
            g[c] *= 1e3
        g["error"] = (g.price_ms / g.engine_ms - 1).map("{:+.1%}".format)
        print(f"{t}: {len(d)} of {total} decode-only steps rebuilt; profile {a.profile}")
        print(g.round(3).to_string())
        print(f"all: engine {d.engine_s.mean() * 1e3:.3f} ms, price {d.price_s.mean() * 1e3:.3f} ms "
              f"({d.price_s.sum() / d.engine_s.sum() - 1:+.1%})\n")


if __name__ == "__main__":
    main()
