"""Judging an SLO on N replications: a p99 bound as a share of requests, a mean as a mean.

Why not a Student-t interval on the N per-run p99s (the first replicated planner)?
Near the knee a run's p99 TTFT is decided by whether its few hundred requests
happened to include one burst that filled the KV cache: on the quickstart at
1.6 req/s, 600 requests, the 20 per-seed p99s run from 0.12 s to 18.6 s (mean
5.1 s, sd 5.7 s; ``benchmarks/plan/knee_diagnosis.md``). That sample is skewed
and bimodal, its mean is biased low against the p99 of all requests pooled
(10.6 s), and its t-interval went below zero.

``p99 <= B`` says the same as ``P(a request's latency > B) <= 1%``. That share
is a mean, so it has an unbiased estimator per replication — the fraction
``e_i`` of run ``i``'s steady-window requests (:mod:`kvsim.plan.steady`) above
``B`` — and the runs, not the requests (which queue behind one another), are
the independent units. :func:`share_interval`'s lower end is the Student-t end of
the mean of the ``e_i`` over the runs, widened where needed to the Wilson score
interval of the pooled count (measured honest: ``benchmarks/plan/interval_coverage_*.md``).
Its upper end is :func:`kvsim.plan.tail_bound.share_upper`: near the knee the
``e_i`` are zero-inflated and heavy-tailed (most runs have none, a few a burst
with 5-65% of their window above the bound), and the t end on them was too low
in 11-40% of 10-run draws (95% would be 2.5%). The upper end now averages
near-miss shares (requests between ``B/2`` and ``B`` count in proportion, so it
bounds the share from above) and uses the Korn-Graubard design-effect interval
over the runs; its coverage, and its limit with short runs, are in that module.
A rate passes a p99 SLO when the upper end is at most 1%, and fails it with
confidence when the lower end is above 1%. ``share_interval(..., method="t")``
gives the first construction's upper end, for the coverage check's comparison.

The p99 itself is then reported as the pooled quantile (the smallest latency
``x`` with mean share above ``x`` at most 1%) with the interval obtained by
inverting the same test over ``x`` (:func:`quantile_interval`: the smallest
``x`` whose share interval's lower, or upper, end is at most 1%; the near-miss
upper end moves between samples too, so twice each sample and the SLO's bound are
tried as well; in chunks, the upper end only from the mean's crossing on): its upper end is within ``B``
whenever the share above ``B`` passes. SLOs that are means
(``normalized_latency_s`` over the window's requests, ``preemption_rate``,
``goodput_miss_frac`` per run) use the Student-t interval of the per-run values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from kvsim.plan.slo import slo_value
from kvsim.plan.steady import PER_REQUEST
from kvsim.plan.tail_bound import share_upper
from kvsim.stats import interval, t_quantile

QUANTILE_SLOS = {"ttft_p99_s": 0.99, "tpot_p99_s": 0.99}      # SLO key -> the quantile it bounds


@dataclass(frozen=True)
class Call:
    """One SLO at one rate: the estimate and its interval (in the SLO's units), and the decision."""
    estimate: float
    lo: float
    hi: float
    passes: bool          # holds with the confidence
    fails: bool           # is broken with the confidence
    ratio: float          # the point estimate against the bound, 1 at the bound (for p99s: share above it / 1%)


def min_samples(q: float, confidence: float) -> int:
    """Fewest pooled samples whose Wilson upper end can be within ``1 - q`` (none of them above the bound):
    with fewer, a ``q`` quantile SLO can never pass (381 for a p99 at 95%)."""
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    return math.floor(z * z * q / (1 - q)) + 1


def _wilson(k: np.ndarray, n: int, z: float) -> tuple[np.ndarray, np.ndarray]:
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return np.clip(mid - half, 0, 1), np.clip(mid + half, 0, 1)


def share_interval(samples: list[np.ndarray], thresholds, confidence: float, method: str = "kg"):
    """(mean share, lo, hi) of requests above each threshold: arrays over ``thresholds`` (module doc).
    ``method="t"`` gives the first construction's upper end (t over the runs), kept for the coverage check."""
    if method not in ("kg", "t"):
        raise ValueError(f"share_interval method {method!r}")
    x = np.atleast_1d(np.asarray(thresholds, dtype=float))
    sorted_runs = [np.sort(np.asarray(s, dtype=float)) for s in samples if len(s)]
    if not sorted_runs:
        nan = np.full(x.shape, np.nan)
        return nan, nan, nan
    above = np.array([len(s) - np.searchsorted(s, x, side="right") for s in sorted_runs], dtype=float)
    sizes = np.array([len(s) for s in sorted_runs], dtype=float)
    e = above / sizes[:, None]
    n = len(sorted_runs)
    mean = e.mean(axis=0)
    if n > 1:
        half = t_quantile(1 - (1 - confidence) / 2, n - 1) * e.std(axis=0, ddof=1) / math.sqrt(n)
    else:
        half = np.zeros_like(mean)
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    w_lo, w_hi = _wilson(above.sum(axis=0), int(sizes.sum()), z)
    hi = mean + half if method == "t" else share_upper(sorted_runs, x, confidence)
    return mean, np.clip(np.minimum(mean - half, w_lo), 0, 1), np.clip(np.maximum(hi, w_hi), 0, 1)


CELLS = 1 << 21       # runs x thresholds per share_interval call in quantile_interval (16 MiB a matrix)


def _first_at_most(samples, cand: np.ndarray, p: float, confidence: float, method: str, ends: tuple,
                   start: int = 0) -> list:
    """For each of share_interval's outputs ``ends`` (0 mean, 1 lower, 2 upper end), the smallest index
    ``>= start`` into ``cand`` where it is at most ``p`` (None if nowhere), evaluated in chunks of ``cand`` so
    that the (runs x thresholds) matrices stay within :data:`CELLS`; stops once every one is found."""
    found = [None] * len(ends)
    step = max(1, CELLS // max(1, len(samples)))
    for a in range(start, len(cand), step):
        got = share_interval(samples, cand[a:a + step], confidence, method=method)
        for j, e in enumerate(ends):
            i = np.flatnonzero(got[e] <= p) if found[j] is None else ()
            if len(i):
                found[j] = a + int(i[0])
        if all(f is not None for f in found):
            break
    return found


def quantile_interval(samples: list[np.ndarray], q: float, confidence: float,
                      bounds=()) -> tuple[float, float, float]:
    """Pooled ``q`` quantile and its interval by test inversion (module doc); NaNs without samples.
    ``bounds``: thresholds tried besides the samples (an SLO's bound, so that passing it puts the upper end
    within it).

    Every threshold is judged exactly as :func:`share_interval` judges it, in chunks (memory: ``CELLS``, not
    runs x twice the pooled samples). The mean share above ``x`` falls as ``x`` grows, the lower end is at most
    the mean and the upper end at least it, so the lower end's and the mean's first crossings come from the
    cheap indicator shares (``method="t"``: the same mean and lower end) and the upper end's near-miss bound
    is evaluated only from the mean's crossing on."""
    data = [np.asarray(s, dtype=float) for s in samples]
    if not data or not sum(len(s) for s in data):
        return math.nan, math.nan, math.nan
    pooled = np.concatenate(data)
    # the share above x changes only at samples; the upper end's near-miss share also bends at twice a sample
    cand = np.unique(np.concatenate([pooled, 2 * pooled, np.asarray(bounds, dtype=float)]))
    p = 1 - q
    i_mean, i_lo = _first_at_most(data, cand, p, confidence, "t", (0, 1))
    i_hi = None if i_mean is None else _first_at_most(data, cand, p, confidence, "kg", (2,), start=i_mean)[0]
    # the smallest candidate x where each holds (the largest sample if nowhere): the share above x is constant
    # between samples, and ``hi <= p`` at a bound B in ``bounds`` gives an upper end <= B
    return tuple(float(pooled.max() if i is None else cand[i]) for i in (i_mean, i_lo, i_hi))


def judge(key: str, bound: float, summaries: list[dict], confidence: float) -> Call:
    """Does SLO ``key <= bound`` hold over these replications (summaries with a ``steady`` window)?"""
    if key in QUANTILE_SLOS:
        samples = [s["steady"][PER_REQUEST[key]] for s in summaries]
        p = 1 - QUANTILE_SLOS[key]
        mean_b, lo_b, hi_b = share_interval(samples, [bound], confidence)
        est, lo, hi = quantile_interval(samples, QUANTILE_SLOS[key], confidence, bounds=[bound])
        return Call(est, lo, hi, bool(hi_b[0] <= p), bool(lo_b[0] > p), float(mean_b[0] / p))
    if key in PER_REQUEST:
        per_run = [s["steady"][PER_REQUEST[key]] for s in summaries]
        vals = [float(np.mean(x)) if len(x) else math.nan for x in per_run]
    else:
        vals = [slo_value(s, key) for s in summaries]
    iv = interval(vals, confidence)
    complete = iv.n == len(vals)
    return Call(iv.mean, iv.lo, iv.hi, complete and iv.hi <= bound, complete and iv.lo > bound, iv.mean / bound)
