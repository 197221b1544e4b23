"""Which engine steps pay one-off work on the clock: Triton compiles and new CUDA allocator segments, by step.

A warmed-up engine should compile nothing while it serves. This runs one scenario on the real engine with a
Triton ``jit_post_compile_hook`` and the CUDA caching allocator's segment count watched around every step, and
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
    import triton

    import kvsim
    from kvsim.engine.engine import RealEngine
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sc = kvsim.load_scenario(args.scenario, args.set or None)
    events: list[dict] = []
    state = {"step": -1, "phase": "build"}

    def hook(*, key, repr, fn, compile, is_manual_warmup, already_compiled, **_):   # noqa: A002 (triton's names)
        events.append({"phase": state["phase"], "step": state["step"], "t": time.perf_counter(),
                       "kernel": getattr(fn, "name", str(fn)), "spec": str(repr)[:300]})
        return None

    triton.knobs.runtime.jit_post_compile_hook = hook
    eng = RealEngine(sc)
    state["phase"] = "run"
    print(f"built + warmed up: {sum(e['phase'] == 'build' for e in events)} compiles before serving "
          f"(warmup {eng.warmup_s:.1f} s)")
    rows, execute = [], eng.runner.execute

    def watched(plan, batch):
        state["step"] += 1
        seg0, n0 = torch.cuda.memory_stats().get("segment.all.allocated", 0), len(events)
        t = time.perf_counter()
        res = execute(plan, batch)
        torch.cuda.synchronize()
        rows.append({"step": state["step"], "wall_ms": (time.perf_counter() - t) * 1e3,
                     "prefill_groups": len(plan.prefill_group_ids), "prefill_tokens": plan.num_prefill_tokens,
                     "decode_rows": plan.num_decode_seqs,
                     "new_segments": torch.cuda.memory_stats().get("segment.all.allocated", 0) - seg0,
                     "compiles": len(events) - n0})
        return res
    eng.runner.execute = watched
    res = eng.run()
    steps = pd.DataFrame(rows)
    slow = set(steps.nlargest(8, "wall_ms").step)
    keep = steps[(steps.compiles > 0) | (steps.new_segments > 0) | steps.step.isin(slow)]
    keep.to_csv(out / "compile_watch.csv", index=False)
    ev = pd.DataFrame([e for e in events if e["phase"] == "run"])
    ev.to_csv(out / "compile_events.csv", index=False)
    print(keep.to_string(index=False))
    print(ev.drop(columns=["t"]).to_string(index=False) if len(ev) else "no compiles while serving")
    print(f"steps {len(steps)}, engine throughput {res.summary.get('throughput_req_s')}")


if __name__ == "__main__":
    main()
