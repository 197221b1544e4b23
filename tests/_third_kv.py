"""A minimal third KV manager for tests: private paged blocks (no sharing, no prefix cache, no beams).

Written against :class:`kvsim.core.kv.KVManager` alone, to show that the
simulator, fast-forward and the records need nothing else from an allocator.
"""
from __future__ import annotations

import numpy as np

from kvsim.core.block_manager import AllocStatus
from kvsim.core.kv import MemorySplit


def _blocks(n: int, bs: int) -> int:
    return -(-n // bs)


class PrivateBlocksKV:
    def __init__(self, num_gpu_blocks: int, block_size: int, num_cpu_blocks: int = 0):
        self.block_size, self.num_gpu_blocks, self.num_cpu_blocks = block_size, num_gpu_blocks, num_cpu_blocks
        self.capacity_slots = num_gpu_blocks * block_size
        self.free = list(range(num_gpu_blocks - 1, -1, -1))
        self.cpu_free = list(range(num_cpu_blocks - 1, -1, -1))
        self.tables: dict[int, list[int]] = {}
        self.tokens: dict[int, int] = {}
        self.cpu: dict[int, tuple[list[int], int]] = {}

    def _peak(self, g) -> int:
        return len(g.seqs) * _blocks(g.spec.prompt_len + g.spec.output_len - 1, self.block_size)

    def never_fits(self, g):
        return f"needs {self._peak(g)} blocks" if self._peak(g) > self.num_gpu_blocks else None

    def can_admit(self, g):
        if self.never_fits(g):
            return AllocStatus.NEVER
        need = sum(_blocks(g.spec.prompt_len + s.generated, self.block_size) for s in g.seqs)
        return AllocStatus.OK if need <= len(self.free) else AllocStatus.LATER

    def admit(self, g):
        for s in g.seqs:
            n = g.spec.prompt_len + s.generated
            self.tables[s.seq_id] = [self.free.pop() for _ in range(_blocks(n, self.block_size))]
            self.tokens[s.seq_id] = n
        return 0

    def static_peak_blocks(self, g):
        return self._peak(g)

    def free_blocks(self):
        return len(self.free)

    def append_need(self, g):
        return sum(self.tokens[s.seq_id] % self.block_size == 0 for s in g.seqs)

    def append(self, g):
        for s in g.seqs:
            if self.tokens[s.seq_id] % self.block_size == 0:
                self.tables[s.seq_id].append(self.free.pop())
            self.tokens[s.seq_id] += 1
        return []

    def reparent(self, g, parents):
        raise NotImplementedError("no beam search")

    def group_blocks(self, g):
        return sum(len(self.tables.get(s.seq_id, ())) for s in g.seqs)

    def shared_blocks(self, g):
        return 0

    def free_group(self, g):
        for s in g.seqs:
            self.free.extend(self.tables.pop(s.seq_id, ()))
            self.tokens.pop(s.seq_id, None)
            self.cpu_free.extend(self.cpu.pop(s.seq_id, ((), 0))[0])

    def forget(self, g):
        pass

    def can_swap_out(self, g):
        return sum(len(self.tables[s.seq_id]) for s in g.seqs) <= len(self.cpu_free)

    def swap_out(self, g):
        pairs = []
        for s in g.seqs:
            table = self.tables.pop(s.seq_id)
            cpu = [self.cpu_free.pop() for _ in table]
            self.cpu[s.seq_id] = (cpu, self.tokens.pop(s.seq_id))
            self.free.extend(table)
            pairs.extend(zip(table, cpu))
        return pairs

    def can_swap_in(self, g):
        need = sum(len(self.cpu[s.seq_id][0]) + (self.cpu[s.seq_id][1] % self.block_size == 0) for s in g.seqs)
        return need <= len(self.free)

    def swap_in(self, g):
        pairs = []
        for s in g.seqs:
            cpu, n = self.cpu.pop(s.seq_id)
            table = [self.free.pop() for _ in cpu]
            self.tables[s.seq_id], self.tokens[s.seq_id] = table, n
            self.cpu_free.extend(cpu)
            pairs.extend(zip(cpu, table))
        return pairs

    def _alloc(self) -> int:
        return self.num_gpu_blocks - len(self.free)

    def memory_split(self, running):
        bs, used, internal = self.block_size, sum(self.tokens.values()), 0
        for g in running:
            for s in g.seqs:
                n = self.tokens.get(s.seq_id)
                if n is not None:
                    cap = _blocks(n, bs) * bs
                    internal += max(0, cap - max(s.final_kv_tokens, n))
        alloc = self._alloc() * bs
        return MemorySplit(used, internal, alloc - used - internal, 0, self.capacity_slots - alloc, alloc)

    def blocks_in_use(self):
        return self._alloc()

    def block_table(self, seq_id):
        return self.tables[seq_id]

    def prefix_cache_stats(self):
        return None

    def check_invariants(self):
        held = [b for t in self.tables.values() for b in t]
        assert len(set(held)) == len(held) and len(held) + len(self.free) == self.num_gpu_blocks

    def locate(self, seq_id):
        if seq_id in self.tokens:
            return "gpu", self.tokens[seq_id]
        return ("cpu", self.cpu[seq_id][1]) if seq_id in self.cpu else None

    def check_empty(self):
        assert not self.tables and not self.cpu and len(self.free) == self.num_gpu_blocks
        assert len(self.cpu_free) == self.num_cpu_blocks

    def decode_run(self, groups, steps):
        n0 = np.array([self.tokens[s.seq_id] for g in groups for s in g.seqs], dtype=np.int64)
        n = n0[:, None] + np.arange(steps)[None, :]          # length before each step
        new = (n % self.block_size == 0).sum(axis=0)
        over = np.nonzero(np.cumsum(new) > len(self.free))[0]
        return new[:int(over[0])] if len(over) else new

    def decode_memory(self, groups, new_blocks):
        k, bs = len(new_blocks), self.block_size
        seqs = [s for g in groups for s in g.seqs]
        n = np.array([self.tokens[s.seq_id] for s in seqs])[None, :] + np.arange(1, k + 1)[:, None]
        final = np.array([s.final_kv_tokens for s in seqs])[None, :]
        cap = -(-n // bs) * bs
        internal = np.maximum(0, cap - np.maximum(final, n)).sum(axis=1)
        blocks = self._alloc() + np.cumsum(new_blocks)
        alloc = blocks * bs
        used = sum(self.tokens.values()) + len(seqs) * np.arange(1, k + 1)
        return blocks, MemorySplit(used, internal, alloc - used - internal, np.zeros(k, np.int64),
                                   self.capacity_slots - alloc, alloc)

    def advance_decode(self, groups, steps):
        for g in groups:
            for _ in range(steps):
                self.append(g)
