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
    u = rng.random(2 * k).tolist()            # one draw per beam: keep?, then which parent
    cdf = _cdf(k, decay)
    parents = []
    for i in range(k):
        if u[i] < keep_prob:
            parents.append(i)
        else:
            parents.append(min(bisect.bisect_right(cdf, u[k + i]), k - 1))
    parents.sort()
    return parents


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
