"""Beam search's fast paths equal the slow ones: a step's groups re-parented in one walk
(``PagedBlockManager.reparent_groups``) leave the same tables, ref counts, fills and free-list order as
``reparent`` group after group; whole runs are bit-identical with and without the scheduler's one-walk path."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kvsim.config import load_scenario
from kvsim.core.beam import choose_parents
from kvsim.core.block_manager import PagedBlockManager
from kvsim.core.kv_paged import PagedKV
from kvsim.sim import simulate


class _OwnRelease(PagedBlockManager):
    """A manager with its own ``_release`` (the same effect): the walk releases group by group through it."""

    def _release(self, b: int) -> None:
        PagedBlockManager._release(self, b)


def _state(m: PagedBlockManager):
    return (m.tables, m.num_tokens, m.ref, m.fill, m._free, list(m._evictable), m.num_allocated, m.used_slots)


@pytest.mark.parametrize("cls", [PagedBlockManager, _OwnRelease])
@pytest.mark.parametrize("prefix", [False, True])
@pytest.mark.parametrize("width", [2, 4, 5])
def test_reparent_groups_equals_reparent(cls, prefix, width):
    rng = np.random.default_rng(11)
    groups = 5
    one, walk = cls(600, 4, enable_prefix_caching=prefix), cls(600, 4, enable_prefix_caching=prefix)
    for m in (one, walk):
        for g in range(groups):
            first = g * width
            # shared prompt blocks across groups where prefix caching is on (the same hashes)
            m.allocate(first, 9 + g, [1, 2] if prefix else None)
            for s in range(1, width):
                m.share(first, first + s)
    ids = [list(range(g * width, (g + 1) * width)) for g in range(groups)]
    for step in range(80):
        plans = [choose_parents(rng, width, 0.4 if step % 3 else 0.9, 0.5) for _ in range(groups)]
        if step % 7 == 0:
            plans[1] = list(range(width))                   # a group whose beams all keep their history
        if step % 5 == 0:
            plans[2] = [int(x) for x in rng.integers(0, width, width)]     # unsorted parents
        for m in (one, walk):
            for g in ids:
                m.append_slots(g)
        for g, parents in zip(ids, plans):
            one.reparent(g, parents)
        walk.reparent_groups(ids, plans)
        assert _state(walk) == _state(one)
        walk.check_invariants()


@pytest.mark.parametrize("over", [{"workload.beam_width": 4}, {"workload.beam_width": 3, "workload.rate_req_s": 3.0},
                                  {"workload.beam_width": 4, "engine.enable_prefix_caching": True,
                                   "workload.prefix_len": 64}])
def test_beam_runs_equal_group_by_group(monkeypatch, over):
    """A whole run re-parenting a step's groups in one walk equals one with ``reparent`` group by group."""
    base = {"name": "b", "model": "opt-13b", "gpu": "a100-40gb", "engine": {"allocator": "paged", "block_size": 16},
            "workload": {"dataset": "sharegpt_like", "rate_req_s": 1.0, "num_requests": 120}, "seed": 3}
    import json
    sc = load_scenario(base, [f"{k}={json.dumps(v)}" for k, v in over.items()])
    fast = simulate(sc)
    monkeypatch.delattr(PagedKV, "reparent_groups")
    slow = simulate(sc)
    pd.testing.assert_frame_equal(fast.requests, slow.requests, check_exact=True)
    pd.testing.assert_frame_equal(fast.iterations, slow.iterations, check_exact=True)
    assert fast.summary == slow.summary
    assert fast.iterations.cow_copies.sum() > 0


class _OwnTake(PagedBlockManager):
    """A manager with its own ``_take_block`` (the same effect): appends take every block through it."""

    def _take_block(self) -> int:
        return PagedBlockManager._take_block(self)


@pytest.mark.parametrize("prefix", [False, True])
def test_inline_append_takes_equal_take_block(prefix):
    """``append_slots`` taking free blocks inline leaves the state ``_take_block`` leaves, through copy-on-write,
    new blocks and (prefix caching) evictions once the free list runs dry."""
    rng = np.random.default_rng(5)
    width, groups = 4, 4
    mgrs = [PagedBlockManager(64, 4, enable_prefix_caching=prefix), _OwnTake(64, 4, enable_prefix_caching=prefix)]
    for m in mgrs:
        for g in range(groups + 2):
            m.allocate(100 + g, 8, [g * 10 + 1, g * 10 + 2] if prefix else None)   # cached prompts ...
        for g in range(groups + 2):
            m.free(100 + g)                                  # ... evictable (prefix caching) or free
        for g in range(groups):
            first = g * width
            m.allocate(first, 9 + g)
            for s in range(1, width):
                m.share(first, first + s)
    ids = [list(range(g * width, (g + 1) * width)) for g in range(groups)]
    for step in range(40):
        plans = [choose_parents(rng, width, 0.4, 0.5) for _ in range(groups)]
        for g, parents in zip(ids, plans):
            if mgrs[0].blocks_to_append(g) > mgrs[0].num_free_blocks:
                break
            need, free0 = mgrs[0].blocks_to_append(g), mgrs[0].num_free_blocks
            assert need == _need_by_dict(mgrs[1], g)
            pairs = [m.append_slots(g) for m in mgrs]
            assert pairs[0] == pairs[1]
            assert free0 - mgrs[0].num_free_blocks == need
            for m in mgrs:
                m.reparent(g, parents)
        a, b = mgrs
        assert _state(a) == _state(b)
        a.check_invariants()


def _need_by_dict(m: PagedBlockManager, ids: list[int]) -> int:
    """``blocks_to_append`` as it was (every group through the count of each shared last block's sharers)."""
    need, left = 0, {}
    for s in ids:
        if m.num_tokens[s] % m.block_size == 0:
            need += 1
            continue
        b = m.tables[s][-1]
        r = left.get(b, m.ref[b])
        if r > 1:
            need += 1
            left[b] = r - 1
    return need


def test_blocks_to_append_private_last_blocks():
    """Forked groups (parallel sampling): the count where no partial last block is shared equals the general one,
    through the prompt's shared last block, block boundaries and a group appended out of step."""
    m = PagedBlockManager(400, 4)
    groups = [list(range(g * 4, g * 4 + 4)) for g in range(5)]
    for g, ids in enumerate(groups):
        m.allocate(ids[0], 5 + g)
        for s in ids[1:]:
            m.share(ids[0], s)
    for step in range(12):
        for g, ids in enumerate(groups):
            sub = ids if step % 3 else ids[: 1 + g % 4]     # some steps append part of a group only
            need = m.blocks_to_append(sub)
            assert need == _need_by_dict(m, sub)
            free0 = m.num_free_blocks
            m.append_slots(sub)
            assert free0 - m.num_free_blocks == need
        m.check_invariants()


def test_parent_codes_equal_parents():
    """``BeamParents.many_codes`` gives ``many``'s parents (as codes) from the same stream, calls of either kind
    interleaved, widths mixed and equal, and ``parents_of_code`` turns them back."""
    import numpy as np

    from kvsim.core.beam import BeamParents, choose_parents, parents_of_code
    rng = np.random.default_rng(4)
    buffered, b = BeamParents(np.random.default_rng(7), chunk=101), np.random.default_rng(7)
    for _ in range(300):
        k = 4 if rng.random() < 0.8 else int(rng.integers(2, 7))
        ks = [k] * int(rng.integers(1, 30)) if rng.random() < 0.9 else [k, 2, k]
        want = [choose_parents(b, x, 0.5, 0.5) for x in ks]
        if rng.random() < 0.5:
            got = [parents_of_code(c, x) for c, x in zip(buffered.many_codes(ks, 0.5, 0.5), ks)]
        else:
            got = buffered.many(ks, 0.5, 0.5)
        assert got == want
