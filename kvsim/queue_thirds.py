"""The waiting queue over the first and the last third of the arrival window, gathered a piece of the rows at a time.

The overload verdict (:func:`kvsim.report.run_report.verdict`) compares the
time-averaged number of waiting requests over the first and the last third of
the arrival window. :class:`QueueThirds` collects the two duration sums and the
two waiting-weighted sums from consecutive pieces of the iteration rows (frames,
or dicts of numpy columns), so the simulator can gather them in the same pass
over its log as the summary (:meth:`kvsim.sim.SimEngine.run`) instead of a
second pass that rebuilds every row. The arithmetic is pandas' on a frame
(``Series.sum`` is numpy's pairwise sum for float64): the same floats per piece.
"""
from __future__ import annotations

import numpy as np

QUEUE_COLUMNS = ("start_s", "duration_s", "waiting")      # what QueueThirds reads


def rate_driven(workload) -> bool:
    """Whether a run offers a rate to keep up with (Poisson or gamma arrivals, open loop): the runs the overload
    verdict is about."""
    return workload.arrival in ("poisson", "gamma") and workload.max_concurrency is None


class QueueThirds:
    """Sums for the queue averages over the arrival window's first and last third (see the module doc)."""

    def __init__(self, arrival_s):
        arrival_s = np.asarray(arrival_s)
        self.windows: tuple = ()
        if len(arrival_s):
            t0, t1 = float(arrival_s.min()), float(arrival_s.max())
            third = (t1 - t0) / 3
            self.windows = ((t0, t0 + third), (t1 - third, t1 + 1e-12))
        self.span, self.weighted = [0.0, 0.0], [0.0, 0.0]

    def add(self, piece) -> None:
        """Take the next consecutive piece of the rows (``QUEUE_COLUMNS`` of them)."""
        if not self.windows:
            return
        start, dur, waiting = (np.asarray(piece[c]) for c in QUEUE_COLUMNS)
        for k, (a, b) in enumerate(self.windows):
            m = (start >= a) & (start < b)
            d = dur[m]
            self.span[k] += float(d.sum())
            self.weighted[k] += float((waiting[m] * d).sum())

    def averages(self) -> tuple[float, float]:
        """(first third's, last third's) time-averaged waiting requests (0 where a third holds no iteration)."""
        if not self.windows:
            return 0.0, 0.0
        return tuple(self.weighted[k] / self.span[k] if self.span[k] > 0 else 0.0 for k in range(2))
