"""Does `kvsim plan --seeds N` give the same answer whatever the seeds, and does its interval shrink with N?

Quickstart scenario, SLO ttft_p99_s <= 10 s (issue #13), 600 requests per run, 95% confidence. Each plan
states a recommendation (the highest rate passing with confidence), a capacity point estimate and the
capacity interval [recommendation, lowest rate failing with confidence] (kvsim.plan.confident).

* ten plans on disjoint seed sets, --seeds 10 (seeds 0-9, 10-19, ..., 90-99), --max-requests 600:
  does each plan's capacity estimate lie inside each other plan's interval, do all intervals share a
  rate, and does any plan recommend a rate another rules out (above that plan's upper end)?
  For honest 95% intervals of equal width on independent plans, one estimate falls inside another's
  interval about 83% of the time (P(|Z| < 1.96 / sqrt 2)), and two
  intervals overlap about 99.4% of the time (P(|Z| < 2.77)) — not 100%;
* the interval against the effort: --seeds 5, 10, 20, 40 from seed 0 at 600 requests, and --seeds 10
  with the requests per run grown up to 2400 (--max-requests 2400, --tol 0.02).

Writes seeds_agreement.csv and seeds_agreement.md next to this file (419 s of wall time with --jobs 2
on 2 cores; 852 s before, with a load average of about 4):
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
REQUESTS = 600


def one(seed: int, seeds: int, jobs: int, max_requests: int = REQUESTS) -> dict:
    t = time.perf_counter()
    res = plan(SCENARIO, SLO, overrides=[f"seed={seed}"], requests=REQUESTS, rel_tol=TOL, jobs=jobs, seeds=seeds,
               max_requests=max_requests)
    r = res.recommended or {}
    return {"seeds": f"{seed}-{seed + seeds - 1}", "runs": seeds, "max_requests": max_requests,
            "recommended_req_s": r.get("max_rate_req_s"), "capacity_req_s": r.get("capacity_req_s"),
            "rate_hi_req_s": r.get("rate_hi_req_s"), "requests_per_run": r.get("requests_per_run"),
            "stable": r.get("stable"), "ttft_p99_est_s": r.get("ttft_p99_s_est"),
            "ttft_p99_ci_lo_s": r.get("ttft_p99_s_ci_lo"), "ttft_p99_ci_hi_s": r.get("ttft_p99_s_ci_hi"),
            "simulated_runs": r.get("simulated"), "wall_s": time.perf_counter() - t}


def markdown(df: pd.DataFrame) -> str:
    def cell(v) -> str:
        return "-" if v is None or (isinstance(v, float) and v != v) else (f"{v:.4g}" if isinstance(v, float) else str(v))
    out = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(out)


def agreement(plans: list[dict]) -> tuple[int, int]:
    """Per plan, how many other plans' capacity estimates lie in its interval; and the total of pairs."""
    inside = 0
    for p in plans:
        others = [o for o in plans if o is not p]
        p["others_inside"] = sum(p["recommended_req_s"] <= o["capacity_req_s"] <= p["rate_hi_req_s"] for o in others)
        inside += p["others_inside"]
    return inside, len(plans) * (len(plans) - 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=2)
    jobs = ap.parse_args().jobs
    t0 = time.perf_counter()
    plans = [{"plan": "agreement (--seeds 10)", **one(s, 10, jobs)} for s in range(0, 100, 10)]
    inside, pairs = agreement(plans)
    effort = [dict(plans[0], plan="effort (--seeds 10)", others_inside=None)]
    effort += [{"plan": f"effort (--seeds {n})", **one(0, n, jobs)} for n in (5, 20, 40)]
    effort += [{"plan": "effort (--seeds 10, growing requests)", **one(0, 10, jobs, 4 * REQUESTS)}]
    effort.sort(key=lambda r: (r["max_requests"], r["runs"]))
    df = pd.DataFrame(plans + effort)
    df["interval_width_rel"] = df.rate_hi_req_s / df.recommended_req_s - 1
    wall = time.perf_counter() - t0
    df.to_csv(HERE / "seeds_agreement.csv", index=False)
    ag = df.iloc[:len(plans)]
    shared = ag.recommended_req_s.max() <= ag.rate_hi_req_s.min()
    ruled_out = sum(p["recommended_req_s"] > o["rate_hi_req_s"] for p in plans for o in plans)
    widths = ", ".join(f"--seeds {int(r.runs)} {r.interval_width_rel:.0%}" for r in df.iloc[len(plans):].itertuples()
                       if r.max_requests == REQUESTS)
    grown = df.iloc[-1]
    lines = [f"# kvsim plan on the quickstart, SLO ttft_p99_s <= 10 s, --requests {REQUESTS}, --tol {TOL}, "
             "95% confidence", "",
             f"* ten plans on disjoint seed sets (--seeds 10: seeds 0-9, ..., 90-99): capacity estimates "
             f"{ag.capacity_req_s.min():.3f}-{ag.capacity_req_s.max():.3f} req/s, recommendations "
             f"{ag.recommended_req_s.min():.3f}-{ag.recommended_req_s.max():.3f}, interval widths "
             f"{ag.interval_width_rel.min():.0%}-{ag.interval_width_rel.max():.0%} (median "
             f"{ag.interval_width_rel.median():.0%}).",
             f"* a plan's capacity estimate lies inside another plan's interval in {inside} of {pairs} pairs "
             f"({inside / pairs:.0%}; about 83% expected of honest 95% intervals); all ten intervals "
             f"{'share' if shared else 'do NOT share'} a rate"
             + (f" ({ag.recommended_req_s.max():.3f}-{ag.rate_hi_req_s.min():.3f} req/s)" if shared else "")
             + f"; plans recommending a rate another plan rules out: {ruled_out} of {pairs} pairs.",
             f"* interval width (rate_hi / recommended - 1) from seed 0 at {REQUESTS} requests: {widths}; "
             f"--seeds 10 grown to {int(grown.requests_per_run)} requests per run: {grown.interval_width_rel:.0%} "
             f"(stable to --tol {TOL}: {grown.stable}).", "",
             markdown(df), "",
             f"({wall:.0f} s wall, --jobs {jobs}; script: benchmarks/plan/seeds_agreement.py)"]
    (HERE / "seeds_agreement.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
