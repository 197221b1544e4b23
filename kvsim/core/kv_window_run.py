"""KV groups through a decode run: the :mod:`decode tracker <kvsim.core.decode_tracker>` of
:class:`~kvsim.core.kv_window.WindowedPagedKV` (v0) and :class:`~kvsim.core.kv_window_v1.WindowedPagedKVV1`.

A decode append gives a sequence holding ``n`` slots its ``n + 1``-th: first every
window group frees the blocks that the query at ``n`` no longer reads
(``skipped(n + 1) - skip``, usually 0 or 1; on the first decode step after a
prefill possibly many), then every group takes a page if ``n % block_size == 0``.
Both policies' appends do exactly that, so for a run of ``k`` steps the tracker
builds, per step and sequence, the pages taken and freed (numpy, ``k x seqs``)
and reads off what the stepped scheduler would see:

* ``need`` — the step's ``sum(max(0, taken - freed))`` over sequences: the number
  the schedulers' decode check compares with the free pages. Where it exceeds
  them the run stops (stepping may preempt there);
* the free pages after the step: a window free may make room for the waiting
  queue's head. :class:`~kvsim.core.decode_run.DecodeRun` sets ``free_cap``, the
  most free pages at which admission stays blocked; the run stops before the
  first step leaving more (both cuts are conservative: the steps after are stepped).

``new_blocks`` are the net pages each step takes (negative where it frees more).
``advance`` replays only the sequences with a page event, step by step in running
order, so pages come from and go back to the free list in stepping's order.
"""
from __future__ import annotations

import numpy as np

from kvsim.core.decode_tracker import RawSegmentMemory
from kvsim.core.kv import MemorySplit

MAX_STEPS = 4096        # steps planned at once (a longer segment ends the run; the next one goes on)


def _skipped(n: np.ndarray, window: int, bs: int) -> np.ndarray:
    """:func:`kvsim.core.kv_groups.skipped` over an array of slot counts."""
    return np.where(n > window, (n - window) // bs, 0)


class WindowDecodeTracker:
    """Decode-run planning for paged KV over KV groups (see the module doc)."""

    CUT_MEANS_FULL = False      # a segment is also cut where admission could go on (free_cap), not only when full

    def __init__(self, kv, groups: list):
        self.kv = kv
        self.bs = kv.block_size
        self.free_cap = float("inf")     # most free pages at which the next schedule admits nothing
        self.seq_ids: list[int] = []
        finals: list[int] = []
        for g in groups:
            final = g.spec.prompt_len + g.spec.output_len - 1
            for s in g.seqs:
                self.seq_ids.append(s.seq_id)
                finals.append(final)
        self._final = np.array(finals, dtype=np.int64)
        self._plan = None                # (step, n0, skips0, taken, freed per window group) of the last plan

    def _state(self, step: int, k: int):
        """Per-step page events for ``k`` steps from the manager's state now (cached for the same start)."""
        p = self._plan
        if p is not None and p[0] == step and p[1] >= k:
            return p
        kv, bs = self.kv, self.bs
        ntok, skips = kv.num_tokens, kv.skips
        n0 = np.array([ntok[sid] for sid in self.seq_ids], dtype=np.int64)
        k0 = np.array([skips[sid] for sid in self.seq_ids], dtype=np.int64).reshape(len(n0), len(kv.windows))
        n = n0[None, :] + np.arange(k, dtype=np.int64)[:, None]       # slots before step i (k x seqs)
        taken = np.where(n % bs == 0, len(kv.windows), 0)
        freed = np.zeros_like(n)
        for gi, w in enumerate(kv.windows):
            if w > 0:
                before = np.maximum(k0[None, :, gi], _skipped(n, w, bs))
                before[0] = k0[:, gi]               # the first step frees all a prefill left behind the window
                freed += np.maximum(0, _skipped(n + 1, w, bs) - before)
        self._plan = (step, k, n0, k0, taken, freed)
        return self._plan

    def new_blocks(self, step: int, k: int, free: int) -> list[int]:
        k = min(k, MAX_STEPS)
        if not self.seq_ids or k <= 0:
            return [0] * max(k, 0)
        _, _, _, _, taken, freed = self._state(step, k)
        net = taken - freed
        need = np.maximum(net, 0).sum(axis=1)
        nets = net.sum(axis=1)
        after = free - np.cumsum(nets)                                 # free pages after each step
        before = np.concatenate(([free], after[:-1]))
        bad = np.flatnonzero((need > before) | (after > self.free_cap))
        cut = int(bad[0]) if len(bad) else k
        return nets[:cut].tolist()

    def segment_memory(self, step: int, new_blocks: list[int]) -> RawSegmentMemory:
        kv, bs = self.kv, self.bs
        steps = len(new_blocks)
        _, _, n0, k0, _, _ = self._state(step, steps)
        blocks = kv.num_allocated + np.cumsum(np.asarray(new_blocks, dtype=np.int64))
        n = n0[None, :] + np.arange(1, steps + 1, dtype=np.int64)[:, None]   # slots after step i
        used = np.zeros(steps, dtype=np.int64)
        for gi, w in enumerate(kv.windows):
            skip = np.maximum(k0[None, :, gi], _skipped(n, w, bs)) if w > 0 else 0
            used += (n - skip * bs).sum(axis=1)
        cap = -(-n // bs) * bs
        fin = self._final[None, :]
        internal = len(kv.windows) * np.where(cap > fin, cap - np.maximum(fin, n), 0).sum(axis=1)
        alloc = blocks * bs
        mem = MemorySplit(used, internal, alloc - used - internal, np.zeros(steps, dtype=np.int64),
                          kv.capacity_slots - alloc, alloc)
        return RawSegmentMemory(blocks, mem)

    def advance(self, step: int, new_blocks: list[int]) -> None:
        steps = len(new_blocks)
        if not steps:
            return
        _, _, n0, _, taken, freed = self._state(step, steps)
        kv, seq_ids = self.kv, self.seq_ids
        grow = kv._grow
        rows, cols = np.nonzero((taken[:steps] > 0) | (freed[:steps] > 0))    # step-major, running order
        for i, s in zip(rows.tolist(), cols.tolist()):
            grow(seq_ids[s], int(n0[s]) + i + 1, True)
        ntok = kv.num_tokens
        for sid, n in zip(seq_ids, (n0 + steps).tolist()):
            ntok[sid] = n
        self._plan = None

    def drop(self, group, step: int) -> None:
        gone = {s.seq_id for s in group.seqs}
        keep = [i for i, sid in enumerate(self.seq_ids) if sid not in gone]
        self.seq_ids = [self.seq_ids[i] for i in keep]
        self._final = self._final[keep]
        self._plan = None
