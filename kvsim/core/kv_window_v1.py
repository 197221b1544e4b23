"""KV groups with sliding windows under the vLLM V1 policy (per-step slot allocation).

:class:`WindowedPagedKVV1` is :class:`~kvsim.core.kv_window.WindowedPagedKV`
(shared page pool, one page table per group) with the calls the V1 scheduler
makes (:class:`~kvsim.core.scheduler_v1.SchedulerV1`): ``can_allocate`` /
``allocate_slots`` for exactly the tokens a step computes, prefill chunk by
chunk. Before a step's tokens get slots, every window group frees the blocks
that lie wholly before the window of the step's *first* query (position ``n``
for a sequence holding ``n`` slots: keys from ``n - window + 1`` on), so a long
prompt prefilled in chunks already holds only about a window of blocks, as in
vLLM V1's sliding-window manager. No prefix cache (``prefix_hits`` is 0), no
watermark, no swap.
"""
from __future__ import annotations

from kvsim.core.block_manager import AllocStatus
from kvsim.core.kv_groups import skipped
from kvsim.core.kv_window import WindowedPagedKV
from kvsim.core.sequence import SequenceGroup


class WindowedPagedKVV1(WindowedPagedKV):
    """Windowed paged KV, allocated per step for the tokens computed (the V1 scheduler's calls)."""

    def __init__(self, layout, num_gpu_blocks: int, block_size: int):
        super().__init__(layout, num_gpu_blocks, block_size, watermark=0.0)

    @staticmethod
    def _seq(group: SequenceGroup) -> int:
        if len(group.seqs) != 1:
            raise ValueError("the v1 policy runs one sequence per group")
        return group.seqs[0].seq_id

    def resident(self, group: SequenceGroup) -> bool:
        return self._seq(group) in self.tables

    def hit_blocks(self, group: SequenceGroup) -> list[int]:
        return []

    def prefix_hits(self, group: SequenceGroup) -> int:
        return 0

    def _grow_need(self, seq: int, new_tokens: int) -> int:
        """Net pages ``allocate_slots`` takes for a resident sequence (window frees first)."""
        bs, n = self.block_size, self.num_tokens[seq]
        take = free = 0
        for w, t, k in zip(self.windows, self.tables[seq], self.skips[seq]):
            take += -(-(n + new_tokens) // bs) - len(t)
            free += max(0, skipped(n + 1, w, bs) - k)
        return take - free

    def can_allocate(self, group: SequenceGroup, new_tokens: int) -> bool:
        seq = self._seq(group)
        if seq in self.tables:
            need = self._grow_need(seq, new_tokens)
        else:
            need = len(self.windows) * -(-new_tokens // self.block_size)
        return need <= self.free_blocks()

    def allocate_slots(self, group: SequenceGroup, new_tokens: int) -> int:
        """Slots for ``new_tokens`` more tokens: free blocks before the first new query's window, then take."""
        seq = self._seq(group)
        if seq not in self.tables:
            self.tables[seq] = [[] for _ in self.windows]
            self.skips[seq] = [0] * len(self.windows)
            self.num_tokens[seq] = 0
        n = self.num_tokens[seq]
        if n:
            self._free_window(seq, n + 1)
        self._grow(seq, n + new_tokens, free_window=False)
        return 0

    def chunk_never_fits(self, group: SequenceGroup, new_tokens: int) -> str | None:
        """Why a waiting group's first chunk of ``new_tokens`` could not get its slots even with every page free
        (None when it could). A window caps what a sequence holds over its life (:meth:`never_fits`), not what one
        chunk writes: a request preempted late comes back as one prefill of its prompt and output so far."""
        need = len(self.windows) * -(-new_tokens // self.block_size)
        if self._seq(group) in self.tables or need <= self.num_gpu_blocks:
            return None
        return (f"its prefill chunk of {new_tokens} tokens needs {need} KV pages of {self.block_size} tokens over "
                f"{len(self.windows)} KV groups at once but the GPU holds {self.num_gpu_blocks} pages")

    def admission_free_cap(self, group: SequenceGroup, new_tokens: int | None = None) -> int:
        if self._seq(group) in self.tables:
            return self.num_gpu_blocks          # resident (never for a waiting head): no cap from memory
        return len(self.windows) * -(-new_tokens // self.block_size) - 1

    def never_fits(self, group: SequenceGroup) -> str | None:
        need = self.peak_blocks(group)
        if need > self.num_gpu_blocks:
            return (f"needs up to {need} KV pages of {self.block_size} tokens over {len(self.windows)} KV groups "
                    f"but the GPU holds {self.num_gpu_blocks} pages")
        return None

    def can_admit(self, group: SequenceGroup) -> AllocStatus:
        if self.never_fits(group):
            return AllocStatus.NEVER
        return AllocStatus.OK if self.can_allocate(group, group.prefill_target) else AllocStatus.LATER

    def admit(self, group: SequenceGroup) -> int:
        return self.allocate_slots(group, group.prefill_target)

    def append_need(self, group: SequenceGroup) -> int:
        return max(0, self._grow_need(self._seq(group), 1))

    def append(self, group: SequenceGroup) -> list[tuple[int, int]]:
        self.allocate_slots(group, 1)
        return []
