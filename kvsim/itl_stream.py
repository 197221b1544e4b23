"""ITL percentiles from decode-step ends read in chunks: the numbers of :func:`kvsim.latency.itl_gaps`,
without holding a run's millions of gaps at once.

:func:`kvsim.latency.itl_gaps` needs every decode-step end of the run, sorted,
and builds one gap per step with the number of requests that saw it. Here the
ends come from a reusable source of sorted chunks (``ends()`` yields them,
in order; a :class:`~kvsim.spill.SpillArray` keeps them on disk for long runs)
and are read a few times:

1. each finished request's first and last decode end (global ``searchsorted``
   positions, resolved chunk by chunk on the requests' sorted times);
2. the gaps ``ends[t] - ends[t-1]`` and how many requests saw each (a running
   count of the requests' +1/-1 events, sorted by position), added to a
   histogram keyed by the top bits of each value's order-preserving integer
   code;
3. the values in the few histogram bins that hold the wanted ranks, sorted.

Percentiles are exact order statistics of the same multiset of gaps, so they
equal ``weighted_percentiles(*itl_gaps(...))`` bit for bit (tested).
"""
from __future__ import annotations

import math

import numpy as np

_SHIFT = 40                 # histogram bin = top 24 bits of the order-preserving code


def _code(v: np.ndarray) -> np.ndarray:
    bits = np.ascontiguousarray(v, dtype=np.float64).view(np.int64)
    return bits ^ ((bits >> 63) & 0x7FFFFFFFFFFFFFFF)


def _positions(ends, queries: np.ndarray):
    """For each query: the number of ends below it (``searchsorted(ends, q, 'left')``) and the end there
    (the last end when every end is below it), and the number of ends."""
    order = np.argsort(queries, kind="stable")
    q = queries[order]
    pos = np.empty(len(q), dtype=np.int64)
    val = np.empty(len(q), dtype=np.float64)
    p, base, last = 0, 0, float("nan")
    for c in ends():
        if not len(c):
            continue
        stop = int(np.searchsorted(q, c[-1], side="right"))     # queries whose first end >= q is in c
        local = np.searchsorted(c, q[p:stop], side="left")
        pos[p:stop] = base + local
        val[p:stop] = c[local]
        p, base, last = stop, base + len(c), float(c[-1])
    pos[p:] = base
    val[p:] = last
    out_pos, out_val = np.empty_like(pos), np.empty_like(val)
    out_pos[order], out_val[order] = pos, val
    return out_pos, out_val, base


def _gap_counts(ends, plus: np.ndarray, minus: np.ndarray, want: np.ndarray):
    """Yields each chunk's (gaps, counts) of the positions seen by at least one request, and gathers the
    ends at the sorted positions ``want`` (returned as the generator's value)."""
    plus, minus = np.sort(plus), np.sort(minus)
    got = np.empty(len(want), dtype=np.float64)
    base, running, prev = 0, 0, None
    for c in ends():
        n = len(c)
        if not n:
            continue
        d = np.zeros(n + 1, dtype=np.int64)
        for ev, sign in ((plus, 1), (minus, -1)):
            a, b = np.searchsorted(ev, [base, base + n])
            np.add.at(d, ev[a:b] - base, sign)
        cnt = running + np.cumsum(d[:n])
        running = int(cnt[-1])
        gaps = np.diff(c, prepend=c[0] if prev is None else prev)
        a, b = np.searchsorted(want, [base, base + n])
        got[a:b] = c[want[a:b] - base]
        keep = cnt > 0
        yield gaps[keep], cnt[keep]
        base, prev = base + n, c[-1]
    return got


class _Histogram:
    """Counts per bin (top bits of the order-preserving code), added to chunk by chunk."""

    def __init__(self):
        self.bins, self.counts = np.zeros(0, np.int64), np.zeros(0, np.int64)

    DENSE = 1 << 20     # a chunk whose bins span fewer than this is counted densely (no sort)

    def add(self, v: np.ndarray, c: np.ndarray) -> None:
        if not len(v):
            return
        b = _code(v) >> _SHIFT
        lo, hi = int(b.min()), int(b.max())
        if hi - lo < self.DENSE:            # gaps of one run span a few binary orders of magnitude: a dense count
            dense = np.bincount(b - lo, weights=c, minlength=hi - lo + 1)
            at = np.nonzero(dense)[0]
            nb, nc = at + lo, dense[at].astype(np.int64)
        else:
            nb, inv = np.unique(b, return_inverse=True)
            nc = np.bincount(inv, weights=c, minlength=len(nb)).astype(np.int64)
        if not len(self.bins):
            self.bins, self.counts = nb, nc
            return
        bins = np.union1d(self.bins, nb)    # (few distinct bins: small sorts)
        counts = np.zeros(len(bins), dtype=np.int64)
        counts[np.searchsorted(bins, self.bins)] += self.counts
        counts[np.searchsorted(bins, nb)] += nc
        self.bins, self.counts = bins, counts


def itl_percentiles(first_token_s: np.ndarray, finish_s: np.ndarray, output_len: np.ndarray, ends, qs) -> list:
    """``weighted_percentiles(*itl_gaps(...), qs)`` for finished requests given by their first-token and finish
    times and output lengths; ``ends()`` yields the sorted decode-step ends in chunks (see the module doc)."""
    k = output_len.astype(np.int64) - 1
    sel = k > 0
    ft, fin, k = first_token_s[sel], finish_s[sel], k[sel]
    if not len(k):
        return [float("nan") for _ in qs]
    pos, val, n_ends = _positions(ends, np.concatenate([ft + 1e-9, fin + 1e-9]))
    lo, hi, first_pt = pos[:len(k)], pos[len(k):], val[:len(k)]
    m = np.minimum(k - 1, hi - lo)
    has = m > 0
    first = first_pt[has] - ft[has]
    mid = m > 1
    last_at = np.sort(np.unique(lo[has] + m[has] - 1))
    walk = _gap_counts(ends, lo[mid] + 1, lo[mid] + m[mid], last_at)
    hist = _Histogram()
    while True:
        try:
            hist.add(*next(walk))
        except StopIteration as stop:
            got = stop.value
            break
    last_pt = ft.copy()
    if n_ends:
        last_pt[has] = got[np.searchsorted(last_at, lo[has] + m[has] - 1)]
    last = fin - last_pt
    extra = [(first, np.ones(len(first), np.int64)), (last, np.ones(len(last), np.int64))]
    for v, c in extra:
        hist.add(v, c)
    bins, counts = hist.bins, hist.counts
    total = int(counts.sum())
    cum = np.cumsum(counts)
    ranks = sorted({r for q in qs for r in (math.floor((total - 1) * q / 100.0), math.ceil((total - 1) * q / 100.0))})
    at_bin = {r: int(np.searchsorted(cum, r, side="right")) for r in ranks}
    wanted = np.unique(bins[list(at_bin.values())])
    vals, cnts = [], []
    for v, c in _pick(_gap_counts(ends, lo[mid] + 1, lo[mid] + m[mid], np.zeros(0, np.int64)), extra, wanted):
        vals.append(v)
        cnts.append(c)
    v, c = np.concatenate(vals), np.concatenate(cnts)
    order = np.argsort(v, kind="stable")
    v, c = v[order], c[order]
    value = {}
    for r, bi in at_bin.items():
        before = int(cum[bi - 1]) if bi else 0
        inbin = (_code(v) >> _SHIFT) == bins[bi]
        cc = np.cumsum(c[inbin])
        value[r] = v[inbin][np.searchsorted(cc, r - before, side="right")]
    out = []
    for q in qs:
        h = (total - 1) * q / 100.0
        i, j = math.floor(h), math.ceil(h)
        a, b = value[i], value[j]
        out.append(float(a + (b - a) * (h - i)))
    return out


def _pick(walk, extra, wanted):
    for v, c in _chain(walk, extra):
        keep = np.isin(_code(v) >> _SHIFT, wanted)
        yield v[keep], c[keep]


def _chain(walk, extra):
    yield from walk
    yield from extra
