"""Does `kvsim plan --seeds N` give the same answer whatever the seeds, and does its interval shrink with N?

Quickstart scenario, SLO ttft_p99_s <= 10 s (issue #13), --requests 600 (doubled up to --max-requests 2400
per run until the answer is stable to --tol 0.02), 95% intervals. Seeds 0-9, used three ways:

* ten single-seed plans (--seeds 1, the old behaviour): the noise the issue reported;
* two replicated plans on disjoint halves, seeds 0-4 and 5-9 (--seeds 5), and one on all ten
  (--seeds 10). Each states a recommendation (the highest rate whose SLO metric interval lies within
  the bound) and a capacity interval [recommendation, lowest rate failing with confidence].
  They agree when the intervals share a rate and no plan recommends a rate that another plan's
  interval rules out (a recommendation above another's upper end).

Writes seeds_agreement.csv and seeds_agreement.md next to this file (about 5 minutes on 2 cores; with
the default --max-requests, 8 x 600, the two 5-seed plans grow to 4800 requests and it takes 15).
    python benchmarks/plan/seeds_agreement.py [--jobs 2]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))                    # this checkout's kvsim, not another installed one

import pandas as pd  # noqa: E402

from kvsim.plan import plan  # noqa: E402
SCENARIO = str(ROOT / "scenarios" / "examples" / "quickstart.yaml")
SLO = {"ttft_p99_s": 10.0}
TOL = 0.02


def one(seed: int, seeds: int, jobs: int) -> dict:
    t = time.perf_counter()
    res = plan(SCENARIO, SLO, overrides=[f"seed={seed}"], requests=600, rel_tol=TOL, jobs=jobs, seeds=seeds,
               max_requests=2400)
    r = res.recommended or {}
    return {"seeds": f"{seed}-{seed + seeds - 1}" if seeds > 1 else str(seed), "runs": seeds,
            "recommended_req_s": r.get("max_rate_req_s"),
            "rate_hi_req_s": r.get("rate_hi_req_s", r.get("fail_rate_req_s")),
            "requests_per_run": r.get("requests_per_run", 600), "stable": r.get("stable"),
            "ttft_p99_mean_s": r.get("ttft_p99_s_mean", r.get("ttft_p99_s")),
            "ttft_p99_ci_lo_s": r.get("ttft_p99_s_ci_lo"), "ttft_p99_ci_hi_s": r.get("ttft_p99_s_ci_hi"),
            "simulated_runs": r.get("simulated"), "wall_s": time.perf_counter() - t}


def markdown(df: pd.DataFrame) -> str:
    def cell(v) -> str:
        return "-" if v is None or (isinstance(v, float) and v != v) else (f"{v:.4g}" if isinstance(v, float) else str(v))
    out = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=2)
    jobs = ap.parse_args().jobs
    t0 = time.perf_counter()
    rows = [{"plan": "single seed (--seeds 1)", **one(s, 1, jobs)} for s in range(10)]
    reps = [{"plan": f"--seeds {n}", **one(s, n, jobs)} for s, n in ((0, 5), (5, 5), (0, 10))]
    for r in reps:
        others = [o for o in reps if o is not r]
        r["inside_other_intervals"] = (f"{sum(o['recommended_req_s'] <= r['recommended_req_s'] <= o['rate_hi_req_s'] for o in others)}"
                                       f" of {len(others)}")
    rows += reps
    df = pd.DataFrame(rows)
    df["interval_width_rel"] = df.rate_hi_req_s / df.recommended_req_s - 1
    wall = time.perf_counter() - t0
    df.to_csv(HERE / "seeds_agreement.csv", index=False)
    single = df[df.runs == 1].recommended_req_s
    rep = df[df.runs > 1]
    common = rep.recommended_req_s.max() <= rep.rate_hi_req_s.min()
    lines = [f"# kvsim plan on the quickstart, SLO ttft_p99_s <= 10 s, seeds 0-9, --tol {TOL}, "
             "--requests 600 --max-requests 2400", "",
             f"* single-seed plans (seeds 0-9 one by one, 600 requests): {single.min():.3f}-{single.max():.3f} "
             f"req/s, a spread of {single.max() / single.min() - 1:.0%}.",
             f"* replicated plans (seeds 0-4, 5-9, 0-9): recommendations {rep.recommended_req_s.min():.3f}-"
             f"{rep.recommended_req_s.max():.3f} req/s (spread {rep.recommended_req_s.max() / rep.recommended_req_s.min() - 1:.1%}); "
             f"their capacity intervals {'share' if common else 'do NOT share'} a rate "
             f"({rep.recommended_req_s.max():.3f}-{rep.rate_hi_req_s.min():.3f} req/s), so no plan recommends a "
             f"rate another rules out: {'yes' if common else 'NO'}.",
             f"* interval width (rate_hi / recommended - 1): --seeds 5 {rep.interval_width_rel.iloc[0]:.0%} and "
             f"{rep.interval_width_rel.iloc[1]:.0%}, --seeds 10 {rep.interval_width_rel.iloc[2]:.0%}.", "",
             markdown(df), "",
             f"({wall:.0f} s wall, --jobs {jobs}; script: benchmarks/plan/seeds_agreement.py)"]
    (HERE / "seeds_agreement.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
