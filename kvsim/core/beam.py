"""A seeded model of which beams survive a beam-search step.

The simulator has no logits, so it needs a model of how beam search picks the
``k`` survivors among the ``k × vocab`` candidates. We model each new beam ``i``
(beams ranked best first) as:

* keeping its own history (parent ``i``) with probability ``keep_prob``;
* otherwise descending from a better-ranked beam: parent ``j`` drawn with
  probability proportional to ``decay**j`` over ranks ``0..k-1`` (good beams
  spawn several children, weak ones die out).

Real beam search behaves like this — a few strong hypotheses branch, weak ones
are dropped — and the coalescing histories it produces are what let paged
copy-on-write share most of the KV. The defaults (``keep_prob=0.5``,
``decay=0.5``) are an assumption, not a fit; the engine replaces this model with
the real parents chosen by its sampler. Parents are returned sorted, so beam
slots stay grouped by ancestry like a sorted top-k would leave them.
"""
from __future__ import annotations

import bisect
import functools

import numpy as np


def choose_parents(rng: np.random.Generator, k: int, keep_prob: float = 0.5,
                   decay: float = 0.5) -> list[int]:
    """Parents (indices into the current ``k`` beams) of the next ``k`` beams, sorted ascending."""
    if k <= 1:
        return [0] * k
    return _parents(rng.random(2 * k).tolist(), k, keep_prob, decay)


class BeamParents:
    """:func:`choose_parents` over one generator, drawing its uniforms ``chunk`` at a time.

    A generator's doubles come in the same order whether drawn 2k at a time or
    in chunks, so the parents are identical to calling ``choose_parents(rng, ...)``
    group after group, step after step, at one generator call per ``chunk``
    draws instead of one per group and step; :meth:`many` computes a whole
    step's groups at once, reading ahead (the next groups' parents of the same
    width come from the same buffered uniforms, so a later step only slices
    them). Nothing else may draw from ``rng`` meanwhile (the scheduler's
    generator serves only this model)."""

    AHEAD = 4096    # groups' parents :meth:`many` computes at once (the buffer's next uniforms, read ahead;
    #                 at most what the buffer holds)

    def __init__(self, rng: np.random.Generator, chunk: int = 1 << 16):
        self.rng, self.chunk = rng, chunk
        self._buf = np.zeros(0)
        self._pos = 0
        self._ahead = None      # ((k, keep_prob, decay), buffer position, parents of the groups from there on (an
        #                         array, a row per group), their codes: many_codes)

    def _take(self, n: int) -> np.ndarray:
        """The stream's next ``n`` uniforms."""
        pos = self._pos
        if pos + n > len(self._buf):
            self._buf = np.concatenate((self._buf[pos:], self.rng.random(max(self.chunk, n))))
            self._ahead = None
            pos = 0
        self._pos = pos + n
        return self._buf[pos:pos + n]

    def __call__(self, k: int, keep_prob: float = 0.5, decay: float = 0.5) -> list[int]:
        if k <= 1:
            return [0] * k
        return _parents(self._take(2 * k).tolist(), k, keep_prob, decay)

    def many(self, ks: list[int], keep_prob: float = 0.5, decay: float = 0.5) -> list[list[int]]:
        """``[self(k) for k in ks]``, vectorised when every group has the same width."""
        k = ks[0]
        if k <= 1 or ks.count(k) != len(ks):
            return [self(x, keep_prob, decay) for x in ks]
        ahead, c, n = self._read_ahead(k, len(ks), keep_prob, decay)
        return np.sort(ahead[2][c:c + n], axis=1).tolist()

    def many_codes(self, ks: list[int], keep_prob: float = 0.5, decay: float = 0.5) -> list[int]:
        """:meth:`many`'s parents (the same draws, the stream left as it leaves it), each group's as one number:
        ``sum(parents[i] * k**i)`` (:func:`parents_of_code` turns it back)."""
        k = ks[0]
        if k <= 1 or ks.count(k) != len(ks):
            return [_code(self(x, keep_prob, decay), x) for x in ks]
        ahead, c, n = self._read_ahead(k, len(ks), keep_prob, decay)
        return ahead[3][c:c + n]

    def _read_ahead(self, k: int, n: int, keep_prob: float, decay: float) -> tuple:
        """The read-ahead parents of ``n`` groups of width ``k > 1`` (``(key, position, parents, codes)``) and where
        this call's groups start in them; the stream moves past their uniforms."""
        # groups' parents are read ahead from the buffered uniforms (each group's are a function of its own
        # 2k uniforms): later calls of the same width slice them while the stream stays aligned to 2k
        w = 2 * k
        if self._pos + w * n > len(self._buf):
            self._take(w * n)                   # refill (the unread uniforms stay first) ...
            self._pos -= w * n                  # ... without reading any
        pos, key, ahead = self._pos, (k, keep_prob, decay), self._ahead
        if ahead is None or ahead[0] != key or pos < ahead[1] or (pos - ahead[1]) % w \
                or (pos - ahead[1]) // w + n > len(ahead[2]):
            m = min((len(self._buf) - pos) // w, max(n, self.AHEAD))
            ahead = self._ahead = (key, pos) + _rows(self._buf[pos:pos + m * w].reshape(m, w), k, keep_prob, decay)
        self._pos = pos + w * n
        return ahead, (pos - ahead[1]) // w, n


SORT_TABLE = 1 << 16     # widths ``k`` with at most this many parent lists (``k**k``: k <= 6) sort theirs by table


def _rows(u: np.ndarray, k: int, keep_prob: float, decay: float) -> tuple[np.ndarray, list[int]]:
    """Parents of one group per row of ``2k`` uniforms (as :func:`_parents`, vectorised; a row each, sorted only
    past :data:`SORT_TABLE`'s widths: :meth:`BeamParents.many` sorts the rows it reads), and each row's code of
    its sorted parents (:meth:`BeamParents.many_codes`). The rows stay an array: a beam run reads only the codes."""
    # as _parents: keep your own history (u[i] < keep_prob), else bisect_right into the cdf
    cdf, ranks, last = _cdf_array(k, decay)
    if k ** k <= SORT_TABLE:
        # bisect_right capped at k - 1 is the count of the cdf's first k - 1 entries at most u, compared column by
        # column (a few columns: cheaper than a search); the code of the row as drawn, unsorted, looked up
        w = u[:, k:]
        pick = (w >= cdf[0]).astype(np.int64)
        for c in cdf[1:last]:
            pick += w >= c
        parents = np.where(u[:, :k] < keep_prob, ranks, pick)
        return parents, _sorted_codes(k)[parents @ (k ** ranks)].tolist()
    pick = cdf.searchsorted(u[:, k:], side="right")
    np.minimum(pick, last, out=pick)
    parents = np.where(u[:, :k] < keep_prob, ranks, pick)
    parents.sort(axis=1)
    if k ** k >= 2 ** 62:       # (codes past int64: Python integers, exact)
        return parents, [_code(r, k) for r in parents.tolist()]
    return parents, (parents @ (k ** ranks)).tolist()


@functools.lru_cache(maxsize=8)
def _sorted_codes(k: int) -> np.ndarray:
    """The code of every parent list of width ``k`` (``sum(parents[i] * k**i)``, each list as drawn) sorted: sorting
    a row's parents is a look-up of its code."""
    pw = k ** np.arange(k)
    rows = np.arange(k ** k)[:, None] // pw % k
    rows.sort(axis=1)
    return rows @ pw


def _code(parents: list[int], k: int) -> int:
    """``sum(parents[i] * k**i)``: one group's parents as one number."""
    code = 0
    for p in reversed(parents):
        code = code * k + p
    return code


def parents_of_code(code: int, k: int) -> list[int]:
    """The parents a code of width ``k`` stands for (:func:`_code` undone)."""
    out = []
    for _ in range(k):
        code, p = divmod(code, k)
        out.append(p)
    return out


def _parents(u: list[float], k: int, keep_prob: float, decay: float) -> list[int]:
    """Parents from ``2k`` uniforms: ``u[i]`` keep?, ``u[k + i]`` which parent (see the module doc)."""
    cdf = _cdf(k, decay)
    last = k - 1
    bisect_right = bisect.bisect_right
    parents = [i if u[i] < keep_prob else min(bisect_right(cdf, u[k + i]), last) for i in range(k)]
    parents.sort()
    return parents


@functools.lru_cache(maxsize=64)
def _cdf_array(k: int, decay: float) -> tuple[np.ndarray, np.ndarray, int]:
    """:func:`_cdf` as an array, the ranks ``0..k-1`` and ``k - 1`` (for :meth:`BeamParents.many`)."""
    return np.array(_cdf(k, decay)), np.arange(k), k - 1


@functools.lru_cache(maxsize=64)
def _cdf(k: int, decay: float) -> tuple[float, ...]:
    """Cumulative parent probabilities over ranks 0..k-1 (proportional to ``decay**rank``)."""
    w = [decay ** j for j in range(k)]
    total = sum(w)
    acc, out = 0.0, []
    for x in w:
        acc += x / total
        out.append(acc)
    return tuple(out)
