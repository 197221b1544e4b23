"""Fast-forwarded decode segments as records of a few numbers each; their iteration rows built on demand.

A segment (:class:`kvsim.core.decode_run.Segment`) is a stretch of decode-only
iterations between two finishes of a fast-forwarded run: ``steps`` iterations
of ``seqs`` sequences in ``groups`` groups, the first attending to ``ctx_sum``
context tokens (longest ``ctx_max``), starting at ``t0`` on the simulated
clock, with the KV memory in closed form (:class:`~kvsim.core.decode_tracker.SegmentMemory`).
:class:`SegmentTable` keeps one such record per segment in flat ``array``
columns, so a run's memory grows with its segments (finishes and arrivals),
not with its iterations, and builds the rows of many segments at once
(:meth:`SegmentTable.columns`) with the same arithmetic as stepping:

* step times: the cost model's ``decode_step_times`` on the same context sums
  (``decode_step_times_rows``, bit-identical to pricing each segment alone),
  start times: the same running sum from ``t0`` as SimPy's clock, one per run;
* memory: :meth:`SegmentMemory.expand`'s formulas, vectorised over segments;
* waiting: the queue at the run's first step plus the arrivals it queued
  (:meth:`SegmentTable.add_waiting`).
"""
from __future__ import annotations

from bisect import bisect_right
from itertools import chain

import numpy as np

from kvsim.core.kv import MEMORY_COLUMNS
from kvsim.spill import SpillArray

_INT = ("iter", "steps", "seqs", "groups", "ctx_sum", "ctx_max", "swapped", "waiting", "run_start",
        "blocks", "alloc", "used", "internal", "external", "free", "logical", "block_slots",
        "pat_at", "pat_len", "ev_at", "ev_len", "raw")
_W = len(_INT)


def _segmented_cumsum(x: np.ndarray, first_row: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Cumulative sums of int64 ``x`` restarting at each segment's first row (exact in integers)."""
    c = np.cumsum(x)
    return c - (c[first_row] - x[first_row])[seg]


def _run_clocks(out: np.ndarray, dts: np.ndarray, r0: np.ndarray, r1: np.ndarray, t0: np.ndarray) -> None:
    """``out[r0:r1] = cumsum([t0, dts[r0], dts[r0+1], ...])[:-1]`` for each run: the running sum SimPy's clock
    takes, in the same order. Runs of similar length are stacked into rows, padded with zeros, and summed
    along the rows (an accumulation along an axis adds in order), so the padding never exceeds the data."""
    lens = r1 - r0
    width = np.frexp((lens - 1).astype(np.float64))[1]        # rows of 2**width >= len columns
    for b in np.unique(width).tolist():
        sel = np.nonzero(width == b)[0]
        cols = np.arange(1 << b, dtype=np.int64)
        rows = r0[sel][:, None] + cols[None, :]                  # the rows' positions, step by step
        inside = cols[None, :] < lens[sel][:, None]
        m = np.zeros((len(sel), 1 << b), dtype=np.float64)
        m[:, 0] = t0[sel]
        m[:, 1:] = np.where(inside[:, 1:], dts[np.minimum(rows[:, :-1], len(dts) - 1)], 0.0)
        np.cumsum(m, axis=1, out=m)
        out[rows[inside]] = m[inside]


class SegmentTable:
    """Decode segments (see the module doc); ``cost`` re-prices their steps when rows are built."""

    PACK = 4096                                    # segments buffered as Python values before packing

    def __init__(self, cost):
        self.cost = cost
        # flat columns, on disk past a few MB each (kvsim.spill): memory stays bounded however long the run
        self._rows = SpillArray("q")               # one row of _INT values per segment, row after row
        self._t0 = SpillArray("d")
        self._t1 = SpillArray("d")                 # the clock after each segment's last step (where given)
        self._pattern = SpillArray("q")            # blocks per step, periodic, all segments one after another
        self._ev_step = SpillArray("q")            # internal-fragmentation events, all segments
        self._ev_val = SpillArray("q")
        # the newest segments as Python values (a tuple appended costs less than an array's extend), packed
        # into the columns above every PACK segments and before any read (:meth:`_pack`)
        self._new_rows: list[tuple] = []
        self._new_t0: list[float] = []
        self._new_t1: list[float] = []
        self._no_t1 = 0                            # segments added without their end clock
        self._new_pattern: list[int] = []
        self._n = 0                                # segments held
        self._npat = 0                             # pattern values held (the next segment's pat_at)
        self._nev = 0                              # events held (the next segment's ev_at)
        self._raw: list = []                       # RawSegmentMemory of segments without a closed form
        self._waits: list[tuple[int, int, int]] = []   # (first iteration, groups added, iteration after the run)
        self._wait_ends: list[int] = []
        self._wait_firsts: list[int] = []
        self.rows = 0                              # iterations held

    def __len__(self) -> int:
        return self._n

    def add(self, first_iter: int, t0: float, steps: int, seqs: int, groups: int, ctx_sum: int, ctx_max: int,
            swapped: int, waiting: int, run_start: bool, mem, t1: float | None = None) -> None:
        """One segment: its first iteration's number, clock, size and memory (closed form or raw), and
        ``t1``, the clock after its last step (segments.csv's records read it: :mod:`kvsim.record_rows`).

        A segment that does not start a run starts where the previous one ended (its ``t0`` is that
        segment's last clock value), so a run's start times are one running sum, as SimPy's clock."""
        if getattr(mem, "pattern", None) is not None:
            self.add_values(first_iter, t0, steps, seqs, groups, ctx_sum, ctx_max, swapped, waiting, run_start,
                            (mem.blocks, mem.alloc, mem.used, mem.internal, mem.external, mem.free, mem.logical,
                             mem.block_slots, mem.pattern, mem.events), t1)
            return
        self._new_rows.append((first_iter, steps, seqs, groups, ctx_sum, ctx_max, swapped, waiting,
                               1 if run_start else 0, 0, 0, 0, 0, 0, 0, 0, 0, self._npat, 0, self._nev, 0,
                               len(self._raw)))
        self._raw.append(mem)
        self._close(t0, t1, steps)

    def add_values(self, first_iter: int, t0: float, steps: int, seqs: int, groups: int, ctx_sum: int, ctx_max: int,
                   swapped: int, waiting: int, run_start: bool, mem: tuple, t1: float | None = None) -> None:
        """:meth:`add` of a segment whose closed-form memory is given as the tuple of
        :class:`~kvsim.core.decode_tracker.SegmentMemory`'s fields in order (``blocks`` .. ``block_slots``,
        ``pattern``, ``events``): a paged run's segments (``PagedDecodeTracker.segment_values``) are recorded
        so without building the object (one per segment: ~2 per request)."""
        pattern, events = mem[8], mem[9]
        self._new_rows.append((first_iter, steps, seqs, groups, ctx_sum, ctx_max, swapped, waiting,
                               1 if run_start else 0) + mem[:8] + (self._npat, len(pattern), self._nev, len(events),
                                                                   -1))
        self._new_pattern.extend(pattern)
        self._npat += len(pattern)
        if events:
            for j, v in events:
                self._ev_step.append(j)
                self._ev_val.append(v)
            self._nev += len(events)
        self._close(t0, t1, steps)

    def _close(self, t0: float, t1: float | None, steps: int) -> None:
        """A buffered segment's clocks (``t1`` None: NaN, counted) and counts; packed every :attr:`PACK` rows."""
        self._new_t0.append(t0)
        if t1 is None:
            self._no_t1 += 1
            t1 = float("nan")
        self._new_t1.append(t1)
        self._n += 1
        self.rows += steps
        if len(self._new_rows) >= self.PACK:
            self._pack()

    def _pack(self) -> None:
        """Move the buffered segments into the packed columns (the same values, in order)."""
        if self._new_rows:
            rows = self._new_rows                  # (fromiter over the flat values: the cheapest way in)
            self._rows.extend_array(np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=len(rows) * _W))
            self._t0.extend_array(np.array(self._new_t0, dtype=np.float64))
            self._t1.extend_array(np.array(self._new_t1, dtype=np.float64))
            self._new_rows, self._new_t0, self._new_t1 = [], [], []
        if self._new_pattern:
            self._pattern.extend_array(np.array(self._new_pattern, dtype=np.int64))
            self._new_pattern = []

    def has_ends(self) -> bool:
        """Whether every segment was added with its end clock ``t1``."""
        return not self._no_t1

    def add_waiting(self, first_iter: int, added: int, end_iter: int) -> None:
        """``added`` more groups wait from iteration ``first_iter`` to the end of its run (``end_iter``)."""
        if added:
            self._waits.append((first_iter, added, end_iter))
            self._wait_ends.append(end_iter)
            self._wait_firsts.append(first_iter)

    def _block(self, lo: int, hi: int) -> np.ndarray:
        """Segments ``lo .. hi-1`` as an int64 array, one row each (a copy)."""
        self._pack()
        return self._rows.read(lo * _W, hi * _W).reshape(hi - lo, _W)

    def _col(self, name: str, lo: int, hi: int) -> np.ndarray:
        return self._block(lo, hi)[:, _INT.index(name)].copy()

    def firsts(self) -> np.ndarray:
        """Each segment's first iteration number."""
        return self.spans()[0]

    def spans(self) -> tuple[np.ndarray, np.ndarray]:
        """Each segment's first iteration number and the number after its last."""
        self._pack()
        step = _W * (1 << 16)
        parts = [c.reshape(-1, _W)[:, :2].copy() for c in self._rows.chunks(step)]   # copies: let each chunk go
        if not parts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        fs = np.concatenate(parts)
        return fs[:, 0].copy(), fs[:, 0] + fs[:, 1]

    @staticmethod
    def _flat(store: SpillArray, at: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, int]:
        """The part of a flat store the segments ``at``/``lens`` point into, and where it starts."""
        if not len(at) or not lens.sum():
            return np.zeros(1, np.int64), 0
        a = int(at[0])
        b = int((at + lens).max())
        return store.read(a, b), a

    def columns(self, lo: int = 0, hi: int | None = None) -> dict[str, np.ndarray]:
        """The rows of segments ``lo .. hi-1`` as iteration columns (``iter`` and every column a decode-only
        iteration has; the zero ones are left to the caller)."""
        hi = len(self) if hi is None else hi
        block = self._block(lo, hi)                  # (packs the buffered segments)
        f = {name: block[:, i] for i, name in enumerate(_INT)}
        k = f["steps"]
        n = int(k.sum())
        seg = np.repeat(np.arange(hi - lo), k)
        first_row = np.cumsum(k) - k
        off = np.arange(n, dtype=np.int64) - first_row[seg]
        seqs = f["seqs"][seg]
        out = {"iter": f["iter"][seg] + off, "decode_seqs": seqs, "batched_requests": f["groups"][seg],
               "swapped": f["swapped"][seg]}
        # step times and the clock
        grow = off.astype(np.float64)
        dts = self.cost.decode_step_times_rows(seqs, f["ctx_sum"][seg] + seqs * grow, f["ctx_max"][seg] + grow)
        starts = np.empty(n, dtype=np.float64)
        t0 = self._t0.read(lo, hi)
        runs = np.nonzero(f["run_start"])[0]
        if not len(runs) or runs[0] != 0:            # a chunk may start inside a run: its t0 goes on from there
            runs = np.concatenate(([0], runs))
        if n:
            _run_clocks(starts, dts, first_row[runs], np.append(first_row[runs[1:]], n), t0[runs])
        out["start_s"], out["duration_s"] = starts, dts + 0.0
        # memory in closed form
        plen = f["pat_len"][seg]
        pat, base = self._flat(self._pattern, f["pat_at"], f["pat_len"])
        nb = np.where(plen > 0, pat[np.clip(f["pat_at"][seg] - base + off % np.maximum(plen, 1), 0, len(pat) - 1)],
                      0)
        cum = _segmented_cumsum(nb, first_row, seg)
        ev = np.zeros(n, dtype=np.int64)
        ev_len = f["ev_len"]
        if ev_len.sum():
            which = np.repeat(np.arange(hi - lo), ev_len)
            steps, base = self._flat(self._ev_step, f["ev_at"], ev_len)
            vals, _ = self._flat(self._ev_val, f["ev_at"], ev_len)
            at = np.repeat(f["ev_at"] - base, ev_len) + (np.arange(len(which)) - np.repeat(np.cumsum(ev_len) - ev_len,
                                                                                           ev_len))
            np.add.at(ev, first_row[which] + steps[at], vals[at])
        slots = f["block_slots"][seg] * cum
        alloc = f["alloc"][seg] + slots
        used = f["used"][seg] + seqs * (off + 1)
        internal = np.minimum(f["internal"][seg] + _segmented_cumsum(ev, first_row, seg), alloc - used)
        out.update(blocks_in_use=f["blocks"][seg] + cum, mem_used=used, mem_internal=internal,
                   mem_reserved=alloc - used - internal, mem_external=f["external"][seg],
                   mem_free=f["free"][seg] - slots, mem_logical=f["logical"][seg] + slots)
        for s in np.nonzero(f["raw"] >= 0)[0].tolist():
            r0 = first_row[s]
            blocks, mem = self._raw[f["raw"][s]].expand(int(k[s]), int(f["seqs"][s]))
            out["blocks_in_use"][r0:r0 + k[s]] = blocks
            for c, v in zip(MEMORY_COLUMNS, mem.values()):
                out[c][r0:r0 + k[s]] = v
        # the waiting queue: the run's first step's, plus the arrivals queued during the run
        waiting = f["waiting"][seg].copy()
        if self._waits and n:
            iters = out["iter"]
            w0 = bisect_right(self._wait_ends, int(iters[0]))          # the first still queued at this chunk
            w1 = bisect_right(self._wait_firsts, int(iters[-1]), w0)   # ... and the last queued by its end
            if w1 > w0:
                w = np.array(self._waits[w0:w1], dtype=np.int64).reshape(-1, 3)
                edges = np.zeros(n + 1, dtype=np.int64)               # each queued from its first row on, until
                np.add.at(edges, np.searchsorted(iters, w[:, 0]), w[:, 1])       # its run's end
                np.add.at(edges, np.searchsorted(iters, w[:, 2]), -w[:, 1])
                waiting += np.cumsum(edges[:n])
        out["waiting"] = waiting
        return out
