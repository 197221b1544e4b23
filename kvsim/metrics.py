"""Summary metrics from the per-request and per-iteration records.

Definitions (the PagedAttention paper's where it has one):

* throughput — finished requests (and generated tokens, all samples/beams) per
  second of the run, from the first arrival to the last finish;
* normalized latency — mean over finished requests of end-to-end latency ÷
  output length (s/token);
* TTFT — first token − arrival; TPOT — (finish − first token) ÷ (output − 1);
* end-to-end latency (``latency_*``) — finish − arrival; ITL (``itl_*``) —
  the gaps between a request's decode steps, pooled over every finished
  request (definition in :mod:`kvsim.latency`);
* average batched requests — iteration batch size weighted by iteration time;
* memory split — used / internal fragmentation / reserved / external
  fragmentation / free slots, time-weighted over iterations, as fractions of
  the KV capacity;
* sharing saved — 1 − physical ÷ logical slots (what the block tables would
  need without sharing), time-weighted.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

SUMMARY_KEYS = (
    "throughput_req_s", "throughput_tok_s", "normalized_latency_s",
    "normalized_latency_p50_s", "normalized_latency_p99_s",
    "latency_p50_s", "latency_p99_s", "latency_mean_s", "latency_p90_s",
    "itl_p50_s", "itl_p90_s", "itl_p99_s",
    "ttft_p50_s", "ttft_p90_s", "ttft_p99_s", "tpot_p50_s", "tpot_p90_s", "tpot_p99_s",
    "avg_batched_requests", "max_batched_requests", "preemptions", "preemptions_swap",
    "preemptions_recompute", "mem_used_frac", "mem_internal_frag_frac", "mem_reserved_frac",
    "mem_external_frag_frac", "mem_free_frac", "sharing_saved_frac", "peak_blocks_in_use",
    "prefix_cache_hit_frac", "requests_total", "requests_finished", "requests_rejected",
    "requests_unfinished", "num_iterations", "sim_duration_s",
)

# the iteration columns summarize (and kvsim.latency.itl_gaps) read
SUMMARY_INPUTS = ("start_s", "duration_s", "decode_seqs", "batched_requests", "blocks_in_use", "mem_used",
                  "mem_internal", "mem_reserved", "mem_external", "mem_free", "mem_logical")


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def _clean(x: float) -> float | None:
    x = float(x)
    return None if np.isnan(x) else round(x, 9)


FINISHED_INPUTS = ("arrival_s", "first_token_s", "finish_s", "output_len", "n", "beam_width")


def finished_columns(reqs: pd.DataFrame) -> dict[str, np.ndarray]:
    """The finished requests' ``FINISHED_INPUTS`` as numpy arrays."""
    mask = (reqs.status == "finished").to_numpy()
    return {c: reqs[c].to_numpy()[mask] for c in FINISHED_INPUTS}


def request_latencies(done: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per finished request (``done``: :func:`finished_columns`): normalized latency (end-to-end over output
    tokens), TTFT and TPOT (NaN where one output token was drawn), the run summary's per-request metrics."""
    out = done["output_len"]
    norm = (done["finish_s"] - done["arrival_s"]) / out
    ttft = done["first_token_s"] - done["arrival_s"]
    tpot = np.full(len(out), np.nan)
    multi = out > 1
    tpot[multi] = (done["finish_s"][multi] - done["first_token_s"][multi]) / (out[multi] - 1)
    return norm, ttft, tpot


def summarize(setup, reqs: pd.DataFrame, its, end_s: float, capacity_slots: int,
              prefix_stats: tuple[int, int] | None = None) -> dict:
    """Summary dict (keys: SUMMARY_KEYS). ``its``: the iterations (a frame with ``SUMMARY_INPUTS``, or their
    :class:`~kvsim.iterstats.IterationStats`, gathered a chunk at a time). ``prefix_stats`` = (prompt tokens served by the prefix
    cache, prompt tokens looked up) when prefix caching is on."""
    done = finished_columns(reqs)          # numpy columns of the finished rows (no copy of the whole frame)
    n_done = len(done["finish_s"])
    arrival = reqs.arrival_s.to_numpy()
    start = float(arrival.min()) if len(arrival) else 0.0
    last = float(done["finish_s"].max()) if n_done else end_s
    span = max(last - start, 1e-12)
    out_tokens = (done["output_len"] * np.where(done["beam_width"] > 1, done["beam_width"], done["n"])).sum()
    e2e = done["finish_s"] - done["arrival_s"]
    norm, ttft, tpot = request_latencies(done)
    tpot = tpot[done["output_len"] > 1]
    from kvsim.iterstats import IterationStats
    st = its if isinstance(its, IterationStats) else IterationStats.from_frame(its)
    itl_p50, itl_p90, itl_p99 = st.itl_percentiles(done, (50, 90, 99))
    sums = st.wsums
    wsum = sums["w"]

    def tavg(col: str) -> float:
        return float(sums[col] / wsum) if wsum > 0 else 0.0

    def frac(col: str) -> float:
        return tavg(col) / capacity_slots

    logical = sums["mem_logical"]
    saved = 1.0 - sums["phys"] / logical if logical > 0 else 0.0
    pre = reqs.preemptions.sum()
    hit = prefix_stats[0] / prefix_stats[1] if prefix_stats and prefix_stats[1] else 0.0
    s = {
        "throughput_req_s": n_done / span,
        "throughput_tok_s": float(out_tokens) / span,
        "normalized_latency_s": float(norm.mean()) if len(norm) else float("nan"),
        "normalized_latency_p50_s": _pct(norm, 50), "normalized_latency_p99_s": _pct(norm, 99),
        "latency_p50_s": _pct(e2e, 50), "latency_p99_s": _pct(e2e, 99),
        "latency_mean_s": float(e2e.mean()) if len(e2e) else float("nan"), "latency_p90_s": _pct(e2e, 90),
        "itl_p50_s": itl_p50, "itl_p90_s": itl_p90, "itl_p99_s": itl_p99,
        "ttft_p50_s": _pct(ttft, 50), "ttft_p90_s": _pct(ttft, 90), "ttft_p99_s": _pct(ttft, 99),
        "tpot_p50_s": _pct(tpot, 50), "tpot_p90_s": _pct(tpot, 90), "tpot_p99_s": _pct(tpot, 99),
        "avg_batched_requests": tavg("batched_requests"),
        "max_batched_requests": st.max_batched,
        "preemptions": int(pre),
        "preemptions_swap": int(reqs.swaps.sum()), "preemptions_recompute": int(reqs.recomputes.sum()),
        "mem_used_frac": frac("mem_used"), "mem_internal_frag_frac": frac("mem_internal"),
        "mem_reserved_frac": frac("mem_reserved"), "mem_external_frag_frac": frac("mem_external"),
        "mem_free_frac": frac("mem_free"), "sharing_saved_frac": float(saved),
        "peak_blocks_in_use": st.peak_blocks,
        "prefix_cache_hit_frac": float(hit),
        "requests_total": int(len(reqs)), "requests_finished": int(n_done),
        "requests_rejected": int((reqs.status == "rejected").sum()),
        "requests_unfinished": int(len(reqs) - n_done - (reqs.status == "rejected").sum()),
        "num_iterations": int(st.n), "sim_duration_s": float(end_s),
    }
    return {k: (_clean(v) if isinstance(v, float) else v) for k, v in s.items()}
