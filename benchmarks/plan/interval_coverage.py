"""Do the replicated planner's p99 intervals cover? Resample runs from a large population of seeds.

    PYTHONPATH=. python benchmarks/plan/interval_coverage.py --requests 600 --seeds 80 --jobs 2

At each rate the quickstart (OPT-13B, A100-40GB, ShareGPT-like) is run under ``--seeds`` seeds
(seeds 100.., disjoint from seeds_agreement's 0-99), each run's steady window giving its share of
requests with TTFT above ``--bound`` (10 s). The mean share over all of them stands for the truth
``mu``. Then ``--resamples`` times, ten runs are drawn with replacement and judged as the planner
judges a probe of ``--seeds 10`` (:func:`kvsim.plan.exceedance.share_interval`, 95%), both with the
planner's construction (the near-miss KG bound, :mod:`kvsim.plan.tail_bound`) and with the first one (``t``:
Student t over the runs' shares, kept for comparison): an honest interval has its upper end below ``mu`` in
about 2.5% of draws (and its lower end, the same for both, above ``mu`` in about 2.5%); ``P(pass)`` is how
often the probe passes ``ttft_p99_s <= bound`` although, where ``mu`` > 1%, the rate breaks it; ``median
upper`` is the width's price. Unlike seeds_agreement.py, which compares plans with one another
(and so cannot see a bias they share), this compares each with the truth. Writes
``interval_coverage_<requests>.md`` beside this file.
"""
from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from kvsim.config import read_yaml
from kvsim.plan.exceedance import share_interval
from kvsim.plan.search import run_at
from kvsim.replicate import seed_override

ROOT = Path(__file__).resolve().parents[2]
DATA = read_yaml(ROOT / "scenarios" / "examples" / "quickstart.yaml")


def window_ttft(args) -> np.ndarray:
    rate, seed, requests = args
    s = run_at(DATA, [seed_override(seed)], rate, requests=requests, min_duration_s=60.0, steady=("ttft_p99_s",))
    return s["steady"]["ttft_s"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--seeds", type=int, default=80)
    ap.add_argument("--rates", default="1.4,1.5,1.6,1.7")
    ap.add_argument("--bound", type=float, default=10.0)
    ap.add_argument("--runs", type=int, default=10, help="runs per simulated probe (the plan's --seeds)")
    ap.add_argument("--resamples", type=int, default=4000)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    t0 = time.perf_counter()
    rng = np.random.default_rng(1)
    rows = []
    with ProcessPoolExecutor(a.jobs) as ex:
        for rate in (float(r) for r in a.rates.split(",")):
            runs = list(ex.map(window_ttft, [(rate, 100 + s, a.requests) for s in range(a.seeds)]))
            e = np.array([(x > a.bound).mean() for x in runs])
            mu = float(e.mean())
            hi_miss, passes, ups, lo_miss = {"kg": 0, "t": 0}, {"kg": 0, "t": 0}, {"kg": [], "t": []}, 0
            for _ in range(a.resamples):
                pick = [runs[i] for i in rng.integers(0, len(runs), a.runs)]
                for method in ("kg", "t"):
                    _, lo, hi = share_interval(pick, [a.bound], 0.95, method=method)
                    hi_miss[method] += hi[0] < mu
                    passes[method] += hi[0] <= 0.01
                    ups[method].append(hi[0])
                lo_miss += lo[0] > mu
            cols = [f"{hi_miss[m] / a.resamples:.3f} | {passes[m] / a.resamples:.3f} | {np.median(ups[m]):.4f}"
                    for m in ("kg", "t")]
            rows.append(f"| {rate:g} | {mu:.4f} | {np.mean(e > 0):.2f} | {e.max():.3f} | {cols[0]} | {cols[1]} "
                        f"| {lo_miss / a.resamples:.3f} |")
            print(rows[-1], flush=True)
    wall = time.perf_counter() - t0
    text = (f"# Coverage of the planner's p99 share interval: {a.runs} runs of {a.requests} requests, "
            f"TTFT bound {a.bound:g} s\n\nPopulation: {a.seeds} seeds (100-{99 + a.seeds}) per rate; "
            f"{a.resamples} draws of {a.runs} runs each. Honest 95% intervals: each miss column about 0.025.\n\n"
            "Columns per construction: P(upper end < mu), P(probe passes), median upper end; near-miss KG = the "
            "planner's (kvsim/plan/tail_bound.py), t = the first construction.\n\n"
            "| rate req/s | true share above bound (mu) | runs with any | largest run share | near-miss KG: P(upper < mu) "
            "| near-miss KG: P(pass) | near-miss KG: median upper | t: P(upper < mu) | t: P(pass) | t: median upper "
            "| P(lower end > mu) |\n|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) +
            f"\n\n({wall:.0f} s wall, --jobs {a.jobs}; command: PYTHONPATH=. python benchmarks/plan/interval_coverage.py "
            f"--requests {a.requests} --seeds {a.seeds} --rates {a.rates} --resamples {a.resamples} --jobs {a.jobs})\n")
    out = Path(__file__).with_name(f"interval_coverage_{a.requests}.md")
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
