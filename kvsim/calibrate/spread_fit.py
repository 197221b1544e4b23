"""The serving fit's older form, a spread fraction fitted per row (``form="row"`` of
:func:`kvsim.calibrate.serving_fit.fit_from_runs`): the least-squares line of one row's steps and the rows'
fractions pooled.

Why not this form by default (the form of profiles written before 2026-12-04, which the cost
model still reads: ``"spread_frac": [λ_n...]``, a least-squares line through ``measured - grid(b, sum)`` on
the spread unit ``grid(b, b·max) - grid(b, sum)``, slope ``λ_n`` drawn toward the rows' precision-weighted mean
by :func:`pooled_fractions`). Within one row's run the spread unit varies by only 0.04-0.6 ms, so slope and
intercept trade off: the H200 Llama-3-8B fit of 2026-12-04 gave λ from 0.13 to 1.11 with ``extra_s`` from
-0.56 to +0.54 ms between neighbouring rows, and priced each row from the other rows (leave one row out,
``benchmarks/engine/serving_refit.py`` on that calibration's kept runs) with mean |error| 3.2% (worst 7.7%)
against 1.9% (worst 4.8%) for this form; both price the rows they were fitted on within 1.5%. Every row's
own fitted fraction is kept for the record (``spread_frac_row``, ``spread_frac_se``).
"""
from __future__ import annotations

import numpy as np

MIN_UNIT_SPREAD_S = 20e-6          # the spread unit must vary this much for a slope (else λ is unknown)
MAX_FRACTION = 1.5
PRIOR_WIDTH = 0.25                 # how far one row's spread fraction may sit from the rows' mean a priori
SE_FLOOR = 0.01


def fit_rows(measured_minus_grid: np.ndarray, unit: np.ndarray) -> tuple[float, float | None, float | None]:
    """``(o, λ, se)``: least squares of ``y = o + λ·unit``, refitted once without the steps beyond 3 median
    deviations, and the slope's standard error; ``λ`` and ``se`` None (``o`` the median of ``y``) when the
    unit barely varies."""
    y, u = np.asarray(measured_minus_grid, float), np.asarray(unit, float)
    keep = np.ones(len(y), bool)
    o, lam, se = float(np.median(y)) if len(y) else 0.0, None, None
    for _ in range(2):
        uk, yk = u[keep], y[keep]
        if len(uk) < 3 or np.ptp(uk) < MIN_UNIT_SPREAD_S:
            return (float(np.median(yk)) if len(yk) else o), None, None
        du = uk - uk.mean()
        slope = float(du @ (yk - yk.mean())) / float(du @ du)
        lam = float(min(MAX_FRACTION, max(0.0, slope)))
        o = float(np.mean(yk - lam * uk))
        se = float(np.sqrt(np.var(yk - o - lam * uk) * len(uk) / (len(uk) - 2) / float(du @ du)))
        r = y - o - lam * u
        dev = np.abs(r - np.median(r))
        keep = dev <= 3 * 1.4826 * (float(np.median(dev)) or 1e-9)
    return o, lam, se


def pooled_fractions(fits: list[tuple[float | None, float | None]]) -> tuple[list[float], float]:
    """Each row's spread fraction drawn toward the precision-weighted mean of all rows' by
    :data:`PRIOR_WIDTH` (a row whose steps barely vary in spread says little on its own; a row without a
    slope takes the mean), and that mean. ``fits``: ``(λ, se)`` per row, None where unknown."""
    known = [(lam, max(se, SE_FLOOR)) for lam, se in fits if lam is not None and se is not None]
    if not known:
        return [0.0] * len(fits), 0.0
    w = np.array([1 / se ** 2 for _, se in known])
    mean = float(np.dot(w, [lam for lam, _ in known]) / w.sum())
    out = []
    for lam, se in fits:
        if lam is None or se is None:
            out.append(mean)
            continue
        a, b = 1 / max(se, SE_FLOOR) ** 2, 1 / PRIOR_WIDTH ** 2
        out.append(float(min(MAX_FRACTION, max(0.0, (a * lam + b * mean) / (a + b)))))
    return out, mean
