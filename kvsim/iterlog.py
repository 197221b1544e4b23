"""The iteration log: stepped iterations as packed rows, fast-forwarded decode segments as a few numbers each.

Stepped iterations arrive as rows (tuples in ``ITERATION_COLUMNS`` order) and
are packed into numpy blocks as they accumulate. Fast-forwarded decode runs
are kept segment by segment in a :class:`~kvsim.segments.SegmentTable`
(memory that grows with finishes and arrivals, not with iterations). Rows are
built only when asked for: the whole frame (:meth:`IterationLog.frame`), some
columns of it, or consecutive chunks of it (:meth:`IterationLog.chunks`, for
writing a long run without holding all of it).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from kvsim.segments import SegmentTable
from kvsim.spill import SpillArray

ITERATION_COLUMNS = (
    "iter", "start_s", "duration_s", "swap_s",
    "prefill_groups", "prefill_tokens", "decode_seqs", "batched_requests", "batched_tokens",
    "running", "waiting", "swapped", "preempted", "swap_out_blocks", "swap_in_blocks", "cow_copies",
    "blocks_in_use", "mem_used", "mem_internal", "mem_reserved", "mem_external", "mem_free", "mem_logical",
)
_FLOAT = tuple(c.endswith("_s") for c in ITERATION_COLUMNS)
_INT_IDX = [i for i, f in enumerate(_FLOAT) if not f]
_FLOAT_IDX = [i for i, f in enumerate(_FLOAT) if f]
_SAME = {"batched_tokens": "decode_seqs", "running": "batched_requests"}   # equal in a decode-only iteration


class IterationLog:
    """Iteration records of one run (see the module doc). ``cost`` prices fast-forwarded segments' rows."""

    PACK = 4096
    CHUNK_ROWS = 1 << 16

    def __init__(self, cost=None):
        self._rows: list[tuple] = []
        # packed stepped rows, row after row (on disk past a few MB): int columns, float columns, iteration numbers
        self._ints, self._floats, self._iters = SpillArray("q"), SpillArray("d"), SpillArray("q")
        self.segments = SegmentTable(cost)
        self._blocks: list[dict] = []                            # rows given as whole columns (extend)
        self._n = 0

    def append_step(self, start_s: float, duration_s: float, swap_s: float, state: tuple) -> None:
        """Append the next iteration: its timing and its ``step_state``."""
        self._rows.append((self._n, start_s, duration_s, swap_s) + state)
        self._n += 1
        if len(self._rows) >= self.PACK:
            self._pack()

    def append_rows(self, rows: list[tuple]) -> None:
        """Append the next iterations as whole rows (``ITERATION_COLUMNS`` order, each numbered as it comes:
        ``len(self)`` on): a beam run's steps, built in one tuple each instead of timing and state joined per step."""
        self._rows += rows
        self._n += len(rows)
        if len(self._rows) >= self.PACK:
            self._pack()

    def _pack(self) -> None:
        if self._rows:
            cols = list(zip(*self._rows))
            ints = np.array([cols[i] for i in _INT_IDX], dtype=np.int64)
            self._ints.extend_array(ints.T)
            self._floats.extend_array(np.array([cols[i] for i in _FLOAT_IDX], dtype=np.float64).T)
            self._iters.extend_array(ints[0])
            self._rows = []

    def add_segment(self, t0: float, steps: int, seqs: int, groups: int, ctx_sum: int, ctx_max: int,
                    swapped: int, waiting: int, run_start: bool, mem, t1: float | None = None) -> int:
        """Append a fast-forwarded segment's ``steps`` iterations (``t1``: the clock after the last); returns
        the first one's number."""
        first = self._n
        self.segments.add(first, t0, steps, seqs, groups, ctx_sum, ctx_max, swapped, waiting, run_start, mem, t1)
        self._n += steps
        return first

    def add_segment_values(self, t0: float, steps: int, seqs: int, groups: int, ctx_sum: int, ctx_max: int,
                           swapped: int, waiting: int, run_start: bool, mem: tuple, t1: float | None = None) -> None:
        """:meth:`add_segment` with the closed-form memory as a tuple
        (:meth:`kvsim.segments.SegmentTable.add_values`)."""
        self.segments.add_values(self._n, t0, steps, seqs, groups, ctx_sum, ctx_max, swapped, waiting, run_start,
                                 mem, t1)
        self._n += steps

    def extend(self, block: dict[str, np.ndarray]) -> None:
        """Append many rows at once; every column must be given."""
        k = len(block["iter"])
        self._blocks.append({**{c: np.asarray(block[c]) for c in ITERATION_COLUMNS},
                             "iter": np.arange(self._n, self._n + k)})
        self._n += k

    def __len__(self) -> int:
        return self._n

    def _fill(self, data: dict, lo: int, hi: int, seg_lo: int, seg_hi: int) -> None:
        """Write iterations ``lo .. hi-1`` into ``data`` (arrays indexed from ``lo``)."""
        a, b = self._stepped_range(lo, hi)
        if b > a:
            ni, nf = len(_INT_IDX), len(_FLOAT_IDX)
            ints = self._ints.read(a * ni, b * ni).reshape(b - a, ni)
            floats = self._floats.read(a * nf, b * nf).reshape(b - a, nf)
            at = ints[:, 0] - lo
            for row, i in enumerate(_INT_IDX):
                c = ITERATION_COLUMNS[i]
                if c in data:
                    data[c][at] = ints[:, row]
            for row, i in enumerate(_FLOAT_IDX):
                c = ITERATION_COLUMNS[i]
                if c in data:
                    data[c][at] = floats[:, row]
        for block in self._blocks:
            it = block["iter"]
            sel = (it >= lo) & (it < hi)
            for c in data:
                data[c][it[sel] - lo] = block[c][sel]
        if seg_hi > seg_lo:
            cols = self.segments.columns(seg_lo, seg_hi)
            at = cols["iter"] - lo
            for c in data:
                v = cols.get(c, cols.get(_SAME.get(c, ""), 0))
                data[c][at] = v

    def _stepped_range(self, lo: int, hi: int) -> tuple[int, int]:
        """The packed stepped rows of iterations ``lo .. hi-1`` (row numbers; iteration numbers increase)."""
        its, n = self._iters, len(self._iters)

        def first_at_least(x: int) -> int:
            a, b = 0, n
            while a < b:                     # a binary search reading one value at a time (most are in memory)
                mid = (a + b) // 2
                if int(its.read(mid, mid + 1)[0]) < x:
                    a = mid + 1
                else:
                    b = mid
            return a
        return first_at_least(lo), first_at_least(hi)

    def _columns(self, columns, lo: int, hi: int, seg_lo: int, seg_hi: int) -> dict[str, np.ndarray]:
        data = {c: np.zeros(hi - lo, dtype=np.float64 if f else np.int64)
                for c, f in zip(ITERATION_COLUMNS, _FLOAT) if c in columns}
        self._fill(data, lo, hi, seg_lo, seg_hi)
        return data

    def _frame(self, columns, lo: int, hi: int, seg_lo: int, seg_hi: int) -> pd.DataFrame:
        return pd.DataFrame(self._columns(columns, lo, hi, seg_lo, seg_hi), copy=False)

    def frame(self, columns=ITERATION_COLUMNS) -> pd.DataFrame:
        """The iterations as a DataFrame (``columns``: a subset, in ``ITERATION_COLUMNS`` order)."""
        self._pack()
        if not self._n:
            return pd.DataFrame({c: np.array([], dtype=np.int64 if c != "start_s" else float)
                                 for c in ITERATION_COLUMNS if c in columns})
        data = {c: np.empty(self._n, dtype=np.float64 if f else np.int64)
                for c, f in zip(ITERATION_COLUMNS, _FLOAT) if c in columns}
        for lo, hi, s_lo, s_hi in self._ranges(self.CHUNK_ROWS):     # a chunk at a time: bounded temporaries
            part = {c: v[lo:hi] for c, v in data.items()}
            for v in part.values():
                v[:] = 0
            self._fill(part, lo, hi, s_lo, s_hi)
        return pd.DataFrame(data, copy=False)

    def _ranges(self, rows: int):
        """Consecutive iteration ranges of ``rows`` iterations, or up to the end of the segment holding the
        ``rows``-th (never splitting a segment), and their segments: at most ``rows`` plus one segment each."""
        firsts, ends = self.segments.spans()
        lo, s = 0, 0
        while lo < self._n:
            hi = min(lo + rows, self._n)
            k = int(np.searchsorted(firsts, hi, side="right")) - 1      # the last segment starting at or before hi
            if k >= 0 and firsts[k] < hi < ends[k]:
                hi = int(ends[k])
            s_hi = int(np.searchsorted(firsts, hi, side="left"))
            yield lo, hi, s, s_hi
            lo, s = hi, s_hi

    def chunks(self, rows: int | None = None, columns=ITERATION_COLUMNS):
        """The frame (``columns`` of it) in consecutive pieces of about ``rows`` iterations (whole segments)."""
        self._pack()
        for lo, hi, s_lo, s_hi in self._ranges(rows or self.CHUNK_ROWS):
            yield self._frame(columns, lo, hi, s_lo, s_hi)

    def column_chunks(self, rows: int | None = None, columns=ITERATION_COLUMNS):
        """:meth:`chunks` as dicts of numpy columns (the same arrays, without building each DataFrame)."""
        self._pack()
        for lo, hi, s_lo, s_hi in self._ranges(rows or self.CHUNK_ROWS):
            yield self._columns(columns, lo, hi, s_lo, s_hi)

    def spans_chunks(self, rows: int | None = None):
        """Like :meth:`chunks` (all columns), each with its first iteration and its segments' spans (first
        iteration, iteration after the last): ``(frame, lo, firsts, ends)``."""
        self._pack()
        firsts, ends = self.segments.spans()
        for lo, hi, s_lo, s_hi in self._ranges(rows or self.CHUNK_ROWS):
            yield self._frame(ITERATION_COLUMNS, lo, hi, s_lo, s_hi), lo, firsts[s_lo:s_hi], ends[s_lo:s_hi]
