"""Time building a 10,000-request ShareGPT-like workload (the step before every simulation).

usage: python benchmarks/sim/workload_speed.py [--requests N] [--repeats R]
Prints the minimum and median seconds over R builds on this machine.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from kvsim.workload import WorkloadConfig, build_workload


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    cfg = WorkloadConfig(dataset="sharegpt", rate_req_s=10.0, num_requests=a.requests)
    times = []
    for i in range(a.repeats):
        t0 = time.perf_counter()
        build_workload(cfg, max_len_tokens=2048, rng=np.random.default_rng(42 + i))
        times.append(time.perf_counter() - t0)
    print(f"build_workload {a.requests} requests: min {min(times):.3f} s, median {statistics.median(times):.3f} s")


if __name__ == "__main__":
    main()
