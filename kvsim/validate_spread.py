"""How large an error the choice of requests alone makes: a paired bootstrap of the per-request metrics.

A validation run is one sample of requests. A per-request metric's error (TTFT p50, mean or p99 normalized
latency, TPOT) depends on which requests the scenario happened to draw as well as on the model: a request that
arrives while a decode step runs waits for that step to end, and after hundreds of steps a 0.1% step-time error
moves where the step boundaries fall, so request by request the simulator's wait is longer or shorter than the
engine's by up to a step, in both directions. Over 15 requests the median of such waits moves by milliseconds.

For each scenario the requests finished on both sides are paired by id; the scenario's requests are drawn again
with replacement (:data:`RESAMPLES` times, a fixed seed), each draw taking a request's predicted and measured
values together, and the metric's relative error is computed on each draw. The table gives the central
:data:`LEVEL` interval of those errors beside the error on all the pairs: where it holds 0, the error is within what
this many requests can show with no error in the model; where it does not, the model is off by at least the nearer
end. The errors here are the pairs' (requests finished on both sides; the engine's first run), so they can differ a
little from the validation table's, which takes each side's own finished requests (and the runs' median).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

RESAMPLES = 1000
LEVEL = 0.90
SEED = 0
# metric: (per-request column, statistic: "mean" or a percentile)
METRICS = {
    "normalized_latency_s": ("norm", "mean"),
    "normalized_latency_p50_s": ("norm", 50),
    "normalized_latency_p99_s": ("norm", 99),
    "ttft_p50_s": ("ttft", 50),
    "ttft_p99_s": ("ttft", 99),
    "tpot_p50_s": ("tpot", 50),
    "tpot_p99_s": ("tpot", 99),
}
COLUMNS = ("scenario", "metric", "requests", "error", "lo", "hi", "holds_zero")


def per_request(reqs: pd.DataFrame) -> pd.DataFrame:
    """The finished requests' normalized latency, TTFT and TPOT (NaN for one output token), by request id, as the
    run summary defines them (:func:`kvsim.metrics.request_latencies`)."""
    from kvsim.metrics import request_latencies
    mask = (reqs.status == "finished").to_numpy()
    cols = ("arrival_s", "first_token_s", "finish_s", "output_len", "request_id")
    done = {c: reqs[c].to_numpy()[mask] for c in cols}
    norm, ttft, tpot = request_latencies(done)
    ids = done["request_id"]
    return pd.DataFrame({"norm": norm, "ttft": ttft, "tpot": tpot}, index=ids)


def _stat(values: np.ndarray, how) -> np.ndarray:
    """``how`` over the last axis (NaN-free input)."""
    return values.mean(axis=-1) if how == "mean" else np.percentile(values, how, axis=-1)


def scenario_rows(name: str, sim_reqs: pd.DataFrame, eng_reqs: pd.DataFrame, *, resamples: int = RESAMPLES,
                  seed: int = SEED) -> list[dict]:
    """One row per metric of :data:`METRICS` (see the module doc); none where fewer than 2 requests pair up or
    the measured statistic is 0."""
    sim, eng = per_request(sim_reqs), per_request(eng_reqs)
    ids = sim.index.intersection(eng.index)
    rows = []
    rng = np.random.default_rng(seed)
    draws: dict[int, np.ndarray] = {}          # one set of draws per pair count (TPOT pairs fewer requests)
    for metric, (col, how) in METRICS.items():
        s, e = sim.loc[ids, col].to_numpy(float), eng.loc[ids, col].to_numpy(float)
        keep = np.isfinite(s) & np.isfinite(e)
        s, e = s[keep], e[keep]
        n = len(s)
        if n < 2:
            continue
        if n not in draws:
            draws[n] = rng.integers(0, n, size=(resamples, n))
        idx = draws[n]
        with np.errstate(divide="ignore", invalid="ignore"):
            boot = _stat(s[idx], how) / _stat(e[idx], how) - 1.0
            err = float(_stat(s, how) / _stat(e, how) - 1.0)
        boot = boot[np.isfinite(boot)]
        if not boot.size or not np.isfinite(err):
            continue                            # (a measured statistic of 0: no relative error)
        lo, hi = (float(x) for x in np.percentile(boot, [50 * (1 - LEVEL), 50 * (1 + LEVEL)]))
        rows.append({"scenario": name, "metric": metric, "requests": n, "error": err, "lo": lo, "hi": hi,
                     "holds_zero": bool(lo <= 0.0 <= hi)})
    return rows


def console_line(table: pd.DataFrame, page: str) -> str | None:
    """The line ``kvsim validate`` prints: how many of the set's errors lie within their requests' spread (TTFT p50
    apart), pointing at ``page``; None for an empty table."""
    if table.empty:
        return None
    ttft = table[table.metric == "ttft_p50_s"]
    return (f"  requests' spread: {int(table.holds_zero.sum())} of {len(table)} per-request errors within what the "
            f"scenario's requests alone can make (TTFT p50: {int(ttft.holds_zero.sum())} of {len(ttft)}; {page})")


def markdown(table: pd.DataFrame) -> str:
    """The set's rows as a page (module doc as its lead)."""
    from kvsim.validate_records import METRICS as LABELS
    labels = dict(LABELS)
    lines = ["# Errors against the requests' own spread", "",
             f"Per-request metrics' relative error (predicted over measured, less 1) on the requests finished on both "
             f"sides, and its central {LEVEL:.0%} interval over {RESAMPLES:,} draws of the scenario's requests with "
             f"replacement, each request's predicted and measured values drawn together (seed {SEED}; "
             "`kvsim/validate_spread.py`). An interval holding 0: this many requests can show that error with none in "
             "the model. The errors are the pairs' (the engine's first run), so they can differ a little from the "
             "validation table's.", ""]
    if table.empty:
        return "\n".join(lines + ["No scenario had two requests finished on both sides.", ""])
    lines += ["| scenario | metric | requests | error | interval | holds 0 |", "|---|---|---|---|---|---|"]
    for r in table.itertuples(index=False):
        label = labels.get(r.metric, r.metric)
        lines.append(f"| {r.scenario} | {label} | {r.requests} | {r.error:+.1%} | {r.lo:+.1%} to {r.hi:+.1%} | "
                     f"{'yes' if r.holds_zero else 'no'} |")
    outside = table[~table.holds_zero]
    lines += ["", f"{len(outside)} of {len(table)} errors lie outside their interval."]
    return "\n".join(lines) + "\n"
