"""Lone prefill steps of committed engine traces against their calibrated price, by prompt length (CPU).

Every engine step with one prompt and nothing else (no decode rows, swaps or copies) is priced with the
profile by the simulator's own pricing (padded CUDA-graph token count when the profile's grid allows it,
``prefill_overhead`` when present) and compared with its measured duration. The graph sizes are the trace's
scenario's (``scenarios/validation/<name>.yaml`` or ``scenarios/holdout/<name>.yaml`` for a trace under
``.../<name>/engine``: its prefill ladder and token budget), else the engine's defaults up to
``--graph-prefill-tokens``. An eager profile (``meta.cuda_graphs`` false) prices without graph padding. Unlike
``kvsim validate``, no card-speed scaling between the trace's card and the profile's is applied.

usage: python benchmarks/engine/prefill_price_check.py --profile calibrate/profiles/H200/opt-13b.json \
           validation/H200/v0[1-9]*/engine validation/H200/v11*/engine
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from kvsim.core.plan import StepPlan
from kvsim.cost.calibrated import CalibratedCostModel, load_profile
from kvsim.graph_sizes import engine_graph_sizes, graph_batch_sizes, prefill_token_sizes
from kvsim.validate_records import record_file

ROOT = Path(__file__).resolve().parents[2]


def scenario_of(trace: Path):
    """The scenario of a trace folder ``.../<name>/engine`` (validation or holdout set), or None."""
    from kvsim.config import load_scenario
    for d in ("validation", "holdout"):
        f = ROOT / "scenarios" / d / f"{trace.parent.name}.yaml"
        if f.exists():
            return load_scenario(str(f))
    return None


BINS = [0, 64, 128, 256, 512, 1024, 2048, 3072, 4096, 5120, 8192]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("traces", nargs="+", help="engine record folders (iterations.csv)")
    ap.add_argument("--profile", required=True)
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--graph-prefill-tokens", type=int, default=2048, help="the engine's prefill graph limit")
    a = ap.parse_args()
    p = load_profile(a.profile)
    default = dict(decode_graph_batches=graph_batch_sizes(256),
                   prefill_graph_tokens=prefill_token_sizes(a.graph_prefill_tokens))
    rows = []
    for d in a.traces:
        sc = scenario_of(Path(d))
        sizes = engine_graph_sizes(sc) if sc is not None else default
        if not p.meta.get("cuda_graphs"):
            sizes = dict(sizes, prefill_graph_tokens=None, decode_graph_batches=None)
        cm = CalibratedCostModel(p, model_name=p.model, dtype=p.dtype, block_size_tokens=a.block_size, **sizes)
        it = pd.read_csv(record_file(d, "iterations.csv"))         # or iterations.csv.gz
        lone = it[(it.decode_seqs == 0) & (it.prefill_groups == 1) & (it.swap_in_blocks == 0)
                  & (it.swap_out_blocks == 0) & (it.cow_copies == 0)]
        for t, dur in zip(lone.prefill_tokens, lone.duration_s):
            plan = StepPlan(prefill_group_ids=[0], prefill_new_tokens=[int(t)], prefill_cached_tokens=[0])
            rows.append({"tokens": int(t), "measured_s": dur, "priced_s": cm.step_time(plan)})
    df = pd.DataFrame(rows)
    df["error"] = df.priced_s / df.measured_s - 1
    table = df.groupby(pd.cut(df.tokens, BINS), observed=True).error.agg(["median", "size"])
    print(f"{len(df)} lone prefill steps, profile {a.profile}; priced / measured - 1 by prompt tokens:")
    print(table.round(4).to_string())
    print(f"all: median {df.error.median():+.2%}")


if __name__ == "__main__":
    main()
