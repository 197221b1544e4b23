"""Why paged / static (FT-like) reads 28x at 0.1 s/token where the paper says "up to 22x" (issue #17).

Runs the Fig. 12a paged and static scenarios (OPT-13B, A100-40GB, default roofline, 1,000 requests) on
a dense rate grid, once with the synthetic ShareGPT-like lengths of ``kvsim paper`` and once with the real
ShareGPT conversation lengths of ``scenarios/traces/sharegpt_llama3_1000.csv`` (Poisson re-timed), and
reads each system's rate at 0.1 s/token as ``kvsim paper`` does. For the static baseline it also prints,
at each rate, the average batch and the share of its normalized latency spent queued before the batch
starts, from the per-request records.

    PYTHONPATH=. python benchmarks/paper/static_ratio.py --out benchmarks/paper/static_ratio.csv
    PYTHONPATH=. python benchmarks/paper/static_ratio.py --lengths synthetic --preset paper-a100-2023 \
        --out benchmarks/paper/static_ratio_preset.csv
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from kvsim.config import load_scenario
from kvsim.report.paper_readings import ratios_at_latency
from kvsim.sim import simulate

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "scenarios" / "paper"
TRACE = ["workload.dataset=trace", f"workload.path={ROOT / 'scenarios/traces/sharegpt_llama3_1000.csv'}",
         "workload.retime_trace=true", "workload.arrival=poisson"]
RATES = {"paged": [1.0, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0],
         "static": [0.04, 0.06, 0.07, 0.08, 0.1, 0.12, 0.16]}
THRESHOLD = 0.1


def point(task) -> dict:
    lengths, system, rate, pre = task
    ov = ["workload.num_requests=1000", f"workload.rate_req_s={rate}", *(TRACE if lengths == "real" else []), *pre]
    r = simulate(load_scenario(PAPER / f"fig12_opt13b_sharegpt_{system}.yaml", ov))
    q = r.requests
    done = q[q.finish_s.notna()]
    e2e = done.finish_s - done.arrival_s
    queued = (done.first_scheduled_s - done.arrival_s).clip(lower=0)
    return {"lengths": lengths, "engine.allocator": system, "workload.rate_req_s": rate,
            "normalized_latency_s": r.summary["normalized_latency_s"],
            "avg_batched_requests": r.summary["avg_batched_requests"],
            "queued_share_of_latency": float((queued / done.output_len).sum() / (e2e / done.output_len).sum()),
            "mean_prompt": float(q.prompt_len.mean()), "mean_output": float(q.output_len.mean()),
            "output_cv": float(q.output_len.std() / q.output_len.mean())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "benchmarks/paper/static_ratio.csv"))
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--lengths", default="synthetic,real", help="synthetic and/or real")
    ap.add_argument("--preset", default=None, help="cost preset, e.g. paper-a100-2023 (default: the roofline)")
    a = ap.parse_args()
    from kvsim.cost.presets import get_preset
    p = get_preset(a.preset)
    pre = p.overrides() if p else []
    from concurrent.futures import ProcessPoolExecutor
    tasks = [(ln, s, r, pre) for ln in a.lengths.split(",") for s, rs in RATES.items() for r in rs]
    with ProcessPoolExecutor(max_workers=a.jobs) as ex:
        df = pd.DataFrame(list(ex.map(point, tasks)))
    df.to_csv(a.out, index=False)
    print(df.round(4).to_string(index=False))
    for ln, g in df.groupby("lengths", sort=False):
        rates, ratios = ratios_at_latency(g, THRESHOLD, "engine.allocator")
        print(f"{ln} lengths (mean prompt {g.mean_prompt.iloc[0]:.0f}, output {g.mean_output.iloc[0]:.0f}, "
              f"output CV {g.output_cv.iloc[0]:.2f}): rate at {THRESHOLD} s/token paged {rates['paged']}, "
              f"static {rates['static']}; paged / static {ratios['static']}")


if __name__ == "__main__":
    main()
