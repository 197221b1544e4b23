"""Reading numbers off swept curves the way the PagedAttention paper reads them.

* :func:`rate_at_latency` — the highest request rate whose mean normalized latency stays under a
  threshold, interpolated linearly between the two swept rates around the first crossing
  (Fig. 12: "throughput at the same latency").
* :func:`ratios_at_latency` — those rates per system and the ratios ``reference / system``.
* :func:`value_at_rate` — a metric at a given rate, interpolated between swept rates (Fig. 13's
  batch sizes at the paper's rates).
* :func:`full_cache_split` — the KV memory split averaged only over iterations when the cache is
  full (Fig. 2), weighted by iteration time.

Readings that fall outside the swept range are bounds, not values: a system that never crosses
the threshold has a rate ``>=`` the top rate swept, one already over it at the lowest rate a rate
``<`` the lowest; ratios carry the bound that follows (or ``?`` when the bounds point both ways).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

MEM_PARTS = ("mem_used", "mem_internal", "mem_reserved", "mem_external", "mem_free")


@dataclass(frozen=True)
class Reading:
    value: float
    bound: str = "="        # "=" read inside the sweep, ">=" lower bound, "<" / "<=" upper bound, "?" unknown

    def __str__(self) -> str:
        if not math.isfinite(self.value) or self.bound == "?":
            return "n/a"
        prefix = {"=": "", ">=": ">=", "<": "<", "<=": "<="}[self.bound]
        return f"{prefix}{self.value:.2f}"


def rate_at_latency(rates, latencies, threshold: float) -> Reading:
    """Highest rate with mean normalized latency <= ``threshold`` (module doc); NaN latency counts as over."""
    r = np.asarray(rates, dtype=float)
    lat = np.asarray(latencies, dtype=float)
    if r.size == 0:
        return Reading(float("nan"), "?")
    order = np.argsort(r, kind="stable")
    r, lat = r[order], np.where(np.isnan(lat[order]), np.inf, lat[order])
    over = np.nonzero(lat > threshold)[0]
    if over.size == 0:
        return Reading(float(r[-1]), ">=")
    i = int(over[0])
    if i == 0:
        return Reading(float(r[0]), "<")
    r0, r1, l0, l1 = r[i - 1], r[i], lat[i - 1], lat[i]
    if not math.isfinite(l1):           # no finished request at r1: the crossing is somewhere above r0
        return Reading(float(r0), ">=")
    return Reading(float(r0 + (threshold - l0) * (r1 - r0) / (l1 - l0)), "=")


def ratio(a: Reading, b: Reading) -> Reading:
    """``a / b`` with the bound it inherits from two readings."""
    if not (math.isfinite(a.value) and math.isfinite(b.value)) or b.value <= 0 or "?" in (a.bound, b.bound):
        return Reading(float("nan"), "?")
    up = {"<", "<="}
    a_lo, a_up = a.bound == ">=", a.bound in up
    b_lo, b_up = b.bound == ">=", b.bound in up
    if (a_lo or b_up) and (a_up or b_lo):
        bound = "?"
    elif a_lo or b_up:
        bound = ">="
    elif a_up or b_lo:
        bound = "<="
    else:
        bound = "="
    return Reading(a.value / b.value, bound)


def ratios_at_latency(df: pd.DataFrame, threshold: float, system: str = "engine.allocator",
                      reference: str = "paged", rate: str = "workload.rate_req_s",
                      latency: str = "normalized_latency_s") -> tuple[dict, dict]:
    """``({system: rate Reading}, {system: reference/system Reading})`` at equal latency ``threshold``."""
    rates = {k: rate_at_latency(g[rate], g[latency], threshold) for k, g in df.groupby(system, sort=False)}
    if reference not in rates:
        return rates, {}
    return rates, {k: ratio(rates[reference], v) for k, v in rates.items() if k != reference}


def value_at_rate(rates, values, at: float) -> float:
    """``values`` at rate ``at``, linear between swept rates; NaN outside the swept range."""
    r = np.asarray(rates, dtype=float)
    v = np.asarray(values, dtype=float)
    if r.size == 0 or at < r.min() or at > r.max():
        return float("nan")
    order = np.argsort(r, kind="stable")
    return float(np.interp(at, r[order], v[order]))


def full_cache_split(its: pd.DataFrame, free_below_frac: float = 0.05, reservation_slots: int = 0) -> dict:
    """Memory split over the iterations when the KV cache is full, as fractions of the cache.

    An iteration is full when its free, usable slots (``mem_free``) are fewer than
    ``max(free_below_frac x capacity, reservation_slots)``: the second term is for allocators
    whose every admission needs a fixed reservation (Orca-Max: ``max_model_len`` slots), whose
    last hole can stay larger than a small fraction while no request fits in it. Capacity is
    each row's used + internal + reserved + external + free slots. Iterations are weighted by
    ``duration_s``. Returns ``{part}_frac`` for each of :data:`MEM_PARTS`, ``iterations`` (how
    many were full), ``time_frac`` (their share of the run's time) and ``threshold_slots``.
    """
    if len(its) == 0:
        return {**{f"{p}_frac": float("nan") for p in MEM_PARTS}, "iterations": 0, "time_frac": 0.0,
                "threshold_slots": float("nan")}
    cap = its[list(MEM_PARTS)].sum(axis=1).to_numpy(dtype=float)
    thr = np.maximum(free_below_frac * cap, float(reservation_slots))
    full = its["mem_free"].to_numpy(dtype=float) < thr
    w = its["duration_s"].to_numpy(dtype=float)
    wf = w * full
    out = {}
    for p in MEM_PARTS:
        den = (cap * wf).sum()
        out[f"{p}_frac"] = float((its[p].to_numpy(dtype=float) * wf).sum() / den) if den > 0 else float("nan")
    out["iterations"] = int(full.sum())
    out["time_frac"] = float(wf.sum() / w.sum()) if w.sum() > 0 else 0.0
    out["threshold_slots"] = float(thr.max())
    return out
