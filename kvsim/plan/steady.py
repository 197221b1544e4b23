"""The steady-state measurement window of one probe run: what a replicated plan measures.

A probe starts from an empty server and stops sending after a fixed number of
requests, so its first arrivals see no queue (warm-up) and its last ones see no
later arrivals competing for batch slots and KV blocks (drain). Load generators
measure only requests arriving in between; so does the replicated planner:
:func:`steady_window` keeps the requests whose arrival rank lies in
``[WARMUP_FRAC, 1 - DRAIN_FRAC)`` of the run.

Measured on the quickstart (OPT-13B, A100-40GB, ShareGPT-like, 20 seeds,
``benchmarks/plan/knee_diagnosis.md``): the first tenth of the arrivals has
a mean TTFT of 0.05 s, the empty-server value, at every rate of a 600-request
run, while near the knee (1.6-2.0 req/s) the later tenths read 0.2-9 s; at
1.8 req/s the second and third tenths (0.4 and 1.2 s) are still below the rest
(1.7-2.7 s). With the whole run the pooled p99 TTFT at 1.6 req/s reads 10.6 s,
with the window 12.1 s: the warm-up makes short runs look better than the
server is. Dropping the first 20% removes that bias at the price of a fifth of
the samples; the last 10% is dropped for the drain, whose effect at the knee is
smaller than the noise but has no place in a steady-state answer.
The windowed share above a p99 bound does not depend on the run length beyond
noise (``benchmarks/plan/window_length.md``: 80 seeds at 1.5-1.6 req/s, runs of
600 / 2400 / 4800 requests agree within 1.3 standard errors, and blocks of a
4800-request run show no trend after the warm-up).

Only finished requests carry latencies; unfinished ones fail the probe anyway
(:mod:`kvsim.plan.slo`) and rejected ones (never fitting the KV cache) do not
depend on the rate, so neither enters the window's samples.
"""
from __future__ import annotations

import math

import numpy as np

WARMUP_FRAC = 0.2
DRAIN_FRAC = 0.1

# SLO key -> the per-request sample in the window it is judged on
PER_REQUEST = {"ttft_p99_s": "ttft_s", "tpot_p99_s": "tpot_s", "normalized_latency_s": "normalized_latency_s"}


def window_bounds(n: int) -> tuple[int, int]:
    """[first, last) arrival ranks measured in a run of ``n`` requests (never empty for n >= 1)."""
    first = int(math.ceil(WARMUP_FRAC * n))
    last = n - int(math.floor(DRAIN_FRAC * n))
    if last <= first:
        return 0, n
    return first, last


def steady_window(reqs, keys=None) -> dict:
    """Per-request samples of the requests arriving in the window, as float64 arrays keyed by
    :data:`PER_REQUEST`'s values (only those of the SLO ``keys`` given; all when None), plus ``n``
    (requests in the window, finished or not)."""
    order = np.argsort(reqs.arrival_s.to_numpy(), kind="stable")
    first, last = window_bounds(len(order))
    w = reqs.iloc[order[first:last]]
    done = w[w.status == "finished"]
    want = set(PER_REQUEST.values()) if keys is None else {PER_REQUEST[k] for k in keys if k in PER_REQUEST}
    out: dict = {"n": int(len(w))}
    arrival, first_tok, finish = (done[c].to_numpy(dtype=float) for c in ("arrival_s", "first_token_s", "finish_s"))
    out_len = done.output_len.to_numpy(dtype=float)
    if "ttft_s" in want:
        out["ttft_s"] = first_tok - arrival
    if "tpot_s" in want:
        multi = out_len > 1
        out["tpot_s"] = (finish[multi] - first_tok[multi]) / (out_len[multi] - 1)
    if "normalized_latency_s" in want:
        out["normalized_latency_s"] = (finish - arrival) / out_len
    return out
