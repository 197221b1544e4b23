"""The vLLM V1 block pool (kvsim.core.block_pool_v1): one free queue, tail-first frees, lazy eviction.

Constructed cases pin each rule; a hypothesis property runs random start / grow /
free sequences against an independent model of the free queue and the prefix
cache and checks, after every operation:

* ``check_invariants()`` and a recount of ref counts and fill from the tables;
* the free queue is exactly the model's: freed blocks join the tail in reverse
  table order (tail blocks first), new blocks come from the head;
* lazy eviction: a block keeps its hash while queued and loses it exactly when
  it is taken for new KV; a hit takes a queued block out of the queue;
* nothing is leaked: once every sequence is freed all blocks are queued, none referenced.
"""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvsim.core.block_pool_v1 import PagedBlockManagerV1
from kvsim.core.tokens import block_hashes
from tests.test_block_manager import make_tokens, recount

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def start(bm: PagedBlockManagerV1, seq: int, hashes: list[int], tokens: int) -> list[int]:
    hits = bm.lookup(hashes, tokens)
    bm.start(seq, hits, tokens - len(hits) * bm.block_size, hashes, tokens)
    return hits


def test_free_queue_is_fifo_and_frees_tail_first():
    bm = PagedBlockManagerV1(8, 2)
    bm.start(0, [], 6, None, 6)                     # blocks 0, 1, 2 from the head
    bm.start(1, [], 3, None, 3)                     # blocks 3, 4
    assert bm.tables == {0: [0, 1, 2], 1: [3, 4]}
    bm.free(0)
    assert list(bm._evictable) == [5, 6, 7, 2, 1, 0]   # tail block 2 queued first
    bm.start(2, [], 8, None, 8)
    assert bm.tables[2] == [5, 6, 7, 2]
    bm.check_invariants()


def test_lazy_eviction_keeps_freed_blocks_hittable_until_reused():
    bm = PagedBlockManagerV1(6, 2, enable_prefix_caching=True)
    h = block_hashes(np.arange(7, dtype=np.int32), 2)      # 3 full blocks
    start(bm, 0, h, 7)                              # blocks 0..3; 0, 1, 2 cached
    assert [bm._hash_of.get(b) for b in bm.tables[0][:3]] == h
    bm.free(0)
    assert list(bm._evictable) == [4, 5, 3, 2, 1, 0] and len(bm._block_of) == 3   # still cached
    assert start(bm, 1, h, 7) == [0, 1, 2]          # hits come back out of the queue
    assert list(bm._evictable) == [5, 3] and bm.tables[1] == [0, 1, 2, 4]
    bm.free(1)                                      # queue: 5, 3, 4, 2, 1, 0
    bm.start(2, [], 8, None, 8)                     # takes 5, 3, 4, then 2: only 2 loses its hash
    assert bm.tables[2] == [5, 3, 4, 2]
    assert set(bm._hash_of) == {0, 1} and bm.lookup(h, 7) == [0, 1]
    bm.check_invariants()


def test_tail_blocks_are_evicted_before_the_shared_head_blocks():
    bm = PagedBlockManagerV1(4, 2, enable_prefix_caching=True)
    h = block_hashes(np.arange(8, dtype=np.int32), 2)
    start(bm, 0, h, 8)                              # four cached blocks 0..3
    bm.free(0)
    bm.start(1, [], 2, None, 2)                     # one new block evicts the request's last block
    assert bm.tables[1] == [3] and bm.lookup(h, 8) == [0, 1, 2]


def test_blocks_to_start_counts_queued_hits():
    bm = PagedBlockManagerV1(6, 2, enable_prefix_caching=True)
    h = block_hashes(np.arange(6, dtype=np.int32), 2)
    start(bm, 0, h, 6)
    bm.free(0)
    hits = bm.lookup(h, 6)
    assert hits == [0, 1]
    assert bm.blocks_to_start(hits, 2) == 1 + 2     # one new block, two hits leave the queue
    free = bm.num_free_blocks
    bm.start(1, hits, 2, h, 6)
    assert free - bm.num_free_blocks == 3


# ------------------------------------------------------------------ property
OPS = st.lists(st.tuples(st.sampled_from(["start", "grow", "free"]), st.integers(0, 5), st.integers(0, 2),
                         st.integers(1, 30), st.integers(0, 30)), min_size=1, max_size=60)


@settings(max_examples=200, **SETTINGS)
@given(nblocks=st.integers(3, 30), bs=st.integers(1, 5), caching=st.booleans(), ops=OPS)
def test_random_operations_follow_the_v1_queue_model(nblocks, bs, caching, ops):
    bm = PagedBlockManagerV1(nblocks, bs, enable_prefix_caching=caching)
    queue = list(range(nblocks))            # the model: free queue, head first
    cached: dict[int, int] = {}             # the model: block -> hash
    hashes_of: dict[int, list[int]] = {}
    for op, seq, family, total, shared in ops:
        if op == "start" and seq not in bm.tables:
            hashes = block_hashes(make_tokens(family, shared, total, seq), bs)
            hits = bm.lookup(hashes, total)
            need = bm.blocks_to_start(hits, total - len(hits) * bs)
            if need > bm.num_free_blocks:
                continue
            for b in hits:
                assert cached[b] == hashes[hits.index(b)]
                if b in queue:
                    queue.remove(b)
            fresh = need - sum(1 for b in hits if bm.ref[b] == 0)
            taken, queue = queue[:fresh], queue[fresh:]
            for b in taken:
                cached.pop(b, None)                 # evicted exactly when reused
            bm.start(seq, hits, total - len(hits) * bs, hashes, total)
            hashes_of[seq] = hashes
            assert bm.tables[seq] == hits + taken
        elif op == "grow" and seq in bm.tables:
            extra = total % 7 + 1
            need = bm.blocks_to_grow(seq, extra)
            if need > bm.num_free_blocks:
                continue
            taken, queue = queue[:need], queue[need:]
            for b in taken:
                cached.pop(b, None)
            bm.grow(seq, extra, hashes_of[seq])
            assert bm.tables[seq][len(bm.tables[seq]) - need:] == taken
        elif op == "free" and seq in bm.tables:
            table = bm.tables[seq]
            after = [b for b in table if bm.ref[b] == 1]
            bm.free(seq)
            queue += [b for b in reversed(table) if b in after]
        cached.update({b: h for b, h in bm._hash_of.items() if b not in cached})
        bm.check_invariants()
        recount(bm)
        assert list(bm._evictable) == queue
        assert bm._hash_of == cached, "a cached block lost its hash before reuse"
        for s, t in bm.tables.items():           # only full, cached prompt blocks are ever shared
            for i, b in enumerate(t):
                if bm.ref[b] > 1:
                    assert bm.fill[b] == bs and b in bm._hash_of
                if b in bm._hash_of:                # cached under this very prompt block's chained hash
                    assert i < len(hashes_of[s]) and bm._hash_of[b] == hashes_of[s][i]
                    assert bm.fill[b] == bs
    for s in list(bm.tables):
        bm.free(s)
    assert bm.num_free_blocks == nblocks and bm.num_allocated == 0 and bm.used_slots == 0
    assert not any(bm.ref)
