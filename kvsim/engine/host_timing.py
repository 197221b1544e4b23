"""Host-clock timing of whole steps, the way the engine's own records time them.

A step is timed from a synchronised device to the end of its work on the host (``fn`` must wait for the
device itself, e.g. by reading the sampled tokens back, or this waits for it), so the launch of the step
and its host-side work are inside the interval — unlike CUDA-event timing of back-to-back calls, which can
hide them. Used by the card's reference step (:mod:`kvsim.engine.reference_step`) and the calibration's
prefill grids (:func:`kvsim.calibrate.measure._bench_between`).

:func:`behind_timed` times what a call adds at the end of a step instead: made while the device is still busy
(with the step's forward pass, in the engine), the call's launches overlap that work and only what it adds on the
device and after it counts (the calibration's sampling table, :mod:`kvsim.calibrate.sampling`).
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


def behind_timed(fn: Callable[[], object], reps: int, *, busy: Callable[[], object], warmup: int = 0,
                 sync: Callable[[], None] = _sync, clock: Callable[[], float] = time.perf_counter) -> float:
    """Median seconds ``fn`` adds to a device kept busy by ``busy()`` (device work queued just before it, such
    as a forward pass still running when the host samples): ``reps`` pairs, each ``busy(); fn()`` and ``busy()``
    alone timed from a synchronised device to a synchronised device, the medians' difference (at least 0).
    Host work ``fn`` does while the device is busy is hidden, as it is in the engine's steps; what it puts on the
    device, and host work after it has to wait for the device, is not."""
    for _ in range(warmup):
        busy()
        fn()
        sync()
    with_fn, without = [], []
    for _ in range(reps):
        for out, call in ((with_fn, fn), (without, None)):
            sync()
            t0 = clock()
            busy()
            if call is not None:
                call()
            sync()
            out.append(clock() - t0)
    return max(0.0, float(statistics.median(with_fn)) - float(statistics.median(without)))
