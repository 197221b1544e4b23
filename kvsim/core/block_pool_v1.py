"""The vLLM V1 block pool: one free queue, tail-first frees, lazy prefix-cache eviction.

:class:`PagedBlockManagerV1` is the paged block manager with V1's free-block
order; everything else (block tables, ref counts, fill, the CPU side that V1
never uses) is :class:`~kvsim.core.block_manager.PagedBlockManager`'s.

* Every block with ref count 0 sits in **one** FIFO queue, cached or not
  (V0 keeps never-cached free blocks apart and evicts cached ones only when
  those run out). A new block is always the queue's head.
* Eviction is **lazy**: a freed block keeps its prefix-cache hash while it
  waits in the queue and can still be hit (a hit takes it out of the queue);
  the hash is dropped only when the block is reused for new KV.
* A finished or preempted request's blocks are released in **reverse** order
  (``PagedBlockManager.free`` already walks the table backwards), so its tail
  blocks enter the queue first and are evicted before its leading (most
  shareable) blocks.
* Allocation is incremental, as V1 schedules it: :meth:`start` takes the cache
  hits and the blocks for a first chunk, :meth:`grow` the blocks for each later
  chunk or decode token; a block is registered in the prefix cache as soon as
  the step that computes it fills it, generated tokens included (the caller's
  hashes cover the sequence's whole KV). No watermark.

The base class's ``_free`` list stays empty; the queue is its ``_evictable``
ordered dict (head = least recently freed), so the base invariants
(``check_invariants``) hold unchanged.
"""
from __future__ import annotations

from collections import OrderedDict

from kvsim.core.block_append import OUT_OF_BLOCKS
from kvsim.core.block_manager import PagedBlockManager


class PagedBlockManagerV1(PagedBlockManager):
    def __init__(self, num_gpu_blocks: int, block_size: int, enable_prefix_caching: bool = False):
        super().__init__(num_gpu_blocks, block_size, 0, 0.0, enable_prefix_caching)
        self._free = []
        self._evictable = OrderedDict.fromkeys(range(num_gpu_blocks))   # the free queue, head first

    # ------------------------------------------------------------ primitives
    def _take_block(self) -> int:
        """The queue's head; a cached block loses its hash only now (lazy eviction)."""
        if not self._evictable:
            raise RuntimeError(OUT_OF_BLOCKS)
        b, _ = self._evictable.popitem(last=False)
        h = self._hash_of.pop(b, None)
        if h is not None:
            del self._block_of[h]
        self.ref[b] = 1
        self.fill[b] = 0
        self.num_allocated += 1
        return b

    def _release(self, b: int) -> None:
        """A block whose last reference goes joins the queue's tail, keeping its hash."""
        r = self.ref[b] - 1
        self.ref[b] = r
        if r == 0:
            self.num_allocated -= 1
            self.used_slots -= self.fill[b]
            self._evictable[b] = None

    # ------------------------------------------------------------ allocation
    def lookup(self, hashes: list[int] | None, num_tokens: int) -> list[int]:
        """Cached blocks for the leading full blocks of a ``num_tokens``-token prefill (at least one
        token is left to compute). No state change."""
        if not (self.enable_prefix_caching and hashes):
            return []
        hits = []
        for h in hashes[:(num_tokens - 1) // self.block_size]:
            b = self._block_of.get(h)
            if b is None:
                break
            hits.append(b)
        return hits

    def blocks_to_start(self, hits: list[int], new_tokens: int) -> int:
        """Free-queue blocks :meth:`start` takes: new blocks plus cache hits sitting in the queue."""
        queued = sum(1 for b in hits if self.ref[b] == 0)
        return self.blocks_for(len(hits) * self.block_size + new_tokens) - len(hits) + queued

    def start(self, seq_id: int, hits: list[int], new_tokens: int, hashes: list[int] | None,
              lookup_tokens: int) -> None:
        """Give ``seq_id`` a table holding the ``hits`` (shared) and room for ``new_tokens`` more.

        ``lookup_tokens`` counts toward the prefix-cache statistics (tokens looked up)."""
        assert seq_id not in self.tables
        if self.enable_prefix_caching and hashes:
            self.prefix_queries_tokens += lookup_tokens
            self.prefix_hits_tokens += len(hits) * self.block_size
        for b in hits:
            if self.ref[b] == 0:
                del self._evictable[b]            # a hit takes a queued block back
                self.num_allocated += 1
                self.used_slots += self.fill[b]
            self.ref[b] += 1
        self.tables[seq_id] = list(hits)
        self.num_tokens[seq_id] = len(hits) * self.block_size
        self.grow(seq_id, new_tokens, hashes)

    def blocks_to_grow(self, seq_id: int, new_tokens: int) -> int:
        """New blocks :meth:`grow` takes."""
        return self.blocks_for(self.num_tokens[seq_id] + new_tokens) - len(self.tables[seq_id])

    def grow(self, seq_id: int, new_tokens: int, hashes: list[int] | None = None) -> None:
        """Add ``new_tokens`` slots to a resident sequence; blocks it fills are cached (``hashes[i]``).

        Invariant: never writes into a shared block (only full blocks are ever shared)."""
        bs = self.block_size
        table = self.tables[seq_id]
        n0 = self.num_tokens[seq_id]
        n1 = n0 + new_tokens
        assert n0 % bs == 0 or self.ref[table[-1]] == 1, "a partial block is shared"
        for _ in range(len(table), self.blocks_for(n1)):
            table.append(self._take_block())
        fill = self.fill
        for i in range(n0 // bs, self.blocks_for(n1)):
            fill[table[i]] = min(bs, n1 - i * bs)
        self.used_slots += new_tokens
        self.num_tokens[seq_id] = n1
        self.register(seq_id, n0, hashes)

    def register(self, seq_id: int, from_tokens: int, hashes: list[int] | None) -> None:
        """Cache the sequence's blocks that filled up since it held ``from_tokens`` slots (``hashes[i]``
        names block ``i``); a hash already cached keeps its block."""
        if not (self.enable_prefix_caching and hashes):
            return
        table = self.tables[seq_id]
        for i in range(from_tokens // self.block_size, min(self.num_tokens[seq_id] // self.block_size, len(hashes))):
            b, h = table[i], hashes[i]
            if h not in self._block_of and b not in self._hash_of:
                self._block_of[h] = b
                self._hash_of[b] = h

    def check_invariants(self) -> None:
        """The base invariants, plus: every registered hash names a block and back."""
        super().check_invariants()
        assert not self._free
        assert all(self._block_of[h] == b for b, h in self._hash_of.items())
        assert len(self._block_of) == len(self._hash_of)
