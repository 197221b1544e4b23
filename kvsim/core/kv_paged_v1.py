"""Group-level KV operations for the vLLM V1 policy, over the V1 block pool.

:class:`PagedKVV1` is :class:`~kvsim.core.kv_paged.PagedKV` (memory split,
block tables, bulk decode, checks) on a
:class:`~kvsim.core.block_pool_v1.PagedBlockManagerV1`, with V1's allocation:

* every group holds one sequence (a request with ``n > 1`` arrives here as
  ``n`` child groups, :mod:`kvsim.core.fanout`); nothing is forked or copied on
  write, so children share prompt blocks only through prefix-cache hits;
* the prefix cache hashes every full block of a sequence, prompt and output
  (output ids are stand-ins unique to the sequence), so a request recomputed
  after a preemption finds its own blocks again while they wait in the free queue;
* slots are allocated per step for the tokens the step computes
  (:meth:`can_allocate` / :meth:`allocate_slots`), prefill chunk by chunk;
  a group is admitted when its first chunk's blocks fit (no watermark);
* there is no swap: V1 preempts by recompute only.

The :class:`~kvsim.core.kv.KVManager` calls the V1 scheduler does not use
(``admit``, ``append``) are implemented on the same primitives.
"""
from __future__ import annotations

import numpy as np

from kvsim.core.block_manager import AllocStatus
from kvsim.core.block_pool_v1 import PagedBlockManagerV1
from kvsim.core.fanout import sample_index
from kvsim.core.kv_paged import PagedKV
from kvsim.core.sequence import SequenceGroup
from kvsim.core.tokens import block_hashes, synthetic_output_tokens, synthetic_prompt_tokens

NO_SWAP = "the v1 policy has no swap (recompute-only preemption)"


class PagedKVV1(PagedKV):
    """Paged KV as vLLM V1 allocates it: per-step slots, one free queue, lazy prefix-cache eviction."""

    def __init__(self, num_gpu_blocks: int, block_size: int, enable_prefix_caching: bool = False):
        self.bm = PagedBlockManagerV1(num_gpu_blocks, block_size, enable_prefix_caching)
        self.block_size = block_size
        self.num_gpu_blocks = num_gpu_blocks
        self.num_cpu_blocks = 0
        self.enable_prefix_caching = enable_prefix_caching
        self.capacity_slots = num_gpu_blocks * block_size
        self._hashes: dict[int, list[int]] = {}
        self._swap_in_need: dict[int, int] = {}      # (PagedKV's; never filled here: V1 does not swap)

    @staticmethod
    def _seq(group: SequenceGroup) -> int:
        if len(group.seqs) != 1:
            raise ValueError("the v1 policy runs one sequence per group (n > 1 fans out into child requests)")
        return group.seqs[0].seq_id

    # -------------------------------------------------------------- admission
    def never_fits(self, group: SequenceGroup) -> str | None:
        """The sequence's final KV exceeds every GPU block (V1 keeps no watermark)."""
        need = self.peak_blocks(group)
        if need > self.num_gpu_blocks:
            return (f"needs up to {need} KV blocks of {self.block_size} tokens but the GPU holds "
                    f"{self.num_gpu_blocks} blocks")
        return None

    def chunk_never_fits(self, group: SequenceGroup, new_tokens: int) -> str | None:
        """None: any chunk is at most the sequence's final KV, which :meth:`never_fits` checked fits the GPU."""
        return None

    def _prompt_hashes(self, group: SequenceGroup) -> list[int] | None:
        """Chained hashes of every full block of the sequence's final KV (prompt, then its own output)."""
        if not self.enable_prefix_caching:
            return None
        h = self._hashes.get(group.group_id)
        if h is None:
            spec = group.spec
            out = synthetic_output_tokens(spec, sample_index(group), spec.output_len - 1)
            h = block_hashes(np.concatenate([synthetic_prompt_tokens(spec), out]), self.block_size)
            self._hashes[group.group_id] = h
        return h

    def resident(self, group: SequenceGroup) -> bool:
        return self._seq(group) in self.bm.tables

    def hit_blocks(self, group: SequenceGroup) -> list[int]:
        """The cached blocks a waiting group's (re)prefill would take. No state change."""
        return self.bm.lookup(self._prompt_hashes(group), group.prefill_target)

    def prefix_hits(self, group: SequenceGroup) -> int:
        """Tokens of a waiting group's (re)prefill the prefix cache holds now. No state change."""
        return len(self.hit_blocks(group)) * self.block_size

    def can_allocate(self, group: SequenceGroup, new_tokens: int) -> bool:
        """Whether the free queue covers ``allocate_slots(group, new_tokens)`` (hits it takes back included)."""
        seq = self._seq(group)
        if seq in self.bm.tables:
            need = self.bm.blocks_to_grow(seq, new_tokens)
        else:
            need = self.bm.blocks_to_start(self.hit_blocks(group), new_tokens)
        return need <= self.bm.num_free_blocks

    def allocate_slots(self, group: SequenceGroup, new_tokens: int) -> int:
        """Slots for ``new_tokens`` more tokens; a waiting group first takes its prefix-cache hits.

        Requires ``can_allocate``. Returns the prefix-hit tokens when it starts the group, else 0."""
        seq = self._seq(group)
        hashes = self._prompt_hashes(group)
        if seq in self.bm.tables:
            self.bm.grow(seq, new_tokens, hashes)
            return 0
        hits = self.hit_blocks(group)
        self.bm.start(seq, hits, new_tokens, hashes, group.prefill_target)
        return len(hits) * self.block_size

    def can_admit(self, group: SequenceGroup) -> AllocStatus:
        """The whole (re)prefill at once (the V1 scheduler admits chunk by chunk instead)."""
        if self.never_fits(group):
            return AllocStatus.NEVER
        ok = self.can_allocate(group, group.prefill_target - self.prefix_hits(group))
        return AllocStatus.OK if ok else AllocStatus.LATER

    def admit(self, group: SequenceGroup) -> int:
        return self.allocate_slots(group, group.prefill_target - self.prefix_hits(group))

    # ------------------------------------------------------------------ decode
    def append_need(self, group: SequenceGroup) -> int:
        return self.bm.blocks_to_grow(self._seq(group), 1)

    def append(self, group: SequenceGroup) -> list[tuple[int, int]]:
        self.bm.grow(self._seq(group), 1)
        return []

    append_blocks_per_seq = None      # (not claimed here: the scheduler asks each group's append_need)

    decode_tracker = None
    """Decode runs go through the protocol methods (:class:`kvsim.core.decode_tracker.ProtocolTracker`), so
    :meth:`advance_decode` caches the blocks a run fills; PagedKV's incremental tracker would skip that."""

    def advance_decode(self, groups: list[SequenceGroup], steps: int) -> None:
        """The bulk appends, then the blocks they filled are cached (as ``steps`` ``grow`` calls would)."""
        before = [(s.seq_id, self.bm.num_tokens[s.seq_id], g) for g in groups for s in g.seqs]
        super().advance_decode(groups, steps)
        for seq, n0, g in before:
            self.bm.register(seq, n0, self._prompt_hashes(g))

    def reparent(self, group: SequenceGroup, parents: list[int]) -> None:
        raise ValueError("the v1 policy has no beam search")

    # -------------------------------------------------------------------- swap
    def can_swap_out(self, group: SequenceGroup) -> bool:
        return False

    def can_swap_in(self, group: SequenceGroup) -> bool:
        return False

    def swap_out(self, group: SequenceGroup) -> list[tuple[int, int]]:
        raise ValueError(NO_SWAP)

    def swap_in(self, group: SequenceGroup) -> list[tuple[int, int]]:
        raise ValueError(NO_SWAP)
