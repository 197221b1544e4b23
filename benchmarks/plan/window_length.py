"""Does the steady window make the p99 share depend on the run length? (issue #13, audit item 37)

    PYTHONPATH=. python benchmarks/plan/window_length.py --seeds 80 --rates 1.4,1.5,1.6 --jobs 2

The coverage populations gave different true shares of TTFT above 10 s at one rate for different run lengths
(1.5 req/s: 1.29% at 600 requests per run, 0.67% at 2400). Each run of the quickstart under seeds 100.. is
simulated with ``--lengths`` requests; for each the table gives the mean over seeds of the share of the
steady window's requests (arrival ranks 20%-90%, :mod:`kvsim.plan.steady`) above ``--bound``, with its
standard error over seeds (the seeds are the independent units) and the difference from the longest length.
A second table splits the longest runs by arrival rank into blocks the size of the shortest run, from the
empty start: if the share is lower or higher early in a run, a short run's window measures a different
quantity from a long one's; if it is flat after the warm-up, the lengths measure the same thing and their
difference is sampling noise. Writes ``window_length.md`` beside this file.
"""
from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from kvsim.config import load_scenario, read_yaml
from kvsim.plan.search import probe_overrides
from kvsim.plan.steady import window_bounds
from kvsim.replicate import seed_override
from kvsim.sim import simulate

ROOT = Path(__file__).resolve().parents[2]
DATA = read_yaml(ROOT / "scenarios" / "examples" / "quickstart.yaml")


def ttft_by_rank(args) -> np.ndarray:
    """TTFT of every request in arrival order (NaN for an unfinished one: the planner's window has only
    finished requests' latencies, and an unfinished one fails the probe anyway)."""
    rate, seed, n = args
    sc = load_scenario(DATA, probe_overrides([seed_override(seed)], n) + [f"workload.rate_req_s={rate!r}"])
    r = simulate(sc).requests.sort_values("arrival_s", kind="stable")
    t = (r.first_token_s - r.arrival_s).to_numpy(dtype=float)
    return np.where(r.status.to_numpy() == "finished", t, np.nan)


def share(t: np.ndarray, bound: float) -> float:
    """Share of the finished requests in ``t`` with TTFT above ``bound`` (0 when none finished)."""
    t = t[~np.isnan(t)]
    return float((t > bound).mean()) if len(t) else 0.0


def mean_se(x: np.ndarray) -> str:
    return f"{100 * x.mean():.2f}% ± {100 * x.std(ddof=1) / np.sqrt(len(x)):.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=80)
    ap.add_argument("--rates", default="1.4,1.5,1.6")
    ap.add_argument("--lengths", default="600,2400,4800")
    ap.add_argument("--bound", type=float, default=10.0)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    lengths = sorted(int(x) for x in a.lengths.split(","))
    short, long_ = lengths[0], lengths[-1]
    t0 = time.perf_counter()
    rows, blocks = [], []
    with ProcessPoolExecutor(a.jobs) as ex:
        for rate in (float(r) for r in a.rates.split(",")):
            win = {}
            for n in lengths:
                runs = list(ex.map(ttft_by_rank, [(rate, 100 + s, n) for s in range(a.seeds)]))
                first, last = window_bounds(n)
                win[n] = (np.array([share(t[first:last], a.bound) for t in runs]), runs)
            for n in lengths:
                e = win[n][0]
                d = e - win[long_][0]                      # same seeds, different draws: unpaired SE
                se_d = np.sqrt(e.var(ddof=1) / len(e) + win[long_][0].var(ddof=1) / len(e))
                rows.append(f"| {rate:g} | {n} | {mean_se(e)} | {np.mean(e > 0):.2f} | "
                            + ("-" if n == long_ else f"{100 * d.mean():+.2f} pp (z = {d.mean() / se_d:+.1f})") + " |")
                print(rows[-1], flush=True)
            runs = win[long_][1]
            cells = []
            for b in range(0, long_, short):
                e = np.array([share(t[b:b + short], a.bound) for t in runs])
                cells.append(mean_se(e))
            blocks.append(f"| {rate:g} | " + " | ".join(cells) + " |")
            print(blocks[-1], flush=True)
    wall = time.perf_counter() - t0
    heads = " | ".join(f"ranks {b}-{b + short}" for b in range(0, long_, short))
    text = (f"# Does the steady window make the share above the bound depend on the run length?\n\n"
            f"Quickstart, seeds 100-{99 + a.seeds} (one run per seed and length), share of requests with TTFT above "
            f"{a.bound:g} s, mean over seeds ± its standard error.\n\n"
            "## The steady window (arrival ranks 20%-90%) by run length\n\n"
            f"| rate req/s | requests per run | share above bound | runs with any | vs {long_} requests |\n"
            "|---|---|---|---|---|\n" + "\n".join(rows) +
            f"\n\n## Runs of {long_} requests, by arrival rank from the empty start (whole run, no window)\n\n"
            f"| rate req/s | {heads} |\n|---|" + "---|" * (len(range(0, long_, short))) + "\n" + "\n".join(blocks) +
            f"\n\n({wall:.0f} s wall, --jobs {a.jobs}; command: PYTHONPATH=. python benchmarks/plan/window_length.py "
            f"--seeds {a.seeds} --rates {a.rates} --lengths {a.lengths} --jobs {a.jobs})\n")
    out = Path(__file__).with_name("window_length.md")
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
