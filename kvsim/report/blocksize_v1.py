"""The V0 vs V1 column of the block-size report (``kvsim report block-size --compare-v1``).

For every block size the planner's max-rate search runs once more with ``engine.policy=v1``
(recompute-only preemption, one token budget with decodes first and chunked prefill, no admission
watermark) on the same workload and SLOs. The table gains ``max_rate_v1`` and, read at each
policy's max rate, ``preemptions_per_req_v1`` / ``swaps_per_req_v1`` and ``batched_v0`` /
``batched_v1`` (average batched requests; v1 counts a request's n children, divided here by n).
:func:`v1_reason` states the difference from those numbers.
"""
from __future__ import annotations

import math

from kvsim.errors import KvsimError
from kvsim.plan.search import SearchResult, find_max_rate

V1_OVERRIDES = ["engine.policy=v1", "engine.preemption_mode=recompute"]


def search_v1(args) -> tuple[int, SearchResult | None]:
    data, overrides, b, slo, kw = args
    try:
        return b, find_max_rate(data, slo, overrides + [f"engine.block_size={b}", *V1_OVERRIDES], **kw)
    except KvsimError as e:                  # e.g. a v0-only setting: the row says why
        return b, SearchResult(None, None, None, note=str(e))


def _per_req(summary: dict | None, key: str) -> float | None:
    if not summary:
        return None
    return summary[key] / max(1, summary["requests_total"])


def add_columns(row: dict, r0: SearchResult, r1: SearchResult, n: int) -> None:
    """Fill the v1 columns of one block size's row from the v0 (best mode) and v1 searches."""
    s0, s1 = r0.summary or {}, r1.summary or {}
    row["max_rate_v1"] = r1.max_rate
    row["preemptions_per_req_v1"] = _per_req(r1.summary, "preemptions")
    row["swaps_per_req_v1"] = _per_req(r1.summary, "preemptions_swap")
    row["batched_v0"] = s0.get("avg_batched_requests")
    row["batched_v1"] = s1["avg_batched_requests"] / n if s1 else None
    row["v1_note"] = r1.note or ""


def v1_reason(table, best_mode_col: str = "best_mode") -> str:
    """One paragraph: how v1's SLO rate compares with v0's per block size, and the measured why."""
    t = table.dropna(subset=["max_rate_req_s", "max_rate_v1"])
    if not len(t):
        notes = [n for n in table.get("v1_note", []) if n]
        return "v1 meets the SLOs at no block size" + (f" ({notes[0]})" if notes else "") + "."
    ratio = t.max_rate_v1 / t.max_rate_req_s
    b_hi, b_lo = t.loc[ratio.idxmax()], t.loc[ratio.idxmin()]
    parts = [f"v1 sustains {ratio.min():.0%}-{ratio.max():.0%} of v0's best rate across block sizes "
             f"({b_lo.max_rate_v1:.3g} vs {b_lo.max_rate_req_s:.3g} req/s at block {int(b_lo.block_size)}, "
             f"{b_hi.max_rate_v1:.3g} vs {b_hi.max_rate_req_s:.3g} at block {int(b_hi.block_size)})"]
    for b in ([b_lo] if b_lo.block_size == b_hi.block_size else [b_lo, b_hi]):
        p0 = b.get(f"preemptions_per_req_{b[best_mode_col]}")
        if p0 is None or (isinstance(p0, float) and math.isnan(p0)):
            continue
        parts.append(f"at block {int(b.block_size)}, each at its own max rate, v0 ({b[best_mode_col]}) preempts "
                     f"{p0:.2f} per request and batches {b.batched_v0:.1f} requests, v1 preempts "
                     f"{b.preemptions_per_req_v1:.2f} (recompute only; {b.swaps_per_req_v1:.0f} swaps) and batches "
                     f"{b.batched_v1:.1f}")
    parts.append("v1 schedules one token budget with running decodes first and prompts chunked into them, and "
                 "admits without v0's watermark; block size acts on both policies through the same "
                 "fragmentation (the internal-fragmentation column is shared)")
    return "; ".join(parts) + "."
