"""The text a run prints, shared by ``kvsim run`` and ``kvsim engine``: the arrivals header and the summary table."""
from __future__ import annotations

ROWS = (
    ("throughput", "throughput_req_s", "{:.3f} req/s"), ("", "throughput_tok_s", "{:.1f} tok/s"),
    ("normalized latency (mean)", "normalized_latency_s", "{:.4f} s/token"),
    ("TTFT p50 / p99", ("ttft_p50_s", "ttft_p99_s"), "{:.3f} / {:.3f} s"),
    ("TPOT p50 / p99", ("tpot_p50_s", "tpot_p99_s"), "{:.4f} / {:.4f} s"),
    ("ITL p50 / p99", ("itl_p50_s", "itl_p99_s"), "{:.4f} / {:.4f} s"),
    ("E2E latency p50 / p99", ("latency_p50_s", "latency_p99_s"), "{:.2f} / {:.2f} s"),
    ("avg batched requests", "avg_batched_requests", "{:.2f}"),
    ("preemptions (swap / recompute)", ("preemptions", "preemptions_swap", "preemptions_recompute"),
     "{} ({} / {})"),
    ("KV used / reserved", ("mem_used_frac", "mem_reserved_frac"), "{:.1%} / {:.1%}"),
    ("KV internal / external frag.", ("mem_internal_frag_frac", "mem_external_frag_frac"), "{:.1%} / {:.1%}"),
    ("KV saved by sharing", "sharing_saved_frac", "{:.1%}"),
    ("requests finished / rejected / total", ("requests_finished", "requests_rejected", "requests_total"),
     "{} / {} / {}"),
    ("iterations, simulated time", ("num_iterations", "sim_duration_s"), "{}, {:.1f} s"),
)


def format_summary(summary: dict, *, clock: str = "simulated") -> str:
    """The summary table; ``clock`` names the time axis of the last row ("simulated" for ``kvsim run``,
    "wall" for ``kvsim engine``, whose iterations ran on a real clock)."""
    lines = []
    for label, keys, fmt in ROWS:
        label = label.replace("simulated time", f"{clock} time")
        keys = keys if isinstance(keys, tuple) else (keys,)
        vals = [summary.get(k) for k in keys]
        text = "n/a" if any(v is None for v in vals) else fmt.format(*vals)
        lines.append(f"  {label:<38} {text}")
    return "\n".join(lines)


def arrivals_text(sc, num_requests: int) -> str:
    """The arrival process a run actually used, for the header (re-timed traces say so)."""
    from kvsim.workload.config import describe_arrivals
    w = sc.workload
    rows = None
    if w.dataset == "trace":
        from kvsim.workload.trace import read_trace
        rows = len(read_trace(w.path))
    return describe_arrivals(w, num_requests, rows)
