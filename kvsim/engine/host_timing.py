"""Host-clock timing of whole steps, the way the engine's own records time them.

A step is timed from a synchronised device to the end of its work on the host (``fn`` must wait for the
device itself, e.g. by reading the sampled tokens back, or this waits for it), so the launch of the step
and its host-side work are inside the interval — unlike CUDA-event timing of back-to-back calls, which can
hide them. Used by the card's reference step (:mod:`kvsim.engine.reference_step`) and the calibration's
prefill grids (:func:`kvsim.calibrate.measure._bench_between`).
"""
from __future__ import annotations

import statistics
import time
from typing import Callable


def _sync() -> None:
    import torch
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def host_timed(fn: Callable[[], object], reps: int, *, warmup: int = 0,
               between: Callable[[], object] | None = None) -> float:
    """Median seconds of ``reps`` calls of ``fn`` after ``warmup`` untimed ones, each timed call preceded
    by an untimed ``between()`` when given."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if between is not None:
            between()
        _sync()
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return float(statistics.median(times))
