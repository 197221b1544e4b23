"""A group's swap-out, swap-in and free taken a group at a time (:mod:`kvsim.core.block_group`: ``_group_swap_out``,
``_group_swap_in``, ``release_tables`` through ``PagedKV.free_group``) equal the entry-by-entry walks they replace.

Two ``PagedKV`` run the same random operations on parallel-sampling groups (a prompt shared by every sequence,
copy-on-write at the first append, private blocks after; now and then a sequence forked from another group, so
some groups do not hold every reference to their blocks): one with the plain block manager (group paths), one with
a manager whose ``_take_block`` and ``_release`` are its own (the walks). After every operation both are in the same
state (tables, refs, fills, free-list orders, counters) and returned the same pairs; the group paths must have been
taken, and the fallback too.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from kvsim.core.block_manager import PagedBlockManager
from kvsim.core.kv_paged import PagedKV


class _Walking(PagedBlockManager):
    """The manager with its own (identical) take and release: swaps and frees walk entry by entry."""

    def _take_block(self) -> int:
        return super()._take_block()

    def _release(self, b: int) -> None:
        super()._release(b)


class _Counting(PagedBlockManager):
    """The plain manager, counting the group paths taken."""

    hits = {"out": 0, "in": 0, "out_fallback": 0}

    def _group_swap_out(self, seq_ids):
        got = super()._group_swap_out(seq_ids)
        self.hits["out" if got is not None else "out_fallback"] += 1
        return got

    def _group_swap_in(self, seq_ids):
        got = super()._group_swap_in(seq_ids)
        self.hits["in"] += got is not None
        return got


def _state(bm: PagedBlockManager) -> tuple:
    return (bm.tables, list(bm.tables), bm.num_tokens, bm.ref, bm.fill, bm._free, bm.used_slots, bm.num_allocated,
            bm.cpu_tables, list(bm.cpu_tables), bm.cpu_num_tokens, bm.cpu_ref, bm._cpu_free, bm.cpu_fill)


def _kv(cls, gpu: int, cpu: int, bs: int) -> PagedKV:
    kv = PagedKV(gpu, bs, cpu, watermark=0.0)
    kv.bm = cls(gpu, bs, cpu, watermark=0.0)
    return kv


@pytest.mark.parametrize("seed", range(12))
def test_group_swaps_and_frees_equal_the_walks(seed):
    rng = np.random.default_rng([seed, 14])
    bs = int(rng.integers(1, 9))
    gpu, cpu = int(rng.integers(20, 120)), int(rng.integers(0, 80))
    _Counting.hits = {"out": 0, "in": 0, "out_fallback": 0}
    a, b = _kv(_Counting, gpu, cpu, bs), _kv(_Walking, gpu, cpu, bs)
    resident, swapped = [], []
    next_seq = 0
    for _ in range(300):
        op = rng.choice(["admit", "append", "fork", "swap_out", "swap_in", "free"])
        if op == "admit":
            n, p = int(rng.integers(1, 5)), int(rng.integers(1, 6 * bs))
            if -(-p // bs) > a.free_blocks():
                continue
            ids = list(range(next_seq, next_seq + n))
            next_seq += n
            for kv in (a, b):
                kv.bm.allocate(ids[0], p)
                for s in ids[1:]:
                    kv.bm.share(ids[0], s)
            resident.append(SimpleNamespace(group_id=ids[0], seq_ids=ids))
        elif op == "append" and resident:
            g = resident[int(rng.integers(len(resident)))]
            for _ in range(int(rng.integers(1, 3 * bs))):
                if a.append_need(g) > a.free_blocks():
                    break
                assert a.append(g) == b.append(g)
        elif op == "fork" and resident:          # a sequence of its own sharing another group's blocks
            src = resident[int(rng.integers(len(resident)))].seq_ids[-1]
            for kv in (a, b):
                kv.bm.share(src, next_seq)
            resident.append(SimpleNamespace(group_id=next_seq, seq_ids=[next_seq]))
            next_seq += 1
        elif op == "swap_out" and resident:
            g = resident[int(rng.integers(len(resident)))]
            if not a.can_swap_out(g):
                continue
            assert a.swap_out(g) == b.swap_out(g)
            resident.remove(g)
            swapped.append(g)
        elif op == "swap_in" and swapped:
            g = swapped[int(rng.integers(len(swapped)))]
            if a.bm.blocks_to_swap_in(g.seq_ids) > a.free_blocks():
                continue
            assert a.swap_in(g) == b.swap_in(g)
            swapped.remove(g)
            resident.append(g)
        elif op == "free" and (resident or swapped):
            pool = resident if resident and (not swapped or rng.random() < 0.7) else swapped
            g = pool.pop(int(rng.integers(len(pool))))
            a.free_group(g)
            b.free_group(g)
        assert _state(a.bm) == _state(b.bm), f"diverged after {op}"
        a.check_invariants()
    for g in resident + swapped:
        a.free_group(g)
        b.free_group(g)
    assert _state(a.bm) == _state(b.bm)
    a.check_empty()


def test_group_paths_taken():
    """Over the seeds above the group paths are taken, and so is the fallback (a group not holding every
    reference): the equality test checks both."""
    total = {"out": 0, "in": 0, "out_fallback": 0}
    for seed in range(12):
        test_group_swaps_and_frees_equal_the_walks(seed)
        for k, v in _Counting.hits.items():
            total[k] += v
    assert total["out"] > 20 and total["in"] > 20 and total["out_fallback"] > 0, total
