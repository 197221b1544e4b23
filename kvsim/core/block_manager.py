"""Paged KV block manager: block tables, ref counts, copy-on-write, prefix cache, swap.

GPU memory holds ``num_gpu_blocks`` physical blocks of ``block_size`` token
slots; the CPU swap pool holds ``num_cpu_blocks``. Each sequence owns a block
table (a list of physical block ids, logical order). Blocks are shared between
sequences by reference counting: ``fork`` shares every block of a parent,
prefix caching shares full prompt blocks with equal chained hashes.

Appending slots (one, one per sequence, or many steps at once) lives in
:mod:`kvsim.core.block_append`, the CPU swap pool's moves in
:mod:`kvsim.core.block_swap`, beam search's re-parenting in :mod:`kvsim.core.block_reparent`
(mixins of :class:`PagedBlockManager`).

Global invariants (``check_invariants``):
  * sum of GPU ref counts == number of GPU block-table entries (same for CPU);
  * a block is either free, cached-and-evictable (ref 0, prefix cache only) or
    referenced (ref > 0) — never two of these;
  * ``used_slots`` == sum of ``fill`` over referenced blocks.
"""
from __future__ import annotations

from collections import OrderedDict
from enum import Enum
from operator import itemgetter

from kvsim.core.block_append import OUT_OF_BLOCKS, AppendMixin
from kvsim.core.block_group import GroupMovesMixin
from kvsim.core.block_reparent import ReparentMixin
from kvsim.core.block_swap import SwapMixin


class AllocStatus(str, Enum):
    OK = "ok"
    LATER = "later"
    NEVER = "never"


# The members as module names, for the paths that read them once or more per request: an Enum member read off
# its class costs ~70 ns on Python 3.11 (a descriptor call), a module global a few
ALLOC_OK, ALLOC_LATER, ALLOC_NEVER = AllocStatus.OK, AllocStatus.LATER, AllocStatus.NEVER


class PagedBlockManager(AppendMixin, SwapMixin, ReparentMixin, GroupMovesMixin):
    def __init__(self, num_gpu_blocks: int, block_size: int, num_cpu_blocks: int = 0,
                 watermark: float = 0.01, enable_prefix_caching: bool = False):
        if block_size < 1:
            raise ValueError("block_size must be >= 1")
        if num_gpu_blocks < 1:
            raise ValueError("num_gpu_blocks must be >= 1")
        self.block_size = block_size
        self.num_gpu_blocks = num_gpu_blocks
        self.num_cpu_blocks = num_cpu_blocks
        self.watermark_blocks = int(watermark * num_gpu_blocks)
        self.enable_prefix_caching = enable_prefix_caching
        self.ref = [0] * num_gpu_blocks
        self.fill = [0] * num_gpu_blocks          # token slots written in each block
        self._free = list(range(num_gpu_blocks - 1, -1, -1))   # pop() -> lowest id first
        self.tables: dict[int, list[int]] = {}
        self.num_tokens: dict[int, int] = {}       # slots held by each GPU-resident sequence
        self.used_slots = 0
        self.num_allocated = 0                     # referenced GPU blocks
        # prefix cache
        self._hash_of: dict[int, int] = {}         # block -> chained hash (registered full blocks)
        self._block_of: dict[int, int] = {}        # chained hash -> block
        self._evictable: OrderedDict[int, None] = OrderedDict()  # ref-0 cached blocks, LRU first
        self.prefix_hits_tokens = 0
        self.prefix_queries_tokens = 0
        # CPU side
        self.cpu_ref = [0] * num_cpu_blocks
        self._cpu_free = list(range(num_cpu_blocks - 1, -1, -1))
        self.cpu_tables: dict[int, list[int]] = {}
        self.cpu_num_tokens: dict[int, int] = {}
        self.cpu_fill = [0] * num_cpu_blocks

    # ------------------------------------------------------------------ queries
    @property
    def num_free_blocks(self) -> int:
        """Blocks an allocation can take now: free plus evictable cached blocks."""
        return len(self._free) + len(self._evictable)

    @property
    def num_free_cpu_blocks(self) -> int:
        return len(self._cpu_free)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def can_allocate(self, num_blocks: int) -> AllocStatus:
        """OK if ``num_blocks`` fit now leaving the watermark free; NEVER if they can never fit."""
        if num_blocks > self.num_gpu_blocks - self.watermark_blocks:
            return ALLOC_NEVER
        if self.num_free_blocks - num_blocks >= self.watermark_blocks:
            return ALLOC_OK
        return ALLOC_LATER

    # ------------------------------------------------------------ primitives
    def _evict_lru(self) -> int | None:
        """The least recently used cached block, evicted (its hash forgotten); None when none is cached. Every
        block taken past the free list is evicted so (here, for ``_take_block``, or inline in the takes of
        :mod:`kvsim.core.block_append`)."""
        if not self._evictable:
            return None
        b, _ = self._evictable.popitem(last=False)
        del self._block_of[self._hash_of.pop(b)]
        return b

    def _take_block(self) -> int:
        if self._free:
            b = self._free.pop()
        else:
            b = self._evict_lru()
            if b is None:
                raise RuntimeError(OUT_OF_BLOCKS)
        self.ref[b] = 1
        self.fill[b] = 0
        self.num_allocated += 1
        return b

    def _release(self, b: int) -> None:
        r = self.ref[b] - 1
        self.ref[b] = r
        if r == 0:
            self.num_allocated -= 1
            self.used_slots -= self.fill[b]
            if b in self._hash_of:
                self._evictable[b] = None
            else:
                self._free.append(b)

    # (subclasses may replace these two; the swaps' bulk paths check that they did not: SwapMixin)
    _plain_take, _plain_release = _take_block, _release

    def allocate(self, seq_id: int, num_tokens: int, hashes: list[int] | None = None) -> int:
        """Give ``seq_id`` a table for ``num_tokens`` prompt slots; return prompt tokens found cached.

        With prefix caching, leading full blocks whose chained hash is cached are
        shared instead of allocated; at least one token is always left to compute.
        Invariant: afterwards ``len(tables[seq_id]) == ceil(num_tokens / block_size)``.
        """
        assert seq_id not in self.tables
        bs = self.block_size
        table: list[int] = []
        hit_blocks = 0
        if self.enable_prefix_caching and hashes:
            self.prefix_queries_tokens += num_tokens
            max_hits = (num_tokens - 1) // bs
            for h in hashes[:max_hits]:
                b = self._block_of.get(h)
                if b is None:
                    break
                if self.ref[b] == 0:
                    del self._evictable[b]
                    self.num_allocated += 1
                    self.used_slots += self.fill[b]
                self.ref[b] += 1
                table.append(b)
                hit_blocks += 1
            self.prefix_hits_tokens += hit_blocks * bs
        nblocks = self.blocks_for(num_tokens)
        m = nblocks - hit_blocks
        free = self._free
        if m > 0 and len(free) >= m and type(self)._take_block is PagedBlockManager._take_block:
            # the free list serves every new block (no eviction): the ones m _take_block calls would pop, in
            # order, at once
            got = free[-m:]
            del free[-m:]
            got.reverse()
            ref, fill = self.ref, self.fill
            for b in got:
                ref[b] = 1
                fill[b] = bs
            fill[got[-1]] = num_tokens - (nblocks - 1) * bs     # (every block but the last is full)
            self.num_allocated += m
            self.used_slots += num_tokens - hit_blocks * bs
            if self.enable_prefix_caching and hashes:           # register the new full blocks' hashes
                block_of, hash_of = self._block_of, self._hash_of
                full = min(len(hashes), nblocks if num_tokens % bs == 0 else nblocks - 1)
                for i in range(hit_blocks, full):
                    h = hashes[i]
                    if h not in block_of:
                        b = got[i - hit_blocks]
                        block_of[h] = b
                        hash_of[b] = h
            table.extend(got)
            self.tables[seq_id] = table
            self.num_tokens[seq_id] = num_tokens
            return hit_blocks * bs
        if m > 0 and type(self)._take_block is type(self)._plain_take:
            self._allocate_evicting(table, hit_blocks, nblocks, num_tokens, hashes)
        else:
            for i in range(hit_blocks, nblocks):
                b = self._take_block()
                f = min(bs, num_tokens - i * bs)
                self.fill[b] = f
                self.used_slots += f
                if self.enable_prefix_caching and hashes and i < len(hashes) and f == bs:
                    h = hashes[i]
                    if h not in self._block_of:
                        self._block_of[h] = b
                        self._hash_of[b] = h
                table.append(b)
        self.tables[seq_id] = table
        self.num_tokens[seq_id] = num_tokens
        return hit_blocks * bs

    def share(self, src_seq: int, dst_seq: int) -> None:
        """``dst_seq`` gets a copy of ``src_seq``'s table; every block's ref count grows by one."""
        table = self.tables[src_seq]
        for b in table:
            self.ref[b] += 1
        self.tables[dst_seq] = list(table)
        self.num_tokens[dst_seq] = self.num_tokens[src_seq]

    def _release_all(self, blocks) -> None:
        """:meth:`_release` of each of ``blocks`` in order, inlined for the hot paths (free, beam re-parenting)."""
        ref, fill, hashed, free, evictable = self.ref, self.fill, self._hash_of, self._free, self._evictable
        freed = used = 0
        for b in blocks:
            r = ref[b] - 1
            ref[b] = r
            if r == 0:
                freed += 1
                used += fill[b]
                if b in hashed:
                    evictable[b] = None
                else:
                    free.append(b)
        self.num_allocated -= freed
        self.used_slots -= used

    def free(self, seq_id: int) -> None:
        """Drop ``seq_id``'s table, releasing one reference to each of its blocks (GPU or CPU)."""
        table = self.tables.pop(seq_id, None)
        if table is not None:
            del self.num_tokens[seq_id]
            if type(self)._release is not PagedBlockManager._release:     # a subclass's own release order
                for b in reversed(table):
                    self._release(b)
                return
            ref, fill, hashed = self.ref, self.fill, self._hash_of
            if len(table) > 1 and not hashed:
                refs = itemgetter(*table)(ref)
                if refs.count(1) == len(table):     # every block private: all free, last block first
                    for b in table:
                        ref[b] = 0
                    self._free.extend(reversed(table))
                    self.num_allocated -= len(table)
                    self.used_slots -= sum(itemgetter(*table)(fill))
                    return
            self._release_all(reversed(table))
            return
        table = self.cpu_tables.pop(seq_id, None)
        if table is not None:
            del self.cpu_num_tokens[seq_id]
            for c in table:
                self.cpu_ref[c] -= 1
                if self.cpu_ref[c] == 0:
                    self._cpu_free.append(c)

    # ------------------------------------------------------------- checking
    def check_invariants(self) -> None:
        """Raise AssertionError if any global invariant (module docstring) is broken."""
        entries = sum(len(t) for t in self.tables.values())
        assert sum(self.ref) == entries, (sum(self.ref), entries)
        cpu_entries = sum(len(t) for t in self.cpu_tables.values())
        assert sum(self.cpu_ref) == cpu_entries
        free = set(self._free)
        assert len(free) == len(self._free)
        evict = set(self._evictable)
        refd = {b for b in range(self.num_gpu_blocks) if self.ref[b] > 0}
        assert not (free & evict) and not (free & refd) and not (evict & refd)
        assert len(free) + len(evict) + len(refd) == self.num_gpu_blocks
        assert self.num_allocated == len(refd)
        assert self.used_slots == sum(self.fill[b] for b in refd)
        for s, t in self.tables.items():
            assert len(t) == self.blocks_for(self.num_tokens[s]), s
        assert len(self._cpu_free) + sum(1 for r in self.cpu_ref if r > 0) == self.num_cpu_blocks
