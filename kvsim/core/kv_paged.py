"""Group-level KV operations over the paged block manager (the vLLM policy).

Implements :class:`kvsim.core.kv.KVManager` (see there for each method's
contract) by mapping group calls onto :class:`PagedBlockManager` sequence
primitives. All sequences of a group share the prompt's blocks; sharing after
that emerges from copy-on-write and beam re-parenting.
"""
from __future__ import annotations

import numpy as np

from kvsim.core.block_manager import ALLOC_OK, AllocStatus, PagedBlockManager
from kvsim.core.kv import MemorySplit
from kvsim.core.kv_paged_run import PagedDecodeTracker
from kvsim.core.sequence import SequenceGroup
from kvsim.core.tokens import prompt_block_hashes


class PagedKV:
    """Paged KV (vLLM): blocks taken as sequences grow, shared prompt blocks, copy-on-write, block swaps."""

    append_blocks_per_seq = 1
    """Most blocks one ``append`` takes per sequence (a new block or a copy-on-write, never both): with that
    many free per decoding sequence, the scheduler knows every append is covered without asking each group."""

    def __init__(self, num_gpu_blocks: int, block_size: int, num_cpu_blocks: int = 0,
                 watermark: float = 0.01, enable_prefix_caching: bool = False):
        self.bm = PagedBlockManager(num_gpu_blocks, block_size, num_cpu_blocks, watermark,
                                    enable_prefix_caching)
        self.block_size = block_size
        self.num_gpu_blocks = num_gpu_blocks
        self.num_cpu_blocks = num_cpu_blocks
        self.enable_prefix_caching = enable_prefix_caching
        self.capacity_slots = num_gpu_blocks * block_size
        self._hashes: dict[int, list[int]] = {}
        self._swap_in_need: dict[int, int] = {}       # swapped group -> blocks can_swap_in needs (while swapped)

    # -------------------------------------------------------------- admission
    def peak_blocks(self, group: SequenceGroup) -> int:
        """Most blocks the group can ever hold alone: shared full prompt blocks plus each sequence's own."""
        bs = self.block_size
        p, final = group.spec.prompt_len, group.spec.prompt_len + group.spec.output_len - 1
        shared = p // bs
        return shared + len(group.seqs) * (-(-final // bs) - shared)

    def static_peak_blocks(self, group: SequenceGroup) -> int:
        """Blocks only grow as sequences decode, so a static batch sets aside the group's peak."""
        return self.peak_blocks(group)

    def never_fits(self, group: SequenceGroup) -> str | None:
        """The group's peak blocks exceed the GPU's blocks above the watermark."""
        usable = self.bm.num_gpu_blocks - self.bm.watermark_blocks
        need = self.peak_blocks(group)
        if need > usable:
            return (f"needs up to {need} KV blocks of {self.block_size} tokens but the GPU holds "
                    f"{usable} usable blocks")
        return None

    def _admit_blocks(self, group: SequenceGroup) -> int:
        if group.generated == 0:
            return self.bm.blocks_for(group.spec.prompt_len)
        # recompute: full prompt blocks shared once, then each sequence's own blocks from
        # the (copied-on-write) partial prompt block to its current length
        p = group.spec.prompt_len
        shared = p // self.block_size
        return shared + sum(self.bm.blocks_for(p + s.generated) - shared for s in group.seqs)

    def can_admit(self, group: SequenceGroup) -> AllocStatus:
        """Blocks for the prompt (plus generated tokens when recomputing) under the watermark."""
        return self.bm.can_allocate(self._admit_blocks(group))

    def _prompt_hashes(self, group: SequenceGroup) -> list[int] | None:
        if not self.bm.enable_prefix_caching:
            return None
        h = self._hashes.get(group.group_id)
        if h is None:
            h = prompt_block_hashes(group.spec, self.block_size)
            self._hashes[group.group_id] = h
        return h

    def admit(self, group: SequenceGroup) -> int:
        """Allocate the group's (re)prefill; return prompt tokens served by the prefix cache.

        The first sequence allocates the prompt; the others share its blocks.
        """
        seqs = group.seqs
        first = seqs[0].seq_id
        cached = self.bm.allocate(first, group.spec.prompt_len, self._prompt_hashes(group))
        for s in seqs[1:]:
            self.bm.share(first, s.seq_id)
        if group.generated:
            # recompute after preemption: each sequence re-creates its own tokens' slots
            # (written by the recompute, so copy-on-write pairs here need no copy)
            # (one slot, which copies a shared partial block; then the rest at once, in the same order)
            for s in seqs:
                if s.generated:
                    self.bm.append_slot(s.seq_id)
                    self.bm.append_slots_bulk([s.seq_id], s.generated - 1)
        return cached

    # ------------------------------------------------------------------ decode
    def append_need(self, group: SequenceGroup) -> int:
        """New blocks: one per sequence whose last block is full, or shared (copy-on-write)."""
        return self.bm.blocks_to_append(group.seq_ids)

    def free_blocks(self) -> int:
        """Free GPU blocks, evictable prefix-cache blocks included (``bm.num_free_blocks``, read without the
        property's call: asked a few times per decode run)."""
        bm = self.bm
        return len(bm._free) + len(bm._evictable)

    def append(self, group: SequenceGroup) -> list[tuple[int, int]]:
        """One slot per sequence; a shared last block is copied first (the returned pairs)."""
        return self.bm.append_slots(group.seq_ids)

    def append_needs(self, groups: list[SequenceGroup]) -> list[int]:
        """``[append_need(g) for g in groups]``, one-sequence groups counted inline."""
        if type(self).append_need is not PagedKV.append_need:       # a subclass's own need
            return [self.append_need(g) for g in groups]
        bm = self.bm
        bs, ntok, tables, ref = bm.block_size, bm.num_tokens, bm.tables, bm.ref
        out = []
        for g in groups:
            ids = g.seq_ids
            if len(ids) == 1:
                s = ids[0]
                out.append(1 if ntok[s] % bs == 0 or ref[tables[s][-1]] > 1 else 0)
            else:
                out.append(bm.blocks_to_append(ids))
        return out

    def append_all(self, groups: list[SequenceGroup]) -> list[tuple[int, int]]:
        """``append`` of each group in order, as one walk over their sequences (the same blocks, pairs, state)."""
        if type(self).append is not PagedKV.append:                 # a subclass's own append
            return [p for g in groups for p in self.append(g)]
        if len(groups) == 1:
            return self.bm.append_slots(groups[0].seq_ids)
        return self.bm.append_slots([s for g in groups for s in g.seq_ids])

    def reparent(self, group: SequenceGroup, parents: list[int]) -> None:
        """Sequences take their parents' tables by sharing blocks (copy-on-write at the next append)."""
        self.bm.reparent(group.seq_ids, parents)

    def reparent_groups(self, groups: list[SequenceGroup], parents_of: list[list[int]]) -> None:
        """``reparent`` of each group with its parents, in order, as one walk (the same blocks and state)."""
        if type(self).reparent is not PagedKV.reparent:             # a subclass's own reparent
            for g, parents in zip(groups, parents_of):
                self.reparent(g, parents)
            return
        self.bm.reparent_groups([g.seq_ids for g in groups], parents_of)

    def free_group(self, group: SequenceGroup) -> None:
        """Drop the sequences' GPU and CPU tables; blocks whose last reference goes are freed."""
        self._swap_in_need.pop(group.group_id, None)
        ids = group.seq_ids
        if len(ids) == 1:
            self.bm.free(ids[0])
        else:
            self.bm.free_group(ids)

    def forget(self, group: SequenceGroup) -> None:
        """Drop the group's cached prompt block hashes."""
        self._hashes.pop(group.group_id, None)

    def group_blocks(self, group: SequenceGroup) -> int:
        """Distinct GPU blocks in the group's tables."""
        if len(group.seqs) == 1:
            return len(self.bm.tables.get(group.seq_ids[0], ()))
        seen = set()
        for s in group.seqs:
            seen.update(self.bm.tables.get(s.seq_id, ()))
        return len(seen)

    def shared_blocks(self, group: SequenceGroup) -> int:
        """Reads of blocks shared by the group's sequences beyond each block's first (see :class:`KVManager`)."""
        if len(group.seqs) == 1:
            return 0
        tables = self.bm.tables
        return sum(len(tables.get(s.seq_id, ())) for s in group.seqs) - self.group_blocks(group)

    # -------------------------------------------------------------------- swap
    def can_swap_out(self, group: SequenceGroup) -> bool:
        """A free CPU block for each distinct block of the group."""
        return self.bm.can_swap_out(group.seq_ids)

    def swap_out(self, group: SequenceGroup) -> list[tuple[int, int]]:
        """Each distinct block moves once (sharing is kept on the CPU side)."""
        self._swap_in_need.pop(group.group_id, None)
        return self.bm.swap_out(group.seq_ids)

    def can_swap_in(self, group: SequenceGroup) -> bool:
        """Blocks to swap in plus the next append's blocks fit under the watermark. (The count is kept from
        the first ask until the group comes back: nothing changes a swapped group's CPU tables.)"""
        need = self._swap_in_need.get(group.group_id)
        if need is None:
            ids = group.seq_ids
            need = self.bm.blocks_to_swap_in(ids) + self.bm.blocks_to_append(ids, swapped=True)
            self._swap_in_need[group.group_id] = need
        return self.bm.can_allocate(need) == ALLOC_OK

    def swap_in(self, group: SequenceGroup) -> list[tuple[int, int]]:
        """Each distinct CPU block comes back to a fresh GPU block."""
        self._swap_in_need.pop(group.group_id, None)
        return self.bm.swap_in(group.seq_ids)

    # ------------------------------------------------------------------ memory
    def memory_split(self, running: list[SequenceGroup]) -> MemorySplit:
        """The split in token slots.

        used: slots holding KV; internal fragmentation: allocated slots past a
        sequence's final length (only in its last block); reserved: allocated
        slots that will still be written; external: always 0 for paging; free:
        unallocated (evictable prefix-cache blocks count as free); logical: the
        slots the block tables would occupy without any sharing.
        """
        return self.split_of(*self.split_terms(running))

    def split_of(self, internal: int, logical: int) -> MemorySplit:
        """:meth:`memory_split` of groups whose :meth:`split_terms` sum to ``internal`` and ``logical``, under the
        block manager's counters now (a kept decode run keeps its groups' sums: the steps taken from it read their
        split here, :mod:`kvsim.core.decode_preempt`, :mod:`kvsim.core.decode_mixed`, :mod:`kvsim.core.run_split`)."""
        bm = self.bm
        alloc = bm.num_allocated * self.block_size
        used = bm.used_slots
        internal = min(internal, alloc - used)          # a shared partial block counts once
        return MemorySplit(used, internal, alloc - used - internal, 0, self.capacity_slots - alloc, logical)

    def split_terms(self, running: list[SequenceGroup]) -> tuple[int, int]:
        """The groups' part of :meth:`memory_split`: (internal slots before the cap at the unwritten allocated
        slots, logical slots), each a sum over the groups (:meth:`split_of` caps and completes them)."""
        bs = self.block_size
        internal = 0
        logical = 0
        get = self.bm.num_tokens.get
        for g in running:
            spec = g.spec
            final = spec.prompt_len + spec.output_len - 1      # every sequence's final_kv_tokens
            ids = g.seq_ids
            n = get(ids[0])
            m = len(ids)
            if m == 1:                                          # (one sequence: the lines below with m = 1)
                if n is not None:
                    cap = -(-n // bs) * bs
                    logical += cap
                    if cap > final:
                        internal += cap - (final if final > n else n)
                continue
            if list(map(get, ids)).count(n) != m:               # sequences of different lengths: one by one
                for sid in ids:
                    n = get(sid)
                    if n is None:
                        continue
                    cap = -(-n // bs) * bs
                    logical += cap
                    if cap > final:
                        internal += cap - max(final, n)
                continue
            if n is None:
                continue
            cap = -(-n // bs) * bs                              # (every sequence holds n slots: m times)
            logical += m * cap
            if cap > final:
                internal += m * (cap - max(final, n))
        return internal, logical

    def blocks_in_use(self) -> int:
        """Allocated GPU blocks (referenced by a table; cached-but-evictable blocks are free)."""
        return self.bm.num_allocated

    def block_table(self, seq_id: int) -> list[int]:
        """The sequence's block table (the manager's own list: read, do not modify)."""
        return self.bm.tables[seq_id]

    def prefix_cache_stats(self) -> tuple[int, int] | None:
        """Prefix-cache hits and look-ups in prompt tokens (zeros when caching is off)."""
        return self.bm.prefix_hits_tokens, self.bm.prefix_queries_tokens

    def locate(self, seq_id: int) -> tuple[str, int] | None:
        """("gpu" | "cpu", KV slots written) for a sequence held on either side, else None."""
        bm = self.bm
        if seq_id in bm.tables:
            return "gpu", bm.num_tokens[seq_id]
        if seq_id in bm.cpu_tables:
            return "cpu", bm.cpu_num_tokens[seq_id]
        return None

    def check_invariants(self) -> None:
        """Reference counts, free lists and slot counts agree (see PagedBlockManager.check_invariants)."""
        self.bm.check_invariants()

    def check_empty(self) -> None:
        """Assert nothing is held: all GPU and CPU blocks free, no tables, no cached hashes."""
        bm = self.bm
        assert bm.num_free_blocks == bm.num_gpu_blocks
        assert bm.num_allocated == 0 and bm.used_slots == 0
        assert not bm.tables and not bm.cpu_tables
        assert bm.num_free_cpu_blocks == bm.num_cpu_blocks
        assert not self._hashes

    # ------------------------------------------------------------- bulk decode
    def decode_run(self, groups: list[SequenceGroup], steps: int) -> np.ndarray | None:
        """Blocks are taken exactly where a sequence's length crosses a block boundary."""
        bm = self.bm
        bs = self.block_size
        seq_ids = [s.seq_id for g in groups for s in g.seqs]
        n0 = np.fromiter((bm.num_tokens[s] for s in seq_ids), dtype=np.int64, count=len(seq_ids))
        for s, n in zip(seq_ids, n0):
            if n % bs and bm.ref[bm.tables[s][-1]] > 1:
                return None
        first = (-n0) % bs                     # first step at which each sequence needs a block
        st = np.arange(steps)
        crossings = ((st[None, :] - first[:, None]) % bs == 0) & (st[None, :] >= first[:, None])
        crossings = crossings.sum(axis=0)
        over = np.nonzero(np.cumsum(crossings) > self.free_blocks())[0]
        return crossings[:int(over[0])] if len(over) else crossings

    def decode_memory(self, groups: list[SequenceGroup], new_blocks: np.ndarray) -> tuple[np.ndarray, MemorySplit]:
        """Vectorised :meth:`memory_split` after each step of a decode run (no sharing changes in a run)."""
        bm, bs = self.bm, self.block_size
        k = len(new_blocks)
        seqs = [s for g in groups for s in g.seqs]
        grow = len(seqs) * np.arange(1, k + 1, dtype=np.int64)
        n0 = np.array([bm.num_tokens[s.seq_id] for s in seqs], dtype=np.int64)
        final = np.array([s.final_kv_tokens for s in seqs], dtype=np.int64)
        n = n0[None, :] + np.arange(1, k + 1, dtype=np.int64)[:, None]
        cap = -(-n // bs) * bs
        logical = cap.sum(axis=1)
        internal = np.where(cap > final[None, :], cap - np.maximum(final[None, :], n), 0).sum(axis=1)
        blocks = bm.num_allocated + np.cumsum(new_blocks)
        alloc = blocks * bs
        used = bm.used_slots + grow
        internal = np.minimum(internal, alloc - used)
        reserved = alloc - used - internal
        return blocks, MemorySplit(used, internal, reserved, np.zeros(k, np.int64), self.capacity_slots - alloc,
                                   logical)

    def decode_tracker(self, groups: list[SequenceGroup]):
        """The decode-run tracker over running aggregates (:mod:`kvsim.core.kv_paged_run`); None when a
        sequence's next append would copy on write or the run's first steps' blocks are not free."""
        return PagedDecodeTracker.start(self, groups)

    def advance_decode(self, groups: list[SequenceGroup], steps: int) -> None:
        """``steps`` appends to every sequence at once (no copy-on-write: ``decode_run`` checked)."""
        self.bm.append_slots_bulk([s.seq_id for g in groups for s in g.seqs], steps)
