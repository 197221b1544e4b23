"""Host time of the engine's input preparation for one big prefill step, today's runner against an earlier
commit's, alternating in one process (CPU, tiny model; the work measured is the host's, not the model's).

usage: python benchmarks/engine/prepare_speed.py --before REV [--prompts 32] [--reps 300]
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
import types


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="a commit whose kvsim/engine/runner.py is the baseline")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--reps", type=int, default=300)
    a = ap.parse_args()
    src = subprocess.run(["git", "show", f"{a.before}:kvsim/engine/runner.py"], check=True, capture_output=True,
                         text=True).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location("runner_before", f.name)
    old = importlib.util.module_from_spec(spec)
    sys.modules["runner_before"] = old
    spec.loader.exec_module(old)
    import kvsim
    from kvsim.engine.engine import RealEngine
    sc = kvsim.load_scenario({"name": "prep", "model": "tiny-llama", "gpu": "a100-40gb", "seed": 1,
                              "engine": {"block_size": 16, "num_gpu_blocks": 4000, "max_num_batched_tokens": 8192,
                                         "max_num_seqs": 64},
                              "workload": {"dataset": "uniform", "prompt_len_range": [100, 200],
                                           "output_len_range": [8, 8], "num_requests": a.prompts, "arrival": "burst"},
                              "runtime": {"device": "cpu", "cuda_graphs": False, "warmup": False}})
    eng = RealEngine(sc)
    for r in eng.setup.requests:
        eng.sched.add_request(r)
    plan = eng.sched.schedule(0.0)
    now, before = eng.runner._prepare_group, types.MethodType(old.ModelRunner._prepare_group, eng.runner)
    x, y = [], []
    for _ in range(a.reps):
        t = time.perf_counter()
        before(plan)
        x.append(time.perf_counter() - t)
        t = time.perf_counter()
        now(plan)
        y.append(time.perf_counter() - t)
    mb, mn = statistics.median(x), statistics.median(y)
    print(f"prefill step of {plan.num_prefill_tokens} tokens in {len(plan.prefill_group_ids)} prompts: input "
          f"preparation {mb * 1e6:.0f} us at {a.before}, {mn * 1e6:.0f} us now (medians of {a.reps} alternating "
          f"calls), {mb / mn:.2f}x")


if __name__ == "__main__":
    main()
