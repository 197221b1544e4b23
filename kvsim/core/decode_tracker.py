"""Decode trackers: a KV manager's side of a decode run (:mod:`kvsim.core.decode_run`).

Through a decode run every sequence of the running groups gains one token per
step and groups leave as they finish. A tracker answers, from the manager's
state now, what the next steps do to KV memory, and applies them:

* ``new_blocks(step, k, free)`` — blocks taken at run steps ``step .. step+k-1``
  (a sequence of ints: an int64 array or a list), cut before the first step whose cumulative need exceeds
  ``free``; empty if the first step needs a copy-on-write;
* ``segment_memory(step, steps)`` — ``blocks_in_use`` and the
  :class:`~kvsim.core.kv.MemorySplit` after each of the next ``steps`` steps,
  as ``blocks_in_use()`` and ``memory_split(running)`` would read after
  stepping: a :class:`SegmentMemory` (closed form, a few integers whatever the
  length) or, from managers without a closed form, :class:`RawSegmentMemory`;
* ``advance(step, new_blocks)`` — apply ``len(new_blocks)`` steps (same state
  as that many ``append`` calls per group, in running order);
* ``drop(group, step)`` — ``group`` finishes after ``step`` run steps: forget
  it (called before the scheduler frees it).

A KV manager may offer its own tracker through an optional
``decode_tracker(groups)`` method (``None`` when no run of ``MIN_STEPS`` steps
can start: a copy-on-write is pending, or those steps' blocks are not free):
:class:`~kvsim.core.kv_paged.PagedKV` and
:class:`~kvsim.core.kv_contiguous.ContiguousKV` keep running aggregates
(:mod:`kvsim.core.kv_paged_run`, :class:`ContiguousTracker`); KV groups with
sliding windows plan each segment's page events (:mod:`kvsim.core.kv_window_run`:
a window free can give pages back, so its tracker also carries ``free_cap``,
set by the run, and ``new_blocks`` may be negative). Any other
manager gets :class:`ProtocolTracker`, which asks the protocol's bulk-decode
methods (``decode_run``, ``decode_memory``, ``advance_decode``) once per segment.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvsim.core.kv import KVManager, MemorySplit

MIN_STEPS = 2       # shortest run worth fast-forwarding


@dataclass(slots=True)      # (not frozen: one is built per fast-forwarded segment, and frozen __init__ is slower)
class SegmentMemory:
    """KV memory through a segment in closed form. After segment step ``i`` (``n`` sequences decoding),
    with ``cum`` the blocks taken up to it (``pattern[j % len(pattern)]`` at step ``j``; none if empty)::

        blocks_in_use = blocks + cum              used     = used + n (i + 1)
        alloc         = alloc + block_slots cum   internal = min(internal + events up to i, alloc - used)
        reserved      = alloc - used - internal   external = external
        free          = free - block_slots cum    logical  = logical + block_slots cum

    (the values before the segment's first step; ``alloc`` = used + internal + reserved slots).
    """
    blocks: int
    alloc: int
    used: int
    internal: int
    external: int
    free: int
    logical: int
    block_slots: int = 0
    pattern: tuple = ()
    events: tuple = ()         # (segment step, internal slots added from it on)

    def expand(self, steps: int, num_seqs: int) -> tuple[np.ndarray, MemorySplit]:
        """The ``steps`` rows as arrays (what :mod:`kvsim.segments` computes for many segments at once)."""
        i = np.arange(steps, dtype=np.int64)
        nb = np.array(self.pattern, dtype=np.int64)[i % len(self.pattern)] if self.pattern else i * 0
        cum = np.cumsum(nb)
        ev = np.zeros(steps, dtype=np.int64)
        for j, v in self.events:
            ev[j] += v
        alloc = self.alloc + self.block_slots * cum
        used = self.used + num_seqs * (i + 1)
        internal = np.minimum(self.internal + np.cumsum(ev), alloc - used)
        return self.blocks + cum, MemorySplit(used, internal, alloc - used - internal, i * 0 + self.external,
                                              self.free - self.block_slots * cum,
                                              self.logical + self.block_slots * cum)


@dataclass(frozen=True, slots=True)
class RawSegmentMemory:
    """A segment's memory rows as arrays (managers without a closed form)."""
    blocks: np.ndarray
    mem: MemorySplit

    def expand(self, steps: int, num_seqs: int) -> tuple[np.ndarray, MemorySplit]:
        return self.blocks[:steps], MemorySplit(*(np.asarray(v)[:steps] for v in self.mem.values()))


class ProtocolTracker:
    """A tracker for any :class:`KVManager`, from its bulk-decode methods (one call each per segment)."""

    CUT_MEANS_FULL = False      # (not claimed: the engine keeps trying a run after this tracker's cuts)

    def __init__(self, kv: KVManager, groups: list):
        self.kv = kv
        self.groups = list(groups)

    def new_blocks(self, step: int, k: int, free: int) -> np.ndarray:
        nb = self.kv.decode_run(self.groups, k)
        return np.zeros(0, dtype=np.int64) if nb is None else np.asarray(nb, dtype=np.int64)

    def segment_memory(self, step: int, new_blocks: np.ndarray) -> RawSegmentMemory:
        return RawSegmentMemory(*self.kv.decode_memory(self.groups, new_blocks))

    def advance(self, step: int, new_blocks: np.ndarray) -> None:
        self.kv.advance_decode(self.groups, len(new_blocks))

    def drop(self, group, step: int) -> None:
        self.groups.remove(group)


class ContiguousTracker(ProtocolTracker):
    """Contiguous reservations (:class:`~kvsim.core.kv_contiguous.ContiguousKV`): decoding writes inside the
    chunks, so a segment only moves one slot per sequence and step from reserved to used (closed form).

    The run's internal and reserved slots (``ContiguousKV.group_split`` over its groups) are kept as running
    sums where the manager says they move linearly (``caps_fixed``): a step takes one reserved slot per
    sequence, a finished group takes its own terms out; otherwise each segment sums them afresh. Equal to
    ``memory_split`` after stepping (``tests/test_fastforward.py``'s Orca cases run both ways).

    A run can be taken up again (:meth:`DecodeRun.resume <kvsim.core.decode_run.DecodeRun.resume>`, as the paged
    tracker's): each sequence's written slots at run step 0 are kept, so a group's terms at any run step follow
    from its spec (its chunk is its reservation's, its internal slots the chunk past its final length) without
    reading the manager, where it may have freed the group already."""

    def __init__(self, kv, groups: list):
        super().__init__(kv, groups)
        self._sums = kv.group_split(self.groups) if kv.caps_fixed(self.groups) else None
        self._num_seqs = 0
        self._w0: dict[int, int] = {}                   # each sequence's written slots at run step 0
        self._add(self.groups, 0)

    def _add(self, groups: list, step: int) -> None:
        written, w0 = self.kv.written, self._w0
        for g in groups:
            for sid in g.seq_ids:
                w0[sid] = written[sid] - step
            self._num_seqs += len(g.seq_ids)

    def new_blocks(self, step: int, k: int, free: int) -> np.ndarray:
        return np.zeros(k, dtype=np.int64)

    def shares_partial(self, groups: list) -> bool:
        """Nothing is shared."""
        return False

    def moved(self, groups: list, step: int, d: int) -> bool:
        """Whether each of ``groups``' (tracked) sequences holds the slots ``step + d`` run steps give it."""
        written, w0 = self.kv.written, self._w0
        j = step + d
        for g in groups:
            for sid in g.seq_ids:
                if written.get(sid, -1) - j != w0[sid]:
                    return False
        return True

    def extend(self, groups: list, step: int) -> None:
        """Add groups (after the tracked ones, in running order) to a run ``step`` steps in, their terms read now."""
        self.groups.extend(groups)
        self._add(groups, step)
        if self._sums is not None:
            if self.kv.caps_fixed(groups):
                gi, gr = self.kv.group_split(groups)
                internal, reserved = self._sums
                self._sums = internal + gi, reserved + gr
            else:
                self._sums = None

    def caught_up(self, step: int, k: int) -> None:
        """``k`` steps the tracked sequences took outside the run (stepped: the manager holds them already)."""
        if self._sums is not None:
            internal, reserved = self._sums
            self._sums = internal, reserved - self._num_seqs * k

    def segment_memory(self, step: int, new_blocks: np.ndarray) -> SegmentMemory:
        kv = self.kv
        internal, reserved = self._sums if self._sums is not None else kv.group_split(self.groups)
        used = kv.used_slots
        external, free, allocated = kv.space_split()
        return SegmentMemory(kv.blocks_in_use(), used + internal + reserved, used, internal, external, free,
                             allocated)

    def advance(self, step: int, new_blocks: np.ndarray) -> None:
        k = len(new_blocks)
        self.kv.advance_decode(self.groups, k)
        if self._sums is not None:
            internal, reserved = self._sums
            self._sums = internal, reserved - self._num_seqs * k

    def drop(self, group, step: int) -> None:
        """``group`` leaves the run at run step ``step`` (finishing now, or gone from the manager since)."""
        self.groups.remove(group)
        ids, w0 = group.seq_ids, self._w0
        self._num_seqs -= len(ids)
        if self._sums is not None:      # (caps fixed: each sequence's internal slots its chunk past its final
            kv, spec = self.kv, group.spec          # length, its reserved ones the final length less its written)
            final = spec.prompt_len + spec.output_len - 1
            gi = (kv._chunk(kv.reservation(group)) - final) * len(ids)
            gr = final * len(ids) - sum(w0[sid] for sid in ids) - step * len(ids)
            internal, reserved = self._sums
            self._sums = internal - gi, reserved - gr
        for sid in ids:
            del w0[sid]


def make_tracker(kv: KVManager, groups: list):
    """The manager's own tracker if it has one (None: a copy-on-write is pending), else a ProtocolTracker."""
    own = getattr(kv, "decode_tracker", None)
    if own is not None:
        return own(groups)
    return ProtocolTracker(kv, groups)
