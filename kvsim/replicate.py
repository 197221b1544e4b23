"""Replications: the same scenario under seeds ``seed .. seed+N-1``, summarised as mean and interval.

``--seeds N`` on ``run``, ``sweep`` and ``plan`` re-runs a scenario with N
seeds (the scenario's ``seed`` and the N-1 after it); every metric is then the
mean over the runs with a two-sided Student-t interval (:mod:`kvsim.stats`,
95% unless ``--confidence`` says otherwise) and the number of runs. ``--seeds 1``
(the default) is one run, exactly as without the flag.
"""
from __future__ import annotations

from kvsim import limits as L
from kvsim.configtools import check_number
from kvsim.errors import KvsimError

MAX_SEEDS = 1000

# The metrics a replicated run prints: (label, summary key, format).
REPORTED = (
    ("throughput (req/s)", "throughput_req_s", "{:.3f}"),
    ("throughput (tok/s)", "throughput_tok_s", "{:.1f}"),
    ("normalized latency (s/token)", "normalized_latency_s", "{:.4f}"),
    ("TTFT p50 (s)", "ttft_p50_s", "{:.3f}"), ("TTFT p99 (s)", "ttft_p99_s", "{:.3f}"),
    ("TPOT p50 (s)", "tpot_p50_s", "{:.4f}"), ("TPOT p99 (s)", "tpot_p99_s", "{:.4f}"),
    ("ITL p50 (s)", "itl_p50_s", "{:.4f}"), ("ITL p99 (s)", "itl_p99_s", "{:.4f}"),
    ("E2E latency p50 (s)", "latency_p50_s", "{:.2f}"), ("E2E latency p99 (s)", "latency_p99_s", "{:.2f}"),
    ("avg batched requests", "avg_batched_requests", "{:.2f}"),
    ("preemptions", "preemptions", "{:.1f}"),
    ("requests finished", "requests_finished", "{:.1f}"),
)


def check_seeds(n) -> int:
    return check_number("--seeds", n, int, (1, MAX_SEEDS, False, False))


def seed_list(base: int, n: int) -> list[int]:
    """``[base, base+1, ..., base+n-1]``; an error when the last one passes the seed limit."""
    n = check_seeds(n)
    if base + n - 1 > L.MAX_SEED:
        raise KvsimError("--seeds", f"seeds {base}..{base + n - 1} pass the largest seed {L.MAX_SEED}")
    return [base + i for i in range(n)]


def seed_override(seed: int) -> str:
    return f"seed={int(seed)}"


def _summary_of(args) -> dict:
    data, overrides = args
    from kvsim.config import load_scenario
    from kvsim.sim import simulate
    return simulate(load_scenario(data, overrides)).summary


def run_seeds(data: dict, overrides: list[str], seeds: list[int], jobs: int | None = None,
              progress: bool = False) -> list[dict]:
    """One run summary per seed (local processes, in seed order)."""
    import os
    from kvsim.sweeps import map_local
    tasks = [(data, list(overrides) + [seed_override(s)]) for s in seeds]
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(tasks)))
    return map_local(_summary_of, tasks, jobs, progress=progress, desc="seeds", unit="run")


def format_replicated(summaries: list[dict], confidence: float) -> str:
    """One line per reported metric: mean [interval] over the runs."""
    from kvsim.stats import interval
    n = len(summaries)
    lines = [f"  {'metric (mean over runs)':<38} mean [{confidence:.0%} interval], {n} runs"]
    for label, key, fmt in REPORTED:
        iv = interval([s.get(key) for s in summaries], confidence)
        if iv.n == 0:
            text = "n/a"
        else:
            text = f"{fmt.format(iv.mean)} [{fmt.format(iv.lo)}, {fmt.format(iv.hi)}]"
        lines.append(f"  {label:<38} {text}")
    return "\n".join(lines)


def replication_document(seeds: list[int], summaries: list[dict], confidence: float) -> dict:
    """summary.json's ``replications`` part: the seeds, each run's summary and the aggregate."""
    from kvsim.stats import aggregate
    return {"seeds": seeds, "confidence": confidence, "runs": len(summaries),
            "mean_and_interval": aggregate(summaries, confidence),
            "per_seed": [{"seed": s, **summ} for s, summ in zip(seeds, summaries)]}
