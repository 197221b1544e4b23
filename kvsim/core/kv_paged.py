"""Group-level KV operations over the paged block manager (the vLLM policy).

The scheduler talks to a KV manager in terms of sequence groups; this adapter
maps those calls onto :class:`PagedBlockManager` sequence primitives. All
sequences of a group share the prompt's blocks; sharing after that emerges from
copy-on-write and beam re-parenting.
"""
from __future__ import annotations

from kvsim.core.block_manager import AllocStatus, PagedBlockManager
from kvsim.core.sequence import SequenceGroup
from kvsim.core.tokens import block_hashes, synthetic_prompt_tokens


class PagedKV:
    kind = "paged"

    def __init__(self, num_gpu_blocks: int, block_size: int, num_cpu_blocks: int = 0,
                 watermark: float = 0.01, enable_prefix_caching: bool = False):
        self.bm = PagedBlockManager(num_gpu_blocks, block_size, num_cpu_blocks, watermark,
                                    enable_prefix_caching)
        self.block_size = block_size
        self.capacity_slots = num_gpu_blocks * block_size
        self._hashes: dict[int, list[int]] = {}

    # -------------------------------------------------------------- admission
    def peak_blocks(self, group: SequenceGroup) -> int:
        """Most blocks the group can ever hold alone: shared full prompt blocks plus each sequence's own."""
        bs = self.block_size
        p, final = group.spec.prompt_len, group.spec.prompt_len + group.spec.output_len - 1
        shared = p // bs
        return shared + len(group.seqs) * (-(-final // bs) - shared)

    def never_fits(self, group: SequenceGroup) -> str | None:
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
        return self.bm.can_allocate(self._admit_blocks(group))

    def _prompt_hashes(self, group: SequenceGroup) -> list[int] | None:
        if not self.bm.enable_prefix_caching:
            return None
        h = self._hashes.get(group.group_id)
        if h is None:
            h = block_hashes(synthetic_prompt_tokens(group.spec), self.block_size)
            self._hashes[group.group_id] = h
        return h

    def admit(self, group: SequenceGroup) -> int:
        """Allocate the group's (re)prefill; return prompt tokens served by the prefix cache."""
        seqs = group.seqs
        first = seqs[0].seq_id
        cached = self.bm.allocate(first, group.spec.prompt_len, self._prompt_hashes(group))
        for s in seqs[1:]:
            self.bm.share(first, s.seq_id)
        if group.generated:
            # recompute after preemption: each sequence re-creates its own tokens' slots
            # (written by the recompute, so copy-on-write pairs here need no copy)
            for s in seqs:
                for _ in range(s.generated):
                    self.bm.append_slot(s.seq_id)
        return cached

    # ------------------------------------------------------------------ decode
    def append_need(self, group: SequenceGroup) -> int:
        return self.bm.blocks_to_append([s.seq_id for s in group.seqs])

    def free_blocks(self) -> int:
        return self.bm.num_free_blocks

    def append(self, group: SequenceGroup) -> list[tuple[int, int]]:
        copies = []
        for s in group.seqs:
            c = self.bm.append_slot(s.seq_id)
            if c is not None:
                copies.append(c)
        return copies

    def reparent(self, group: SequenceGroup, parents: list[int]) -> None:
        self.bm.reparent([s.seq_id for s in group.seqs], parents)

    def free_group(self, group: SequenceGroup) -> None:
        for s in group.seqs:
            self.bm.free(s.seq_id)

    def forget(self, group: SequenceGroup) -> None:
        self._hashes.pop(group.group_id, None)

    def group_blocks(self, group: SequenceGroup) -> int:
        seen = set()
        for s in group.seqs:
            seen.update(self.bm.tables.get(s.seq_id, ()))
        return len(seen)

    # -------------------------------------------------------------------- swap
    def can_swap_out(self, group: SequenceGroup) -> bool:
        return self.bm.can_swap_out([s.seq_id for s in group.seqs])

    def swap_out(self, group: SequenceGroup) -> list[tuple[int, int]]:
        return self.bm.swap_out([s.seq_id for s in group.seqs])

    def can_swap_in(self, group: SequenceGroup) -> bool:
        ids = [s.seq_id for s in group.seqs]
        need = self.bm.blocks_to_swap_in(ids) + self.bm.blocks_to_append(ids, swapped=True)
        return self.bm.can_allocate(need) == AllocStatus.OK

    def swap_in(self, group: SequenceGroup) -> list[tuple[int, int]]:
        return self.bm.swap_in([s.seq_id for s in group.seqs])

    # ------------------------------------------------------------------ memory
    def memory_split(self, running: list[SequenceGroup]) -> tuple[int, int, int, int, int, int]:
        """(used, internal_frag, reserved, external_frag, free, logical) in token slots.

        used: slots holding KV; internal fragmentation: allocated slots past a
        sequence's final length (only in its last block); reserved: allocated
        slots that will still be written; external: always 0 for paging; free:
        unallocated (evictable prefix-cache blocks count as free); logical: the
        slots the block tables would occupy without any sharing.
        """
        bm = self.bm
        bs = self.block_size
        alloc = bm.num_allocated * bs
        internal = 0
        logical = 0
        num_tokens = bm.num_tokens
        for g in running:
            for s in g.seqs:
                n = num_tokens.get(s.seq_id)
                if n is None:
                    continue
                cap = -(-n // bs) * bs
                logical += cap
                final = s.final_kv_tokens
                if cap > final:
                    internal += cap - max(final, n)
        internal = min(internal, alloc - bm.used_slots)   # a shared partial block counts once
        reserved = alloc - bm.used_slots - internal
        return bm.used_slots, internal, reserved, 0, self.capacity_slots - alloc, logical

    def blocks_in_use(self) -> int:
        return self.bm.num_allocated

    def check_invariants(self) -> None:
        self.bm.check_invariants()
