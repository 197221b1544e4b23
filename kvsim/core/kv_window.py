"""Paged KV over KV-cache groups (sliding-window models), for the v0 scheduler (v1: kv_window_v1).

Implements :class:`kvsim.core.kv.KVManager` for a :class:`~kvsim.core.kv_groups.KVGroupLayout`:
one shared pool of ``num_gpu_blocks`` equal pages and, per sequence, one page
table per group (see :mod:`kvsim.core.kv_groups` for the layout and the window
rule). Every count the scheduler sees (``free_blocks``, ``append_need``,
``blocks_in_use``, admission) is in pages summed over the groups, so admission
and preemption weigh full-attention and window pages alike.

A window group's table keeps its logical positions: a block freed because it
left the window becomes ``-1`` (never read again), so block ``j`` of a table
always covers tokens ``[j * block_size, (j + 1) * block_size)``. A block is
freed when the append that moves the window past it runs (before that append
takes any new page), and exactly once (``_release`` asserts it was held).

Scope: one sequence per group (no parallel sampling or beam search under v0),
no prefix caching and no CPU swap (a preemption recomputes);
:mod:`kvsim.window_setup` refuses the rest with a one-line error. Decode runs are fast-forwarded through
:class:`~kvsim.core.kv_window_run.WindowDecodeTracker` (it stops a run before a window free could unblock
admission).
Memory splits are in page slots: one slot is one token of one group's layers.
"""
from __future__ import annotations

import numpy as np

from kvsim.core.block_manager import AllocStatus
from kvsim.core.kv import MemorySplit
from kvsim.core.kv_groups import KVGroupLayout, peak_held, skipped
from kvsim.core.kv_window_run import WindowDecodeTracker
from kvsim.core.sequence import SequenceGroup


class WindowedPagedKV:
    """Paged KV with per-group page tables; blocks outside a sliding window are freed as decode advances."""

    def __init__(self, layout: KVGroupLayout, num_gpu_blocks: int, block_size: int, watermark: float = 0.01):
        if block_size < 1 or num_gpu_blocks < 1:
            raise ValueError("block_size and num_gpu_blocks must be >= 1")
        self.layout = layout
        self.windows = layout.windows
        self.block_size = block_size
        self.num_gpu_blocks = num_gpu_blocks
        self.num_cpu_blocks = 0
        self.capacity_slots = num_gpu_blocks * block_size
        self.watermark_blocks = int(watermark * num_gpu_blocks)
        self._free = list(range(num_gpu_blocks - 1, -1, -1))   # pop() -> lowest id first
        self._held = bytearray(num_gpu_blocks)
        self.num_allocated = 0
        self.tables: dict[int, list[list[int]]] = {}   # seq -> one table per group (-1: freed, out of window)
        self.num_tokens: dict[int, int] = {}
        self.skips: dict[int, list[int]] = {}          # seq -> leading freed entries of each table
        self.window_frees = 0                          # blocks freed because they left a window

    # ------------------------------------------------------------- primitives
    def _take(self) -> int:
        b = self._free.pop()
        self._held[b] = 1
        self.num_allocated += 1
        return b

    def _release(self, b: int) -> None:
        assert self._held[b], f"block {b} freed twice"
        self._held[b] = 0
        self.num_allocated -= 1
        self._free.append(b)

    def _step_counts(self, seq_id: int, n: int) -> tuple[int, int]:
        """(pages taken, pages freed) by growing ``seq_id`` to ``n`` slots with window frees."""
        bs, take, free = self.block_size, 0, 0
        for w, t, k in zip(self.windows, self.tables[seq_id], self.skips[seq_id]):
            take += -(-n // bs) - len(t)
            free += max(0, skipped(n, w, bs) - k)
        return take, free

    def _grow(self, seq_id: int, n: int, free_window: bool) -> None:
        """Give ``seq_id`` ``n`` slots: first free blocks out of every window, then take new pages."""
        if free_window:
            self._free_window(seq_id, n)
        bs = self.block_size
        for t in self.tables[seq_id]:
            while len(t) < -(-n // bs):
                t.append(self._take())
        self.num_tokens[seq_id] = n

    def _free_window(self, seq_id: int, n: int) -> None:
        """Free every window block that the query at position ``n - 1`` and later ones never read."""
        bs, tables, skips = self.block_size, self.tables[seq_id], self.skips[seq_id]
        for i, (w, t) in enumerate(zip(self.windows, tables)):
            end = skipped(n, w, bs)
            for j in range(skips[i], end):
                self._release(t[j])
                t[j] = -1
                self.window_frees += 1
            skips[i] = max(skips[i], end)

    # -------------------------------------------------------------- admission
    def peak_blocks(self, group: SequenceGroup) -> int:
        """Most pages the group holds alone, summed over groups (window groups stop growing)."""
        p, final = group.spec.prompt_len, group.spec.prompt_len + group.spec.output_len - 1
        return len(group.seqs) * sum(peak_held(p, final, w, self.block_size) for w in self.windows)

    def static_peak_blocks(self, group: SequenceGroup) -> int:
        return self.peak_blocks(group)

    def never_fits(self, group: SequenceGroup) -> str | None:
        usable = self.num_gpu_blocks - self.watermark_blocks
        need = self.peak_blocks(group)
        if need > usable:
            return (f"needs up to {need} KV pages of {self.block_size} tokens over {len(self.windows)} KV groups "
                    f"but the GPU holds {usable} usable pages")
        return None

    def _admit_len(self, group: SequenceGroup) -> int:
        return group.spec.prompt_len + group.generated

    def can_admit(self, group: SequenceGroup) -> AllocStatus:
        need = len(group.seqs) * len(self.windows) * -(-self._admit_len(group) // self.block_size)
        if need > self.num_gpu_blocks - self.watermark_blocks:
            return AllocStatus.NEVER
        return AllocStatus.OK if self.free_blocks() - need >= self.watermark_blocks else AllocStatus.LATER

    def admit(self, group: SequenceGroup) -> int:
        """Every group's table gets all (re)prefill blocks: the prefill attends from position 0."""
        n = self._admit_len(group)
        for s in group.seqs:
            assert s.seq_id not in self.tables
            self.tables[s.seq_id] = [[] for _ in self.windows]
            self.skips[s.seq_id] = [0] * len(self.windows)
            self._grow(s.seq_id, n, free_window=False)
        return 0

    # ----------------------------------------------------------------- decode
    def free_blocks(self) -> int:
        return len(self._free)

    def append_need(self, group: SequenceGroup) -> int:
        """Net pages the next append takes (pages it frees first count against it; never below 0)."""
        net = 0
        for sid in group.seq_ids:
            take, free = self._step_counts(sid, self.num_tokens[sid] + 1)
            net += take - free
        return max(0, net)

    def append(self, group: SequenceGroup) -> list[tuple[int, int]]:
        for sid in group.seq_ids:
            self._grow(sid, self.num_tokens[sid] + 1, free_window=True)
        return []

    def reparent(self, group: SequenceGroup, parents: list[int]) -> None:
        raise NotImplementedError("KV groups run one sequence per request (no beam search)")

    def group_blocks(self, group: SequenceGroup) -> int:
        return sum(b >= 0 for sid in group.seq_ids for t in self.tables.get(sid, ()) for b in t)

    def shared_blocks(self, group: SequenceGroup) -> int:
        """One sequence per group (no beam search): none shared."""
        return 0

    def free_group(self, group: SequenceGroup) -> None:
        for sid in group.seq_ids:
            tables = self.tables.pop(sid, None)
            if tables is None:
                continue
            del self.num_tokens[sid]
            del self.skips[sid]
            for t in tables:
                for b in reversed(t):
                    if b >= 0:
                        self._release(b)

    def forget(self, group: SequenceGroup) -> None:
        pass

    # ------------------------------------------------------------------- swap
    def can_swap_out(self, group: SequenceGroup) -> bool:
        return False                      # no CPU pool: the scheduler recomputes instead

    def swap_out(self, group: SequenceGroup) -> list[tuple[int, int]]:
        raise NotImplementedError("KV groups have no CPU swap pool")

    def can_swap_in(self, group: SequenceGroup) -> bool:
        return False

    def swap_in(self, group: SequenceGroup) -> list[tuple[int, int]]:
        raise NotImplementedError("KV groups have no CPU swap pool")

    # ---------------------------------------------------------------- reading
    def memory_split(self, running: list[SequenceGroup]) -> MemorySplit:
        """Page slots: used = written slots in held pages; internal = held slots past the final length."""
        bs = self.block_size
        used = internal = 0
        for g in running:
            final = g.spec.prompt_len + g.spec.output_len - 1
            for sid in g.seq_ids:
                n = self.num_tokens.get(sid)
                if n is None:
                    continue
                cap = -(-n // bs) * bs
                for k in self.skips[sid]:
                    used += n - k * bs
                    if cap > final:
                        internal += cap - max(final, n)
        alloc = self.num_allocated * bs
        reserved = alloc - used - internal
        return MemorySplit(used, internal, reserved, 0, self.capacity_slots - alloc, alloc)

    def blocks_in_use(self) -> int:
        return self.num_allocated

    def block_table(self, seq_id: int) -> list[int]:
        """The first group's table (``group_tables`` has them all)."""
        return self.tables[seq_id][0]

    def group_tables(self, seq_id: int) -> list[list[int]]:
        """The sequence's page table of each group (-1: freed, outside the window)."""
        return self.tables[seq_id]

    def prefix_cache_stats(self) -> tuple[int, int] | None:
        return None

    def locate(self, seq_id: int) -> tuple[str, int] | None:
        n = self.num_tokens.get(seq_id)
        return None if n is None else ("gpu", n)

    def check_invariants(self) -> None:
        bs, seen = self.block_size, set()
        entries = 0
        for sid, tables in self.tables.items():
            n = self.num_tokens[sid]
            for w, t, k in zip(self.windows, tables, self.skips[sid]):
                assert len(t) == -(-n // bs) and k <= skipped(n, w, bs), (sid, w)
                assert all(b < 0 for b in t[:k]) and all(b >= 0 and self._held[b] for b in t[k:]), sid
                seen.update(t[k:])
                entries += len(t) - k
        assert len(seen) == entries == self.num_allocated == sum(self._held)
        assert len(self._free) + self.num_allocated == self.num_gpu_blocks
        assert len(set(self._free)) == len(self._free) and not (set(self._free) & seen)

    def check_empty(self) -> None:
        assert not self.tables and not self.num_tokens and not self.skips
        assert self.num_allocated == 0 and len(self._free) == self.num_gpu_blocks

    # ------------------------------------------------------------ bulk decode
    def decode_tracker(self, groups: list[SequenceGroup]):
        """Decode runs plan every group's page events (:mod:`kvsim.core.kv_window_run`); the run stops where
        a window free could unblock admission (``free_cap``) or an append could preempt."""
        return WindowDecodeTracker(self, groups)

    def admission_free_cap(self, group: SequenceGroup, new_tokens: int | None = None) -> int:
        """Most free pages at which ``can_admit(group)`` is LATER (v1: ``can_allocate(group, new_tokens)``
        is False); -1 if it never is."""
        need = len(group.seqs) * len(self.windows) * -(-self._admit_len(group) // self.block_size)
        return need + self.watermark_blocks - 1

    def decode_run(self, groups: list[SequenceGroup], steps: int) -> np.ndarray | None:
        return None

    def decode_memory(self, groups: list[SequenceGroup], new_blocks: np.ndarray) -> tuple[np.ndarray, MemorySplit]:
        raise NotImplementedError("decode_run is never a run for KV groups")

    def advance_decode(self, groups: list[SequenceGroup], steps: int) -> None:
        for _ in range(steps):
            for g in groups:
                self.append(g)
