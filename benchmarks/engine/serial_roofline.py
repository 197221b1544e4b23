"""A step's *serial* roofline: each kind of kernel at its own roofline, one after another (CPU; no torch).

``mixed_steps.py`` compares a graph-replayed step with the step's roofline, ``max(all bytes / bandwidth, all
FLOPs / GEMM rate)``: the time if the step's memory traffic and its arithmetic overlapped perfectly. The engine's
kernels run one after another, and a full-occupancy GEMM and the paged decode kernel do not overlap even on two
streams (``results_H200/overlap_0335``: concurrent / sequential 1.004-1.030), so near the ridge point a
compute-bound GEMM cannot hide a memory-bound attention launch. This prices the same step the way the simulator's
roofline cost model does (:class:`kvsim.cost.roofline.RooflineCostModel`: per layer, the linear layers at
``max(FLOPs / rate, weight bytes / bandwidth)``, plus decode attention and prefill attention each at its own max,
plus the LM head), with the two ceilings measured in the same run, efficiencies 1 and no overheads: the floor of a
step whose kernels each ran at the card's ceilings, serially. ``graph / serial roofline`` is then the kernels' own
inefficiency plus launch gaps, with nothing of the overlap the step roofline assumes.

usage (CPU): python benchmarks/engine/serial_roofline.py RESULTS/mixed_steps.json [...]
Prints, per step and setting, the graph time against both rooflines; mixed_steps.py records ``serial_roofline_ms``
in each row of the runs it makes.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kvsim.catalogue import GPUSpec, get_model                     # noqa: E402
from kvsim.core.plan import StepPlan                               # noqa: E402
from kvsim.cost.roofline import RooflineCostModel, RooflineParams  # noqa: E402


def serial_model(model: str, copy_bw_Bps: float, gemm_flops: float, block_size: int = 16) -> RooflineCostModel:
    """The roofline cost model at the measured ceilings: efficiencies 1, no step, sequence or launch overheads."""
    spec = get_model(model)
    gpu = GPUSpec(name="measured", memory_bytes=1 << 40, hbm_bandwidth_Bps=copy_bw_Bps, peak_fp16_flops=gemm_flops,
                  host_link_Bps=1e12, interconnect_Bps=1e12)
    params = RooflineParams(matmul_efficiency=1.0, hbm_efficiency=1.0, attention_efficiency=1.0,
                            host_link_efficiency=1.0, interconnect_efficiency=1.0, step_overhead_s=0.0,
                            per_seq_overhead_s=0.0, layer_launch_floor_s=0.0)
    return RooflineCostModel(spec, gpu, params=params, block_size_tokens=block_size)


def step_plan(row: dict) -> StepPlan:
    """The step a ``mixed_steps.py`` row timed: one fresh chunk (or ``prompts`` fresh prompts) and decode rows at
    ``ctx`` tokens each (their contexts spread as the bench spread them for ``mixed_spread`` rows)."""
    from kvsim.cost.calibrated import spread_contexts
    n, ctx, kind = row["decode_rows"], row["ctx"], row["kind"]
    ctxs = spread_contexts(n, ctx) if kind == "mixed_spread" else [ctx] * n
    if kind == "prefill":
        k = row.get("prompts", 1)
        return StepPlan(prefill_group_ids=list(range(k)), prefill_new_tokens=[row["chunk"] // k] * k,
                        prefill_cached_tokens=[0] * k)
    if kind == "decode":
        return StepPlan(decode_group_ids=list(range(n)), decode_context_tokens=ctxs)
    return StepPlan(prefill_group_ids=[0], prefill_new_tokens=[row["chunk"]], prefill_cached_tokens=[0],
                    decode_group_ids=list(range(1, n + 1)), decode_context_tokens=ctxs)


def serial_roofline_ms(cost: RooflineCostModel, row: dict) -> float:
    return cost.step_time(step_plan(row)) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="+", help="mixed_steps.json files")
    a = ap.parse_args()
    for path in a.results:
        d = json.loads(Path(path).read_text())
        name = {"Llama-3-8B": "llama-3-8b", "OPT-13B": "opt-13b"}.get(d["model"], d["model"])
        cost = serial_model(name, d["copy_bw_Bps"], d["gemm_flops"], d.get("block_size", 16))
        print(f"{path}: {d['gpu']}, {d['model']}, copy {d['copy_bw_Bps'] / 1e12:.2f} TB/s, "
              f"GEMM {d['gemm_flops'] / 1e12:.0f} TFLOP/s")
        print("| step | setting | graph (ms) | roofline (ms) | graph / roofline | serial roofline (ms) | graph / serial |")
        print("|---|---|---|---|---|---|---|")
        for r in d["rows"]:
            s = r.get("serial_roofline_ms") or serial_roofline_ms(cost, r)
            step = (f"{r['kind']} {r['decode_rows']} x {r['ctx']}" + (f" + {r['chunk']}" if r["chunk"] else "")
                    if r["kind"] != "prefill" else f"prefill {r.get('prompts', 1)} x {r['chunk'] // r.get('prompts', 1)}")
            print(f"| {step} | {r['setting']} | {r['graph_ms']:.2f} | {r['roofline_ms']:.2f} | "
                  f"{r['graph_over_roofline']:.2f} | {s:.2f} | {r['graph_ms'] / s:.2f} |")


if __name__ == "__main__":
    main()
