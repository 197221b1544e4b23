"""Shortcuts on the stepped path must not change any simulation result.

Multi-sequence groups (beam search, parallel sampling) are stepped one
iteration at a time through a few shortcuts: the memory split counts a group
whose sequences all hold the same number of slots once (times its width);
beam re-parenting releases dropped blocks inline instead of through
``_release``; a decode step with a free block per decoding sequence skips
asking each group's ``append_need`` (``PagedKV.append_blocks_per_seq``); a
swapped group's swap-in need is counted once while it stays swapped. Each
scenario is run with the shortcuts and with their plain versions (the
per-sequence split as it was, a block manager whose ``_release`` is its own,
which takes the generic path, every group's need asked, the swap-in need
counted at every ask); the per-request and per-iteration records and the
summaries must be exactly equal. The inlined release is also checked on the
block manager's state directly (block ids and free-list order do not show in
the records).
"""
from __future__ import annotations


import pandas as pd
import pytest

from tests._scenarios import overridden
from kvsim.core.block_manager import AllocStatus, PagedBlockManager
from kvsim.core.kv import MemorySplit
from kvsim.core.kv_paged import PagedKV
from kvsim.sim import simulate

BASE = {
    "model": "opt-13b", "gpu": "a100-40gb",
    "engine": {"allocator": "paged", "block_size": 16, "gpu_memory_utilization": 0.7, "swap_space_gib": 4},
    "workload": {"dataset": "sharegpt", "rate_req_s": 3.0, "num_requests": 60},
    "seed": 0,
}


def scenario(engine=None, workload=None):
    return overridden(BASE, engine, workload)


CASES = {
    "beam4": scenario(workload={"beam_width": 4}),
    "beam3_prefix": scenario(engine={"enable_prefix_caching": True},
                             workload={"beam_width": 3, "prefix_len": 64, "num_prefixes": 2}),
    "n4_swap": scenario(engine={"num_gpu_blocks": 600, "num_cpu_blocks": 3000}, workload={"n": 4}),
}


def _memory_split_per_seq(self, running):
    """PagedKV.memory_split one sequence at a time (the split before the per-group shortcut)."""
    bm, bs = self.bm, self.block_size
    alloc = bm.num_allocated * bs
    internal = logical = 0
    for g in running:
        final = g.spec.prompt_len + g.spec.output_len - 1
        for sid in g.seq_ids:
            n = bm.num_tokens.get(sid)
            if n is None:
                continue
            cap = -(-n // bs) * bs
            logical += cap
            if cap > final:
                internal += cap - max(final, n)
    internal = min(internal, alloc - bm.used_slots)
    reserved = alloc - bm.used_slots - internal
    return MemorySplit(bm.used_slots, internal, reserved, 0, self.capacity_slots - alloc, logical)


def _can_swap_in_counted(self, group) -> bool:
    """PagedKV.can_swap_in counting the blocks at every ask (not kept while the group is swapped)."""
    ids = group.seq_ids
    need = self.bm.blocks_to_swap_in(ids) + self.bm.blocks_to_append(ids, swapped=True)
    return self.bm.can_allocate(need) == AllocStatus.OK


class _OwnRelease(PagedBlockManager):
    """A block manager with its own (identical) ``_release``: frees and re-parents take the generic path."""

    def _release(self, b: int) -> None:
        super()._release(b)


@pytest.mark.parametrize("name", sorted(CASES))
def test_stepped_shortcuts_equal_plain_versions(name, monkeypatch):
    sc = CASES[name]
    fast = simulate(sc, fast_forward=False)
    monkeypatch.setattr(PagedKV, "memory_split", _memory_split_per_seq)
    monkeypatch.setattr(PagedKV, "append_blocks_per_seq", None)     # ask every group's append_need
    monkeypatch.setattr(PagedKV, "can_swap_in", _can_swap_in_counted)
    monkeypatch.setattr("kvsim.core.kv_paged.PagedBlockManager", _OwnRelease)
    plain = simulate(sc, fast_forward=False)
    pd.testing.assert_frame_equal(fast.requests, plain.requests, check_exact=True)
    pd.testing.assert_frame_equal(fast.iterations, plain.iterations, check_exact=True)
    assert fast.summary == plain.summary
    its = fast.iterations
    assert its.cow_copies.sum() > 0 and (its.decode_seqs > its.batched_requests).any()
    if name.startswith("n4"):
        assert fast.summary["preemptions_swap"] > 0


@pytest.mark.parametrize("prefix", [False, True])
def test_inline_reparent_release_equals_release(prefix):
    """Re-parenting with the inlined release leaves the same blocks, counts and free-list order as ``_release``."""
    import numpy as np

    from kvsim.core.beam import choose_parents
    rng = np.random.default_rng(7)
    mgrs = [PagedBlockManager(400, 4, enable_prefix_caching=prefix), _OwnRelease(400, 4, enable_prefix_caching=prefix)]
    width = 4
    for m in mgrs:
        for g in range(3):                                  # three beam groups of 4, prompts of 9 slots
            first = g * width
            m.allocate(first, 9, [g * 100 + 1, g * 100 + 2] if prefix else None)
            for s in range(1, width):
                m.share(first, first + s)
    for step in range(60):
        plans = [choose_parents(rng, width, 0.4, 0.5) for _ in range(3)]
        for m in mgrs:
            for g, parents in enumerate(plans):
                ids = list(range(g * width, (g + 1) * width))
                assert m.blocks_to_append(ids) <= len(ids)      # PagedKV.append_blocks_per_seq
                m.append_slots(ids)
                m.reparent(ids, parents)
        a, b = mgrs
        assert a.tables == b.tables and a.num_tokens == b.num_tokens
        assert a.ref == b.ref and a.fill == b.fill and a._free == b._free
        assert list(a._evictable) == list(b._evictable)
        assert (a.num_allocated, a.used_slots) == (b.num_allocated, b.used_slots)
        a.check_invariants()
