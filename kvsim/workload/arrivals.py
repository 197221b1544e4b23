"""Arrival processes: Poisson, Gamma (bursty or smooth), burst.

Conventions: times are seconds, returned as a sorted float64 array. The first
arrival is at the first inter-arrival time (so all times are > 0), i.e. the
process starts at t = 0 with nobody waiting. With ``n`` the array has exactly
``n`` entries; with ``duration_s`` only arrivals at ``t <= duration_s`` are
kept; with both, whichever ends first. Draws are made in chunks, so the exact
values for a seed depend on the arguments, but they are deterministic for a
given (seed, arguments).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from kvsim.errors import KvsimError


def _generate(
    draw: Callable[[int], np.ndarray], rate: float, n: int | None, duration: float | None
) -> np.ndarray:
    """Cumulative sums of inter-arrival gaps from ``draw(k)`` until ``n`` or ``duration``."""
    if n is None and duration is None:
        raise KvsimError("workload", "need num_requests and/or duration_s to end the arrival process")
    if n is not None and n < 0:
        raise KvsimError("workload.num_requests", f"{n} is negative; allowed: >= 0")
    if duration is not None and duration < 0:
        raise KvsimError("workload.duration_s", f"{duration} is negative; allowed: >= 0")
    if n is not None:
        target = n
        if duration is not None:
            target = min(n, int(rate * duration + 6 * math.sqrt(rate * duration + 1) + 16))
    else:
        target = int(rate * duration + 6 * math.sqrt(rate * duration + 1) + 16)
    times = np.cumsum(draw(target)) if target > 0 else np.zeros(0)
    # With a duration, keep drawing until we are past it (rare: the first chunk nearly always is).
    while duration is not None and (n is None or len(times) < n) and (len(times) == 0 or times[-1] <= duration):
        extra = max(16, len(times) // 2)
        start = times[-1] if len(times) else 0.0
        times = np.concatenate([times, start + np.cumsum(draw(extra))])
    if n is not None:
        times = times[:n]
    if duration is not None:
        times = times[times <= duration]
    return times.astype(np.float64)


def poisson_arrivals(
    rng: np.random.Generator, rate: float, n: int | None = None, duration: float | None = None
) -> np.ndarray:
    """Poisson process with ``rate`` requests/s: exponential gaps with mean ``1/rate``."""
    if not rate > 0:
        raise KvsimError("workload.rate_req_s", f"{rate} is not allowed; allowed: > 0")
    return _generate(lambda k: rng.exponential(1.0 / rate, size=k), rate, n, duration)


def gamma_arrivals(
    rng: np.random.Generator, rate: float, cv: float, n: int | None = None, duration: float | None = None
) -> np.ndarray:
    """Gamma renewal process: gaps ~ Gamma(shape=1/cv², scale=cv²/rate).

    Mean gap is ``1/rate`` and the gaps' coefficient of variation is ``cv``:
    ``cv = 1`` is Poisson, ``cv > 1`` bursty, ``cv < 1`` smoother than Poisson.
    """
    if not rate > 0:
        raise KvsimError("workload.rate_req_s", f"{rate} is not allowed; allowed: > 0")
    if not cv > 0:
        raise KvsimError("workload.cv", f"{cv} is not allowed; allowed: > 0")
    shape = 1.0 / (cv * cv)
    scale = 1.0 / (rate * shape)
    return _generate(lambda k: rng.gamma(shape, scale, size=k), rate, n, duration)


def burst_arrivals(n: int) -> np.ndarray:
    """All ``n`` requests arrive at t = 0 (offline / batch workload)."""
    return np.zeros(n, dtype=np.float64)
