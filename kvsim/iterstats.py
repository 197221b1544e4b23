"""What the run summary reads from the iteration records, gathered from the rows a chunk at a time.

:func:`kvsim.metrics.summarize` needs, of the iterations: their number, the
total duration, the duration-weighted sums of a few columns, two maxima and the
decode steps' end times (for ITL). :class:`IterationStats` collects them from
consecutive chunks of rows (an :meth:`kvsim.iterlog.IterationLog.chunks`
stream, or one whole frame), so a run of tens of millions of iterations never
has its rows in memory at once:

* weighted sums with :class:`~kvsim.pairwise.PairwiseSums` — the same bits as
  ``(column * duration).sum()`` over the whole frame, whatever the chunking;
* decode-step ends appended to a :class:`~kvsim.spill.SpillArray` (on disk past
  a few MB) and read back in chunks by :func:`kvsim.itl_stream.itl_percentiles`;
  they come out of a simulation sorted; if they ever did not, they are sorted in
  memory first, as :func:`kvsim.latency.itl_gaps` does.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from kvsim.itl_stream import itl_percentiles
from kvsim.pairwise import PairwiseSums
from kvsim.spill import SpillArray

# duration-weighted sums, in this order ("phys" = used + internal + reserved); "w" is the plain duration sum
WEIGHTED = ("w", "batched_requests", "mem_used", "mem_internal", "mem_reserved", "mem_external", "mem_free",
            "phys", "mem_logical")
ENDS_CHUNK = 1 << 17


class IterationStats:
    """The iteration aggregates of one run (see the module doc); build with :meth:`from_chunks`."""

    def __init__(self, n: int):
        self.n = n
        self._sums = PairwiseSums(n, len(WEIGHTED))
        self.max_batched = 0
        self.peak_blocks = 0
        self._ends = SpillArray("d")
        self._sorted = True
        self._last = -np.inf
        self.wsums: dict[str, float] = {}

    @classmethod
    def from_chunks(cls, n: int, chunks) -> "IterationStats":
        """``chunks``: consecutive frames (or dicts of columns) of the ``n`` iterations, with
        :data:`kvsim.metrics.SUMMARY_INPUTS`."""
        st = cls(n)
        for c in chunks:
            st._add(c)
        st._finish()
        return st

    @classmethod
    def from_frame(cls, its) -> "IterationStats":
        return cls.from_chunks(len(its), [its])

    def _add(self, c) -> None:
        col = {k: np.asarray(c[k]) for k in ("start_s", "duration_s", "decode_seqs", "batched_requests",
                                             "blocks_in_use", "mem_used", "mem_internal", "mem_reserved",
                                             "mem_external", "mem_free", "mem_logical")}
        k = len(col["duration_s"])
        if not k:
            return
        w = col["duration_s"]
        table = np.empty((k, len(WEIGHTED)))
        table[:, 0] = w
        for j, name in enumerate(WEIGHTED[1:], start=1):
            v = col["mem_used"] + col["mem_internal"] + col["mem_reserved"] if name == "phys" else col[name]
            np.multiply(v, w, out=table[:, j])          # (v * w written in place: the same products)
        self._sums.feed(table)
        self.max_batched = max(self.max_batched, int(col["batched_requests"].max()))
        self.peak_blocks = max(self.peak_blocks, int(col["blocks_in_use"].max()))
        ends = (col["start_s"] + w)[col["decode_seqs"] > 0]
        if len(ends):
            if self._sorted and (ends[0] < self._last or (len(ends) > 1 and (np.diff(ends) < 0).any())):
                self._sorted = False
            self._last = max(self._last, float(ends[-1]))
            self._ends.extend_array(ends)

    def _finish(self) -> None:
        self.wsums = dict(zip(WEIGHTED, self._sums.totals().tolist()))
        if not self._sorted:                 # never seen; kept so the numbers match itl_gaps' whatever happens
            ends = np.sort(self._ends.read(0, len(self._ends)))
            self._ends.close()
            self._ends = SpillArray("d", limit_bytes=ends.nbytes + 8)
            self._ends.extend_array(ends)

    def ends(self):
        """The decode-step ends, sorted, in chunks."""
        return self._ends.chunks(ENDS_CHUNK)

    def itl_percentiles(self, reqs, qs) -> list[float]:
        """``weighted_percentiles(*itl_gaps(reqs, its), qs)`` (see :mod:`kvsim.itl_stream`); ``reqs``: the request
        frame, or :func:`kvsim.metrics.finished_columns` of it."""
        if isinstance(reqs, pd.DataFrame):
            from kvsim.metrics import finished_columns
            reqs = finished_columns(reqs)
        return itl_percentiles(reqs["first_token_s"], reqs["finish_s"], reqs["output_len"], self.ends, qs)
