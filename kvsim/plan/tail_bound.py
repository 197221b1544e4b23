"""The upper end of the mean share above a bound when the per-run shares are zero-inflated (issue #13).

The planner judges ``p99 <= B`` by the mean over runs of ``e_i``, the share of run ``i``'s steady-window
requests above ``B`` (:mod:`kvsim.plan.exceedance`). Near a capacity knee the ``e_i`` are zero-inflated and
heavy-tailed: most runs have no request above ``B``, a few hold a KV-cache burst with 5-65% of their window
above it. The mean of ten such values is far from normal, and the Student-t upper end on them missed the
true mean in 10-40% of 10-run draws instead of 2.5% (``benchmarks/plan/interval_coverage_*.md``): ten runs
that miss the rare bursts show nothing, and a t interval on ten zeros has no width.

:func:`share_upper` changes two things, each principled on its own:

* **What is averaged: near misses count.** A request counts by ``g(x) = clip((x - B/2) / (B/2), 0, 1)``: 0
  up to ``B/2``, 1 above ``B``, rising in between. As ``g >= 1{x > B}`` for every request, the mean of the
  per-run shares ``g_i`` is at least the mean of the ``e_i``, so an upper end for it is one for the share
  above ``B`` (conservative, never anti-conservative). A queue that builds towards a burst passes ``B/2``
  before ``B``, and runs that came close but stayed under ``B`` now weigh in: the ``g_i`` are far less often
  zero than the ``e_i`` (at the quickstart's knee, 600 requests per run: 44-51% of runs against 16-24%).
* **How it is bounded: Korn-Graubard.** The upper end is the larger of the Student-t end over the runs'
  ``g_i`` and the Wilson score end at the effective sample size ``n_eff = m (1 - m) / var(mean)`` (``m`` the
  mean of the ``g_i``, ``var(mean)`` their between-run variance over ``N``), scaled by ``(z / t_{N-1})^2``
  and capped at the pooled request count (Korn & Graubard 1998, the design-effect-adjusted interval for a
  proportion from clustered samples; the runs are the clusters). Unlike the t end it stays skewed towards
  large values when the mean is small, and unlike the old Wilson floor it charges for the runs' clustering.

The assumption: the mean of the ``g_i`` over ``N`` runs is close enough to a binomial proportion with
``n_eff`` trials. It holds when most runs show some near miss. When few do — a rate where bursts are rare
events in a run of this length — no interval built from these runs alone can be honest: at 600 requests per
run, a rate that breaks the SLO shows no request above ``B`` in any of ten runs in 6-17% of draws, and ten
such runs look like ten runs of a safe rate. Measured against 60-80-seed populations of the quickstart
(``benchmarks/plan/interval_coverage_*.md``): with runs of 2400 requests the upper end is below the true
share in 1-6% of 10-run draws (t: 11-20%) and the breaking rate passes in 0.3% (t: 6.4%); with runs of 600
the upper end is still low in 5-29% (t: 20-46%) and a breaking rate passes in up to 16% (t: 30%). So the
planner asks for longer runs there: while fewer than half the runs at the first rate above its
recommendation have a request above ``B/2`` it keeps doubling the requests per run, and when it cannot the
plan is NOT stable, whatever its width (:func:`kvsim.plan.confident.thin_tail_caution`). With runs of 4800
requests the upper end was low in 0.3-0.8% of draws (``interval_coverage_4800.md``).

Candidates measured and not taken (``benchmarks/plan/issue13_audit.md``, item 37): a two-part (hurdle)
bound — Clopper-Pearson on the share of runs with a miss times a t bound on their mean share — is honest
(misses 0-4%) but, with few positive runs, bounds a burst's share by nothing but 1: its upper end near
the knee was about 30-60%, about 1% of ten-run probes passed there, and on a smooth synthetic tail one
request just over ``B/2`` in 32,000 made a rate undecided (a plan recommended 0.53 req/s against a 2.0
req/s capacity).
A bootstrap-t over the runs missed as often as the t (46% at 1.5 req/s, 600 requests).
"""
from __future__ import annotations

from statistics import NormalDist

import numpy as np

from kvsim.stats import t_quantile

NEAR = 0.5          # requests above NEAR * B count in proportion to how close they came to B


def soft_shares(sorted_runs: list[np.ndarray], x: np.ndarray, near: float = NEAR) -> np.ndarray:
    """(runs, thresholds) mean of ``clip((t - near x) / ((1 - near) x), 0, 1)`` over each sorted run's
    samples ``t``: the share above ``x`` with requests in ``(near x, x]`` counted in proportion."""
    lo, width = near * x, np.maximum((1 - near) * x, 1e-300)
    out = np.empty((len(sorted_runs), len(x)))
    for i, s in enumerate(sorted_runs):
        c = np.concatenate([[0.0], np.cumsum(s)])
        a, b = np.searchsorted(s, lo, side="right"), np.searchsorted(s, x, side="right")
        inside = (c[b] - c[a] - (b - a) * lo) / width
        out[i] = ((len(s) - b) + inside) / len(s)
    return np.clip(out, 0.0, 1.0)


def wilson_upper(p: np.ndarray, n: np.ndarray, z: float) -> np.ndarray:
    """Upper end of the Wilson score interval for a proportion ``p`` of ``n`` trials (``n`` may be fractional)."""
    den = 1 + z * z / n
    return np.clip((p + z * z / (2 * n) + z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / den, 0, 1)


def kg_upper(g: np.ndarray, pooled: int, confidence: float) -> np.ndarray:
    """Korn-Graubard upper end (two-sided ``confidence``) of the mean of each column of ``g`` (runs x
    thresholds, values in [0, 1]) whose runs hold ``pooled`` requests in all: the larger of the t end and the
    Wilson end at the effective sample size (module doc)."""
    n = g.shape[0]
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    m = g.mean(axis=0)
    if n < 2:
        return wilson_upper(m, np.full_like(m, float(pooled)), z)
    t = t_quantile(1 - (1 - confidence) / 2, n - 1)
    v = g.var(axis=0, ddof=1) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        n_eff = np.where(v > 0, np.minimum(pooled, m * (1 - m) / v * (z / t) ** 2), pooled)
    n_eff = np.maximum(n_eff, 1e-9)
    return np.maximum(wilson_upper(m, n_eff, z), m + t * np.sqrt(v))


def share_upper(sorted_runs: list[np.ndarray], x: np.ndarray, confidence: float) -> np.ndarray:
    """Upper end (two-sided ``confidence``) of the mean share of requests above each threshold ``x``: the
    Korn-Graubard end of the runs' near-miss shares (module doc)."""
    pooled = int(sum(len(s) for s in sorted_runs))
    return kg_upper(soft_shares(sorted_runs, x), pooled, confidence)
