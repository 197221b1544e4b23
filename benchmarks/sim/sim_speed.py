"""Simulator speed: wall time vs number of ShareGPT-like requests (OPT-13B, A100-40GB, paged).

Usage (one core; the README's tables come from speed_devbox.sh, this is a size ladder of the paged mode):
    taskset -c 0 python benchmarks/sim/sim_speed.py [--sizes 1000,2000,5000,10000] [--rate 1.0] [--csv out.csv]

Reports, per size: wall seconds (best of --repeat), iterations, the share of
iterations fast-forwarded, and wall time per 1,000 requests (flat = linear cost).
Also runs the largest size with fast-forward off, to show what it buys.
"""
from __future__ import annotations

import argparse
import platform
import time

from kvsim.build import setup_run
from kvsim.config import load_scenario
from kvsim.sim import SimEngine


def scenario(n: int, rate: float):
    return load_scenario({"name": f"speed-{n}", "model": "opt-13b", "gpu": "a100-40gb",
                          "engine": {"allocator": "paged", "block_size": 16},
                          "workload": {"dataset": "sharegpt_like", "rate_req_s": rate, "num_requests": n},
                          "seed": 0})


def timed(n: int, rate: float, ff: bool, repeat: int):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        eng = SimEngine(setup_run(scenario(n, rate)), fast_forward=ff)
        res = eng.run()
        best = min(best, time.perf_counter() - t0)
    return best, res.summary["num_iterations"], eng.ff_steps, res.summary["requests_finished"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,2000,5000,10000")
    ap.add_argument("--rate", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--csv")
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    print(f"# {platform.processor() or platform.machine()}, python {platform.python_version()}, "
          f"rate {a.rate} req/s")
    rows = []
    print(f"{'requests':>9} {'ff':>3} {'wall_s':>8} {'iterations':>11} {'ff_share':>9} {'s/1k req':>9}")
    for n in sizes:
        wall, iters, ff_steps, fin = timed(n, a.rate, True, a.repeat)
        rows.append((n, True, wall, iters, ff_steps / iters, fin))
        print(f"{n:>9} {'on':>3} {wall:>8.3f} {iters:>11} {ff_steps / iters:>9.1%} {wall / n * 1000:>9.3f}")
    n = sizes[-1]
    wall, iters, ff_steps, fin = timed(n, a.rate, False, 1)
    rows.append((n, False, wall, iters, 0.0, fin))
    print(f"{n:>9} {'off':>3} {wall:>8.3f} {iters:>11} {0:>9.1%} {wall / n * 1000:>9.3f}")
    if a.csv:
        with open(a.csv, "w") as f:
            f.write("requests,fast_forward,wall_s,iterations,ff_share,finished\n")
            for r in rows:
                f.write(",".join(str(x) for x in r) + "\n")


if __name__ == "__main__":
    main()
