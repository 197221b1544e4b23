"""Decode trackers: a KV manager's side of a decode run (:mod:`kvsim.core.decode_run`).

Through a decode run every sequence of the running groups gains one token per
step and groups leave as they finish. A tracker answers, from the manager's
state now, what the next steps do to KV memory, and applies them:

* ``new_blocks(step, k, free)`` — blocks taken at run steps ``step .. step+k-1``
  (an int64 array), cut before the first step whose cumulative need exceeds
  ``free``; empty if the first step needs a copy-on-write;
* ``memory(step, new_blocks, num_seqs)`` — ``blocks_in_use`` and the
  :class:`~kvsim.core.kv.MemorySplit` after each of those steps (arrays), as
  ``blocks_in_use()`` and ``memory_split(running)`` would read after stepping;
* ``advance(step, new_blocks)`` — apply ``len(new_blocks)`` steps (same state
  as that many ``append`` calls per group, in running order);
* ``drop(group, step)`` — ``group`` finishes after ``step`` run steps: forget
  it (called before the scheduler frees it).

A KV manager may offer its own tracker through an optional
``decode_tracker(groups)`` method (``None`` when no run of ``MIN_STEPS`` steps
can start: a copy-on-write is pending, or those steps' blocks are not free):
:class:`~kvsim.core.kv_paged.PagedKV` and
:class:`~kvsim.core.kv_contiguous.ContiguousKV` keep running aggregates
(:mod:`kvsim.core.kv_trackers`). Any other manager gets
:class:`ProtocolTracker`, which asks the protocol's bulk-decode methods
(``decode_run``, ``decode_memory``, ``advance_decode``) once per segment.
"""
from __future__ import annotations

import numpy as np

from kvsim.core.kv import KVManager, MemorySplit

MIN_STEPS = 2       # shortest run worth fast-forwarding


class ProtocolTracker:
    """A tracker for any :class:`KVManager`, from its bulk-decode methods (one call each per segment)."""

    def __init__(self, kv: KVManager, groups: list):
        self.kv = kv
        self.groups = list(groups)

    def new_blocks(self, step: int, k: int, free: int) -> np.ndarray:
        nb = self.kv.decode_run(self.groups, k)
        return np.zeros(0, dtype=np.int64) if nb is None else np.asarray(nb, dtype=np.int64)

    def memory(self, step: int, new_blocks: np.ndarray, num_seqs: int) -> tuple[np.ndarray, MemorySplit]:
        return self.kv.decode_memory(self.groups, new_blocks)

    def advance(self, step: int, new_blocks: np.ndarray) -> None:
        self.kv.advance_decode(self.groups, len(new_blocks))

    def drop(self, group, step: int) -> None:
        self.groups.remove(group)


def make_tracker(kv: KVManager, groups: list):
    """The manager's own tracker if it has one (None: a copy-on-write is pending), else a ProtocolTracker."""
    own = getattr(kv, "decode_tracker", None)
    if own is not None:
        return own(groups)
    return ProtocolTracker(kv, groups)
