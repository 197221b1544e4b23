"""``np.sum`` of a long float64 column fed in pieces, with the same bits as summing the whole column at once.

numpy sums a contiguous float64 array by pairwise summation: a stretch of more
than 128 values is split at ``h = n // 2`` rounded down to a multiple of 8 and
the two halves' sums are added; a stretch of 8..128 values is summed in eight
interleaved running sums combined as ``((r0 + r1) + (r2 + r3)) + ((r4 + r5) +
(r6 + r7))``, then its remaining ``n % 8`` values added one by one; fewer than
8 values are added one by one to ``-0.0``. The split points depend only on the
total length, so :class:`PairwiseSums` — told the length up front — sums the
leaves as their values stream in (many leaves and many columns per numpy call)
and adds the leaf sums up the same tree at the end. The total is bit-identical
to ``column.sum()`` (tested against numpy for many lengths), whatever the
pieces' sizes, so a summary built from streamed chunks equals one built from the
whole frame.
"""
from __future__ import annotations

import numpy as np

_LEAF = 128


def _tree(n: int):
    """The split tree of a length-``n`` sum: per level, (offsets, lengths, is_leaf), root first."""
    levels = []
    off, ln = np.array([0], dtype=np.int64), np.array([n], dtype=np.int64)
    while len(off):
        leaf = ln <= _LEAF
        levels.append((off, ln, leaf))
        o, l_ = off[~leaf], ln[~leaf]
        h = l_ // 2
        h -= h % 8
        off = np.stack([o, o + h], axis=1).ravel()
        ln = np.stack([h, l_ - h], axis=1).ravel()
    return levels


def _leaf_sums(x: np.ndarray, length: int) -> np.ndarray:
    """Sums of the rows of ``x`` (leaves x length x columns), each as numpy sums ``length`` values."""
    if length < 8:
        res = np.full(x.shape[::2], -0.0)
        for j in range(length):
            res += x[:, j]
        return res
    r = x[:, 0:8].copy()
    stop = length - length % 8
    for i in range(8, stop, 8):
        r += x[:, i:i + 8]
    res = ((r[:, 0] + r[:, 1]) + (r[:, 2] + r[:, 3])) + ((r[:, 4] + r[:, 5]) + (r[:, 6] + r[:, 7]))
    for j in range(stop, length):
        res += x[:, j]
    return res


class PairwiseSums:
    """Column sums of an ``n`` x ``cols`` float64 table fed row-chunk by row-chunk (see the module doc)."""

    def __init__(self, n: int, cols: int):
        self.n, self.cols = n, cols
        self._levels = _tree(n) if n else []
        offs = np.concatenate([o[lf] for o, _, lf in self._levels]) if n else np.zeros(0, np.int64)
        lens = np.concatenate([ln[lf] for _, ln, lf in self._levels]) if n else np.zeros(0, np.int64)
        order = np.argsort(offs, kind="stable")
        self._leaf_off, self._leaf_len = offs[order], lens[order]
        self._sums = np.zeros((len(order), cols))
        self._done = 0                        # leaves summed
        self._pending = np.zeros((0, cols))   # rows fed but not yet in a whole leaf
        self._pos = 0                         # row number of _pending's first row

    def feed(self, rows: np.ndarray) -> None:
        """The next rows (``k`` x ``cols``, or ``k`` values when ``cols`` is 1)."""
        rows = np.asarray(rows, dtype=np.float64).reshape(len(rows), self.cols)
        buf = np.concatenate([self._pending, rows]) if len(self._pending) else rows
        end = self._pos + len(buf)
        lo = self._done
        hi = int(np.searchsorted(self._leaf_off + self._leaf_len, end, side="right"))
        if hi > lo:
            lens = self._leaf_len[lo:hi]
            starts = self._leaf_off[lo:hi] - self._pos
            for length in np.unique(lens).tolist():
                sel = np.nonzero(lens == length)[0]
                idx = starts[sel][:, None] + np.arange(length)[None, :]
                self._sums[lo + sel] = _leaf_sums(buf[idx], length)
            self._done = hi
            used = int(self._leaf_off[hi - 1] + self._leaf_len[hi - 1]) - self._pos
            buf = buf[used:]
            self._pos += used
        self._pending = buf.copy() if len(buf) else np.zeros((0, self.cols))

    def totals(self) -> np.ndarray:
        """The ``cols`` sums (0.0 for an empty table), once all ``n`` rows were fed."""
        if self._pos + len(self._pending) != self.n or self._done != len(self._leaf_off):
            raise ValueError(f"fed {self._pos + len(self._pending)} rows of {self.n}")
        if not self.n:
            return np.zeros(self.cols)
        vals = None
        for off, _, leaf in reversed(self._levels):
            v = np.empty((len(off), self.cols))
            if leaf.any():
                v[leaf] = self._sums[np.searchsorted(self._leaf_off, off[leaf])]
            if (~leaf).any():
                v[~leaf] = vals[0::2] + vals[1::2]
            vals = v
        return 0.0 + vals[0]
