"""Which engine steps pay one-off work on the clock: Triton compiles and new CUDA allocator segments, by step.

A warmed-up engine should compile nothing while it serves. This runs one scenario on the real engine with a
Triton compile log (:mod:`kvsim.engine.compile_log`, building and serving) and the CUDA caching allocator's segment count watched around every step, and
writes ``compile_watch.csv`` (one row per step that compiled a kernel or allocated a new segment, and each of
the run's slowest steps) plus ``compile_events.csv`` (every compile after warm-up: kernel, its specialisation,
the step it happened in).

usage (GPU machine): python benchmarks/engine/compile_watch.py scenarios/validation/v25_llama3_8b_static_trace.yaml --out DIR
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario")
    ap.add_argument("--out", required=True)
    ap.add_argument("--set", action="append", default=[], help="scenario override key=value")
    args = ap.parse_args()
    import torch

    import kvsim
    from kvsim.engine.compile_log import CompileLog
    from kvsim.engine.engine import RealEngine
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sc = kvsim.load_scenario(args.scenario, args.set or None)
    with CompileLog() as building:           # model, KV cache, warm-up and graph capture
        eng = RealEngine(sc)
    print(f"built + warmed up: {building.count} compiles before serving (warmup {eng.warmup_s:.1f} s)")
    rows, execute = [], eng.runner.execute

    def watched(plan, batch):
        seg0 = torch.cuda.memory_stats().get("segment.all.allocated", 0)
        t = time.perf_counter()
        res = execute(plan, batch)
        torch.cuda.synchronize()
        rows.append({"step": len(rows), "wall_ms": (time.perf_counter() - t) * 1e3,
                     "prefill_groups": len(plan.prefill_group_ids), "prefill_tokens": plan.num_prefill_tokens,
                     "decode_rows": plan.num_decode_seqs,
                     "new_segments": torch.cuda.memory_stats().get("segment.all.allocated", 0) - seg0})
        return res
    eng.runner.execute = watched
    res = eng.run()                          # the engine's own CompileLog records compiles while serving
    ev = pd.DataFrame(res.info["kernels_compiled_while_serving_first"], columns=["step", "kernel", "spec"])
    steps = pd.DataFrame(rows)
    steps["compiles"] = steps.step.map(ev.step.value_counts()).fillna(0).astype(int)
    slow = set(steps.nlargest(8, "wall_ms").step)
    keep = steps[(steps.compiles > 0) | (steps.new_segments > 0) | steps.step.isin(slow)]
    keep.to_csv(out / "compile_watch.csv", index=False)
    ev.to_csv(out / "compile_events.csv", index=False)
    print(keep.to_string(index=False))
    total = res.info["kernels_compiled_while_serving"]
    print(ev.to_string(index=False) + (f"\n({total} in all; the first {len(ev)} listed)" if total > len(ev) else "")
          if total else "no compiles while serving")
    print(f"steps {len(steps)}, engine throughput {res.summary.get('throughput_req_s')}")

if __name__ == "__main__":
    main()
