"""Paged KV through a decode run, from running aggregates (the :mod:`decode tracker <kvsim.core.decode_tracker>`
of :class:`~kvsim.core.kv_paged.PagedKV`).

A sequence holding ``n0`` slots at run step 0 takes a block at every step ``j``
with ``(n0 + j) % block_size == 0``, so the blocks taken at step ``j`` are the
number of sequences whose residue ``(-n0) % block_size`` equals ``j %
block_size``: one count per residue replaces one row per sequence. The memory
split after each step follows from the block manager's counters at the
segment start and three aggregates:

* ``logical`` — the block tables' slots without sharing, ``sum ceil(n / bs) * bs``:
  grows by ``bs`` per block taken;
* ``internal`` — slots past a sequence's final length: ``(-final) % bs`` from the
  step at which the sequence takes its last block (a sequence never holds more
  than ``final`` slots), kept as a running sum plus pending per-step additions;
* ``used`` — the manager's ``used_slots``, plus one slot per sequence per step.

Equal, step for step, to :meth:`PagedKV.memory_split` after stepping (the
equality tests in ``tests/test_fastforward.py`` run both ways).
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from itertools import accumulate, chain


from kvsim.core.decode_tracker import MIN_STEPS, SegmentMemory


class PagedDecodeTracker:
    """Decode-run aggregates of a :class:`~kvsim.core.kv_paged.PagedKV` (see the module doc)."""

    CUT_MEANS_FULL = True       # new_blocks cuts a segment only where the next step's blocks are not free

    def __init__(self, kv, groups: list):
        bm = self.bm = kv.bm
        bs = self.bs = kv.block_size
        self.capacity = kv.capacity_slots
        self.seq_ids: list[int] = []
        self._n0: dict[int, int] = {}                    # each sequence's slots at run step 0 (kept runs' check)
        cnt = [0] * bs                                   # sequences taking a block at run steps = c (mod bs)
        members: list[list[int]] = [[] for _ in range(bs)]   # ... and which, in running order
        logical = internal = 0
        ev: dict[int, int] = {}                          # run step -> internal slots added after it
        ntok, tables, ref = bm.num_tokens, bm.tables, bm.ref
        need = 0                                         # blocks of the first MIN_STEPS steps (bs >= MIN_STEPS)
        self._cow = False                                # a partial last block is shared
        seq_ids, n0s = self.seq_ids, self._n0
        near = bs - MIN_STEPS
        for g in groups:
            spec = g.spec
            final = spec.prompt_len + spec.output_len - 1
            v = (-final) % bs
            last = (-(-final // bs) - 1) * bs            # slots before the last block
            for sid in g.seq_ids:
                n0 = n0s[sid] = ntok[sid]
                seq_ids.append(sid)
                r = n0 % bs
                if r == 0:
                    need += 1
                    cnt[0] += 1
                    members[0].append(sid)
                    logical += n0
                else:
                    if ref[tables[sid][-1]] > 1:
                        self._cow = True                 # no run: stop here (start checks)
                        return
                    if r > near:
                        need += 1
                    cnt[bs - r] += 1
                    members[bs - r].append(sid)
                    logical += n0 - r + bs
                if v:
                    je = last - n0
                    if je < 0:
                        internal += v
                    else:
                        ev[je] = ev.get(je, 0) + v
        self._cnt = cnt
        self._members = members
        self.logical = logical
        self.internal = internal
        self._ev = ev
        self._ev_steps = sorted(ev)
        self._ev_next = 0                               # first entry of _ev_steps not yet applied
        self._need = need

    @classmethod
    def start(cls, kv, groups: list) -> PagedDecodeTracker | None:
        """None when a sequence's partial last block is shared (its next append copies on write) or the
        blocks of the run's first ``MIN_STEPS`` steps are not free (the scheduler will preempt)."""
        bm, bs = kv.bm, kv.block_size
        ntok, tables, ref = bm.num_tokens, bm.tables, bm.ref
        for g in reversed(groups):          # forks share a partial block; the newest groups first (just forked)
            ids = g.seq_ids                 # (a quick look at each group's first sequence: the constructor
            if len(ids) > 1:                # checks every sequence)
                sid = ids[0]
                if ntok[sid] % bs and ref[tables[sid][-1]] > 1:
                    return None
        free = kv.free_blocks()
        if bs >= MIN_STEPS and sum(len(g.seqs) for g in groups) > free:    # the first steps' blocks may not be
            near = bs - MIN_STEPS                                           # free: count them before the rest
            need = sum(1 for g in groups for sid in g.seq_ids if not 0 < ntok[sid] % bs <= near)
            if need > free:
                return None
        t = cls(kv, groups)
        if t._cow:
            return None
        if kv.block_size < MIN_STEPS:        # a sequence may take several blocks in those steps
            return t if len(t.new_blocks(0, MIN_STEPS, kv.free_blocks())) == MIN_STEPS else None
        return None if t._need > kv.free_blocks() else t

    def moved(self, groups: list, step: int, d: int) -> bool:
        """Whether each of ``groups``' (tracked) sequences holds the slots ``step + d`` run steps give it."""
        ntok, n0s = self.bm.num_tokens, self._n0
        j = step + d
        for g in groups:
            for sid in g.seq_ids:
                if ntok[sid] - j != n0s[sid]:
                    return False
        return True

    def shares_partial(self, groups: list) -> bool:
        """Whether a sequence of ``groups`` has a shared partial last block (its next append copies on write)."""
        bm, bs = self.bm, self.bs
        ntok, tables, ref = bm.num_tokens, bm.tables, bm.ref
        for g in groups:
            for sid in g.seq_ids:
                if ntok[sid] % bs and ref[tables[sid][-1]] > 1:
                    return True
        return False

    def extend(self, groups: list, step: int) -> None:
        """Add groups (after the tracked ones, in running order) to a run ``step`` steps in, as if they had held
        their slots less ``step`` at run step 0: the same aggregates a tracker started now over all groups has,
        in run steps shifted by ``step``. The caller checked ``shares_partial(groups)`` is False."""
        bs = self.bs
        ntok = self.bm.num_tokens
        cnt, members, ev, n0s, steps = self._cnt, self._members, self._ev, self._n0, self._ev_steps
        if self._ev_next:                                # (applied events: dropped so kept runs stay small)
            del steps[:self._ev_next]
            self._ev_next = 0
        for g in groups:
            spec = g.spec
            final = spec.prompt_len + spec.output_len - 1
            v = (-final) % bs
            last = (-(-final // bs) - 1) * bs
            for sid in g.seq_ids:
                n = ntok[sid]
                n0 = n0s[sid] = n - step
                self.seq_ids.append(sid)
                c = (-n0) % bs
                cnt[c] += 1
                members[c].append(sid)
                self.logical += -(-n // bs) * bs
                if v:
                    je = last - n0
                    if je < step:
                        self.internal += v
                    elif je in ev:
                        ev[je] += v
                    else:
                        ev[je] = v
                        insort(steps, je)

    def new_blocks(self, step: int, k: int, free: int) -> list[int]:
        # (plain lists: a segment's few numbers cost less than numpy's per-call overhead)
        cnt, bs = self._cnt, self.bs
        r = step % bs
        nb = cnt[r:r + k]                                   # _cnt[(step + i) % bs], i < k
        if len(nb) < k:
            nb = ((cnt[r:] + cnt[:r]) * (k // bs + 1))[:k]
        if sum(nb) <= free:
            return nb
        return nb[:bisect_right(list(accumulate(nb)), free)]     # cut before the first step over ``free``

    def segment_memory(self, step: int, new_blocks: list[int]) -> SegmentMemory:
        return SegmentMemory(*self.segment_values(step, new_blocks))

    def segment_values(self, step: int, new_blocks: list[int]) -> tuple:
        """:meth:`segment_memory`'s fields as one tuple, in :class:`SegmentMemory`'s order (the fast-forward
        records them so, :meth:`kvsim.segments.SegmentTable.add_values`, without building the object)."""
        bm, bs = self.bm, self.bs
        k = len(new_blocks)
        steps = self._ev_steps
        i0, i1 = bisect_left(steps, step, self._ev_next), bisect_left(steps, step + k, self._ev_next)
        events = tuple((j - step, self._ev[j]) for j in steps[i0:i1] if self._ev[j]) if i1 > i0 else ()
        alloc = bm.num_allocated * bs                       # (pattern: new_blocks[i] == _cnt[(step + i) % bs])
        return (bm.num_allocated, alloc, bm.used_slots, self.internal, 0, self.capacity - alloc, self.logical, bs,
                tuple(new_blocks[:bs]), events)

    def advance(self, step: int, new_blocks: list[int]) -> None:
        k = len(new_blocks)
        members, bs = self._members, self.bs
        r = step % bs
        if r + k <= bs:                                 # members[(step + i) % bs], i < k: one slice
            rounds = members[r:r + k]
        else:
            rounds = members[r:] + members[:r]          # rounds[i] = members[(step + i) % bs]
            if k > bs:
                rounds *= k // bs + 1
            rounds = rounds[:k]
        takers = list(chain.from_iterable(rounds))      # round-major, running order within a round
        self.bm.append_slots_bulk(self.seq_ids, k, takers)
        self._count(step, k, new_blocks)

    def caught_up(self, step: int, k: int) -> None:
        """Steps ``step`` to ``step + k`` that the tracked sequences took outside the run (stepped: the block
        tables already hold them): the aggregates only."""
        self._count(step, k, self.new_blocks(step, k, 1 << 62))

    def _count(self, step: int, k: int, new_blocks: list[int]) -> None:
        self.logical += self.bs * sum(new_blocks)
        steps, i = self._ev_steps, self._ev_next
        while i < len(steps) and steps[i] < step + k:
            self.internal += self._ev.pop(steps[i])
            i += 1
        self._ev_next = i

    def drop(self, group, step: int) -> None:
        bs = self.bs
        n0s = self._n0                                  # (the group may be gone from the block tables)
        final = group.spec.prompt_len + group.spec.output_len - 1
        v = (-final) % bs
        ids = group.seq_ids
        for sid in ids:
            n0 = n0s.pop(sid)
            c = (-n0) % bs
            self._cnt[c] -= 1
            self._members[c].remove(sid)
            self.logical -= -(-(n0 + step) // bs) * bs
            if v:
                je = (-(-final // bs) - 1) * bs - n0
                if je < step:
                    self.internal -= v
                else:
                    self._ev[je] -= v
        if len(ids) == 1:
            self.seq_ids.remove(ids[0])                 # (one sequence: out by its place)
        else:
            seq_ids, m = self.seq_ids, len(ids)
            i = seq_ids.index(ids[0])
            if seq_ids[i:i + m] == ids:                 # (the group's sequences together, as joined: cut out)
                del seq_ids[i:i + m]
            else:
                gone = set(ids)
                self.seq_ids = [x for x in seq_ids if x not in gone]

