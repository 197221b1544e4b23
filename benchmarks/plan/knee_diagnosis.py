"""Why single-seed p99 TTFT plans are noisy: per-seed p99 TTFT near the quickstart's knee, and the warm-up.

For rates 1.2-2.2 req/s and 600 / 2400 requests, 20 seeds each: the spread of the per-seed p99 TTFT, the
p99 of all requests pooled (all, and only those arriving in the steady window of kvsim.plan.steady), and
the mean TTFT by arrival decile averaged over the seeds (the first decile sees an empty server).
Writes knee_diagnosis.md next to this file (about 1-3 minutes on 2 cores):
    python benchmarks/plan/knee_diagnosis.py [--jobs 2]
"""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))                    # this checkout's kvsim, not another installed one

import numpy as np  # noqa: E402

import kvsim  # noqa: E402
from kvsim.plan.steady import window_bounds  # noqa: E402

Q = str(ROOT / "scenarios" / "examples" / "quickstart.yaml")


def ttfts(args) -> np.ndarray:
    rate, n, seed = args
    r = kvsim.simulate(kvsim.load_scenario(Q, {"workload.num_requests": n, "workload.rate_req_s": rate, "seed": seed}))
    q = r.requests.sort_values("arrival_s")
    return (q.first_token_s - q.arrival_s).to_numpy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=2)
    jobs = ap.parse_args().jobs
    t0 = time.perf_counter()
    rows = ["| requests | rate req/s | per-seed p99 min | median | mean | sd | max | pooled p99 (all) | "
            "pooled p99 (window) | mean TTFT by arrival decile (s) |", "|" + "---|" * 10]
    with ProcessPoolExecutor(jobs) as ex:
        for n in (600, 2400):
            a, b = window_bounds(n)
            for rate in (1.2, 1.4, 1.6, 1.8, 2.0, 2.2):
                xs = list(ex.map(ttfts, [(rate, n, s) for s in range(20)]))
                p99 = np.array([np.percentile(x, 99) for x in xs])
                dec = np.mean([[np.mean(c) for c in np.array_split(x, 10)] for x in xs], axis=0)
                win = np.concatenate([x[a:b] for x in xs])
                rows.append(f"| {n} | {rate} | {p99.min():.2f} | {np.median(p99):.2f} | {p99.mean():.2f} | "
                            f"{p99.std(ddof=1):.2f} | {p99.max():.2f} | {np.percentile(np.concatenate(xs), 99):.2f} | "
                            f"{np.percentile(win, 99):.2f} | {' '.join(f'{d:.2f}' for d in dec)} |")
    text = ["# Per-seed p99 TTFT near the quickstart's knee (seeds 0-19)", "",
            "TTFT = first token - arrival, in seconds. 'window' keeps the arrivals kvsim.plan.steady measures "
            "(ranks 20%-90%).", "", *rows, "",
            f"({time.perf_counter() - t0:.0f} s wall, --jobs {jobs}; script: benchmarks/plan/knee_diagnosis.py)"]
    (HERE / "knee_diagnosis.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
