"""Property tests for kvsim.core.block_manager.PagedBlockManager.

Random operation sequences (allocate with/without prefix-cache hashes, share,
append_slot, reparent, free, swap_out/swap_in, bulk append) are run on two
managers at once: every operation is applied identically to both, except the
bulk append, which manager A does with ``append_slots_bulk`` and manager B with
``k`` rounds of ``append_slot``, and the swaps, which manager B does with the
plain one-block-at-a-time reference below (A's have bulk paths). Manager B also
takes each new block with its own ``_take_block`` call (:class:`OneBlockAtATime`),
so A's inlined takes (``allocate`` evicting cached blocks) meet the per-block path. After every operation we check

* ``check_invariants()`` and an independent recount of the reference counts
  from the block tables (ref[b] == number of table entries naming b);
* the two managers are in exactly the same state (tables, fill, refs, free
  list order, evictable LRU order, prefix-cache maps);
* copy-on-write never writes into a shared block (checked around each append);
* swap_out/swap_in preserve lengths, table lengths and the sharing structure;
* once every sequence is freed, every GPU and CPU block is free.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kvsim.core.block_manager import AllocStatus, PagedBlockManager
from kvsim.core.request import RequestSpec
from kvsim.core.tokens import block_hashes, synthetic_prompt_tokens

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------- helpers
def recount(bm: PagedBlockManager) -> None:
    """Ref counts recomputed from the tables, independent of check_invariants."""
    gpu = Counter(b for t in bm.tables.values() for b in t)
    assert all(bm.ref[b] == gpu.get(b, 0) for b in range(bm.num_gpu_blocks)), "GPU ref != table entries"
    assert sum(bm.ref) == sum(len(t) for t in bm.tables.values())
    cpu = Counter(c for t in bm.cpu_tables.values() for c in t)
    assert all(bm.cpu_ref[c] == cpu.get(c, 0) for c in range(bm.num_cpu_blocks)), "CPU ref != table entries"
    assert sum(bm.cpu_ref) == sum(len(t) for t in bm.cpu_tables.values())
    # a block's fill is the same for every sequence that shares it: full, or the remainder if last
    for s, t in bm.tables.items():
        n = bm.num_tokens[s]
        assert len(t) == -(-n // bm.block_size)
        for i, b in enumerate(t):
            assert bm.fill[b] == min(bm.block_size, n - i * bm.block_size), (s, i, b)


class OneBlockAtATime(PagedBlockManager):
    """The manager with ``_take_block`` its own: every block is taken by one call, as the inlined paths
    (``allocate`` and ``append_slots_bulk`` past the free list) must equal."""

    def _take_block(self) -> int:
        return super()._take_block()


def check(bm: PagedBlockManager) -> None:
    bm.check_invariants()
    recount(bm)


def state(bm: PagedBlockManager) -> tuple:
    return (bm.tables, bm.num_tokens, bm.ref, bm.fill, bm._free, list(bm._evictable), bm._hash_of,
            bm._block_of, bm.used_slots, bm.num_allocated, bm.cpu_tables, bm.cpu_num_tokens,
            bm.cpu_ref, bm._cpu_free, bm.cpu_fill)


def structure(tables: list[list[int]]) -> list[list[int]]:
    """Sharing structure of a list of tables, independent of physical block ids."""
    label: dict[int, int] = {}
    return [[label.setdefault(b, len(label)) for b in t] for t in tables]


def checked_append(bm: PagedBlockManager, s: int):
    """append_slot with the copy-on-write contract checked around it."""
    bs = bm.block_size
    n = bm.num_tokens[s]
    old_last = bm.tables[s][-1] if bm.tables[s] else None
    old_ref = bm.ref[old_last] if old_last is not None else None
    old_fill = bm.fill[old_last] if old_last is not None else None
    in_tables = {b for t in bm.tables.values() for b in t}
    need = bm.slots_needed(s)
    free_before = bm.num_free_blocks
    cow = bm.append_slot(s)
    last = bm.tables[s][-1]
    assert bm.ref[last] == 1, "append wrote into a shared block"
    assert bm.num_tokens[s] == n + 1
    assert free_before - bm.num_free_blocks == need
    if n % bs == 0:
        assert cow is None
        assert last not in in_tables and bm.fill[last] == 1
    elif old_ref > 1:
        assert cow == (old_last, last)
        assert bm.ref[old_last] == old_ref - 1 >= 1, "COW source must stay referenced by someone else"
        assert last not in in_tables, "COW destination must be fresh"
        assert bm.fill[last] == old_fill + 1
    else:
        assert cow is None and last == old_last and bm.fill[last] == old_fill + 1
    return cow


# A small pool of prompt families: prompts of one family share their first tokens.
FAMILIES = [np.random.default_rng([7, f]).integers(0, 1000, 64, dtype=np.int32) for f in range(3)]


def make_tokens(family: int, shared: int, total: int, salt: int) -> np.ndarray:
    tail = np.random.default_rng([11, salt]).integers(1000, 2000, max(0, total - shared), dtype=np.int32)
    return np.concatenate([FAMILIES[family][:min(shared, total)], tail])[:total]


def reference_swap_out(bm: PagedBlockManager, seq_ids: list[int]) -> list[tuple[int, int]]:
    """swap_out one block at a time: each distinct block takes the next CPU block at its first sight; each
    sequence's GPU blocks are released last block first, after its CPU table is made."""
    mapping: dict[int, int] = {}
    for s in seq_ids:
        table, n = bm.tables.pop(s), bm.num_tokens.pop(s)
        cpu_table = []
        for b in table:
            if b not in mapping:
                mapping[b] = bm._cpu_free.pop()
                bm.cpu_fill[mapping[b]] = bm.fill[b]
            bm.cpu_ref[mapping[b]] += 1
            cpu_table.append(mapping[b])
        for b in reversed(table):
            bm._release(b)
        bm.cpu_tables[s], bm.cpu_num_tokens[s] = cpu_table, n
    return list(mapping.items())


def reference_swap_in(bm: PagedBlockManager, seq_ids: list[int]) -> list[tuple[int, int]]:
    """swap_in one block at a time (the inverse of :func:`reference_swap_out`)."""
    mapping: dict[int, int] = {}
    for s in seq_ids:
        table = []
        for c in bm.cpu_tables.pop(s):
            if c not in mapping:
                mapping[c] = b = bm._take_block()
                bm.fill[b] = bm.cpu_fill[c]
                bm.used_slots += bm.fill[b]
            else:
                bm.ref[mapping[c]] += 1
            table.append(mapping[c])
            bm.cpu_ref[c] -= 1
            if bm.cpu_ref[c] == 0:
                bm._cpu_free.append(c)
        bm.tables[s], bm.num_tokens[s] = table, bm.cpu_num_tokens.pop(s)
    return list(mapping.items())


# ------------------------------------------------------------ the big property
@st.composite
def configs(draw):
    return dict(num_gpu_blocks=draw(st.integers(4, 40)), block_size=draw(st.integers(1, 6)),
                num_cpu_blocks=draw(st.integers(0, 30)), enable_prefix_caching=draw(st.booleans()))


@settings(max_examples=250, **SETTINGS)
@given(cfg=configs(), data=st.data())
def test_random_operations_keep_invariants(cfg, data):
    a = PagedBlockManager(watermark=0.0, **cfg)
    b = OneBlockAtATime(watermark=0.0, **cfg)
    bs = cfg["block_size"]
    next_id = 0
    swapped_units: list[tuple[list[int], list[int], list[list[int]]]] = []   # (seqs, lens, structure)
    num_ops = data.draw(st.integers(1, 60))
    for _ in range(num_ops):
        gpu = sorted(a.tables)
        ops = ["allocate"]
        if gpu:
            ops += ["share", "append", "append", "reparent", "free", "swap_out", "bulk"]
        if swapped_units:
            ops += ["swap_in", "free_swapped"]
        op = data.draw(st.sampled_from(ops))
        if op == "allocate":
            n = data.draw(st.integers(1, 5 * bs + 3))
            hashes = None
            if data.draw(st.booleans()):
                toks = make_tokens(data.draw(st.integers(0, 2)), data.draw(st.integers(0, 64)), n,
                                   data.draw(st.integers(0, 3)))
                hashes = block_hashes(toks, bs)
            if a.blocks_for(n) > a.num_free_blocks:
                continue
            assert a.can_allocate(a.blocks_for(n)) == AllocStatus.OK
            ca = a.allocate(next_id, n, hashes)
            cb = b.allocate(next_id, n, hashes)
            assert ca == cb and 0 <= ca < n and ca % bs == 0
            if not cfg["enable_prefix_caching"] or hashes is None:
                assert ca == 0
            elif ca:
                event("prefix hit")
            assert len(a.tables[next_id]) == a.blocks_for(n)
            next_id += 1
        elif op == "share":
            src = data.draw(st.sampled_from(gpu))
            a.share(src, next_id)
            b.share(src, next_id)
            assert a.tables[next_id] == a.tables[src]
            next_id += 1
        elif op == "append":
            s = data.draw(st.sampled_from(gpu))
            if a.slots_needed(s) > a.num_free_blocks:
                continue
            ca = checked_append(a, s)
            cb = b.append_slot(s)
            assert ca == cb
            if ca is not None:
                event("cow")
        elif op == "reparent":
            seqs = data.draw(st.lists(st.sampled_from(gpu), min_size=1, max_size=4, unique=True))
            parents = data.draw(st.lists(st.integers(0, len(seqs) - 1), min_size=len(seqs),
                                         max_size=len(seqs)))
            before = {s: (list(a.tables[s]), a.num_tokens[s]) for s in seqs}
            a.reparent(seqs, parents)
            b.reparent(seqs, parents)
            for s, p in zip(seqs, parents):
                assert (a.tables[s], a.num_tokens[s]) == before[seqs[p]]
        elif op == "free":
            s = data.draw(st.sampled_from(gpu))
            a.free(s)
            b.free(s)
            assert s not in a.tables
        elif op == "swap_out":
            seqs = data.draw(st.lists(st.sampled_from(gpu), min_size=1, max_size=4, unique=True))
            if not a.can_swap_out(seqs):
                continue
            lens = [a.num_tokens[s] for s in seqs]
            struct = structure([a.tables[s] for s in seqs])
            unique = len({x for s in seqs for x in a.tables[s]})
            pa = a.swap_out(seqs)
            pb = reference_swap_out(b, seqs)
            assert pa == pb and len(pa) == unique, "each shared GPU block is copied exactly once"
            assert len({g for g, _ in pa}) == len({c for _, c in pa}) == unique
            for s, n in zip(seqs, lens):
                assert s not in a.tables and a.cpu_num_tokens[s] == n
            assert structure([a.cpu_tables[s] for s in seqs]) == struct
            swapped_units.append((seqs, lens, struct))
            event("swap_out")
        elif op == "swap_in":
            i = data.draw(st.integers(0, len(swapped_units) - 1))
            seqs, lens, struct = swapped_units[i]
            if a.blocks_to_swap_in(seqs) > a.num_free_blocks:
                continue
            swapped_units.pop(i)
            event("swap_in")
            pa = a.swap_in(seqs)
            pb = reference_swap_in(b, seqs)
            assert pa == pb
            for s, n in zip(seqs, lens):
                assert s not in a.cpu_tables
                assert a.num_tokens[s] == n and len(a.tables[s]) == a.blocks_for(n)
            assert structure([a.tables[s] for s in seqs]) == struct
            for s in seqs:   # swapped-in blocks are private to the unit
                for x in a.tables[s]:
                    assert a.ref[x] == sum(t.count(x) for t in (a.tables[q] for q in seqs))
        elif op == "free_swapped":
            seqs, _, _ = swapped_units.pop(data.draw(st.integers(0, len(swapped_units) - 1)))
            for s in seqs:
                a.free(s)
                b.free(s)
        elif op == "bulk":
            seqs = data.draw(st.lists(st.sampled_from(gpu), min_size=1, max_size=5, unique=True))
            # precondition of the bulk path: no last block is a shared partial block
            if any(a.num_tokens[s] % bs and a.ref[a.tables[s][-1]] > 1 for s in seqs):
                continue
            k = data.draw(st.integers(1, 3 * bs + 2))
            need = sum(a.blocks_for(a.num_tokens[s] + k) - len(a.tables[s]) for s in seqs)
            if need > a.num_free_blocks:
                continue
            if a._evictable:
                event("bulk with evictable blocks")
            a.append_slots_bulk(seqs, k)
            for _ in range(k):
                for s in seqs:
                    assert b.append_slot(s) is None
            event("bulk")
        check(a)
        check(b)
        assert state(a) == state(b), f"managers diverged after {op}"

    # free everything: every block must be free again
    for seqs, _, _ in swapped_units:
        for s in seqs:
            a.free(s)
    for s in list(a.tables) + list(a.cpu_tables):
        a.free(s)
        check(a)
    assert not a.tables and not a.cpu_tables
    assert a.num_free_blocks == a.num_gpu_blocks
    assert a.num_allocated == 0 and a.used_slots == 0
    assert a.num_free_cpu_blocks == a.num_cpu_blocks
    if not cfg["enable_prefix_caching"]:
        assert len(a._free) == a.num_gpu_blocks


# ------------------------------------------------------- targeted properties
def test_cow_on_shared_partial_block():
    bm = PagedBlockManager(8, 4)
    bm.allocate(0, 6)             # blocks: [full, partial(2)]
    bm.share(0, 1)
    bm.share(0, 2)
    src = bm.tables[0][-1]
    cow = checked_append(bm, 1)
    assert cow is not None and cow[0] == src and bm.ref[src] == 2
    cow2 = checked_append(bm, 2)
    assert cow2 is not None and cow2[0] == src and bm.ref[src] == 1
    assert checked_append(bm, 0) is None           # now private: written in place
    assert bm.tables[0][-1] == src
    assert bm.tables[0][0] == bm.tables[1][0] == bm.tables[2][0] and bm.ref[bm.tables[0][0]] == 3
    check(bm)


def test_swap_round_trip_keeps_sharing_deterministic():
    bm = PagedBlockManager(16, 4, num_cpu_blocks=16)
    bm.allocate(0, 9)
    bm.share(0, 1)
    bm.append_slot(1)            # COW of the partial block
    bm.share(1, 2)
    for _ in range(5):
        bm.append_slot(2)
    seqs = [0, 1, 2]
    struct = structure([bm.tables[s] for s in seqs])
    lens = [bm.num_tokens[s] for s in seqs]
    pairs = bm.swap_out(seqs)
    assert len(pairs) == len({b for t in struct for b in t})
    assert bm.num_free_blocks == 16
    bm.allocate(99, 5)           # scramble the free list
    bm.swap_in(seqs)
    bm.free(99)
    assert [bm.num_tokens[s] for s in seqs] == lens
    assert structure([bm.tables[s] for s in seqs]) == struct
    check(bm)


@settings(max_examples=60, **SETTINGS)
@given(bs=st.integers(1, 8), common_blocks=st.integers(0, 6), extra1=st.integers(0, 20),
       extra2=st.integers(0, 20), diverge=st.booleans())
def test_prefix_cache_shares_common_full_blocks(bs, common_blocks, extra1, extra2, diverge):
    common = FAMILIES[0][: common_blocks * bs]
    t1 = np.concatenate([common, np.full(extra1, 5000, np.int32)])
    t2 = np.concatenate([common, np.full(extra2, 6000 if diverge else 5000, np.int32)])
    if len(t1) == 0 or len(t2) == 0:
        return
    bm = PagedBlockManager(200, bs, enable_prefix_caching=True, watermark=0.0)
    h1, h2 = block_hashes(t1, bs), block_hashes(t2, bs)
    assert bm.allocate(0, len(t1), h1) == 0
    # how many leading full blocks the two prompts really have in common
    same = 0
    while (same + 1) * bs <= min(len(t1), len(t2)) and np.array_equal(
            t1[: (same + 1) * bs], t2[: (same + 1) * bs]):
        same += 1
    registered = len(h1)                    # every full block of prompt 1 was registered
    expect = min(same, registered, (len(t2) - 1) // bs)
    cached = bm.allocate(1, len(t2), h2)
    assert cached == expect * bs
    assert cached < len(t2), "at least one token must be left to compute"
    assert bm.tables[1][:expect] == bm.tables[0][:expect]
    assert not set(bm.tables[1][expect:]) & set(bm.tables[0])
    check(bm)
    # after both are freed, the cached blocks survive as evictable and are hit again
    bm.free(0)
    bm.free(1)
    assert bm.num_free_blocks == 200 and bm.num_allocated == 0
    again = bm.allocate(2, len(t1), h1)
    assert again == min(registered, (len(t1) - 1) // bs) * bs
    check(bm)


def test_prefix_cache_with_request_specs_and_eviction():
    bs = 4
    specs = [RequestSpec(i, 0.0, prompt_len=30, output_len=4, prefix_id=0, prefix_len=17) for i in range(2)]
    toks = [synthetic_prompt_tokens(s) for s in specs]
    assert np.array_equal(toks[0][:17], toks[1][:17]) and not np.array_equal(toks[0], toks[1])
    hashes = [block_hashes(t, bs) for t in toks]
    bm = PagedBlockManager(20, bs, enable_prefix_caching=True, watermark=0.0)
    bm.allocate(0, 30, hashes[0])
    assert bm.allocate(1, 30, hashes[1]) == 16        # 17 // 4 == 4 full shared blocks
    assert bm.tables[0][:4] == bm.tables[1][:4] and bm.tables[0][4] != bm.tables[1][4]
    # an identical prompt is served from the cache except its last block
    bm.allocate(2, 28, hashes[0][:7])
    assert bm.tables[2][:6] == bm.tables[0][:6] and bm.tables[2][6] not in bm.tables[0]
    check(bm)
    for s in (0, 1, 2):
        bm.free(s)
    assert bm.num_free_blocks == 20 and len(bm._evictable) > 0
    # filling the GPU evicts every cached block; the cache then misses
    bm.allocate(3, 20 * bs)
    assert not bm._evictable and not bm._block_of
    bm.free(3)
    assert bm.allocate(4, 30, hashes[0]) == 0
    check(bm)


def test_bulk_append_matches_stepping_with_evictable_blocks():
    for bs in (1, 3, 4):
        k = 7 * bs + 2
        order = [2, 1, 3]

        def build(total):
            m = PagedBlockManager(total, bs, enable_prefix_caching=True, watermark=0.0)
            m.allocate(0, 5 * bs, block_hashes(make_tokens(1, 64, 5 * bs, 0), bs))
            m.free(0)                                  # 5 evictable cached blocks (LRU order)
            m.allocate(1, 2 * bs + 1)
            m.allocate(2, 3 * bs)
            m.allocate(3, 1)
            return m

        probe = build(100)
        need = sum(probe.blocks_for(probe.num_tokens[s] + k) - len(probe.tables[s]) for s in order)
        total = probe.num_allocated + 5 + need - 2     # the bulk append must evict 2 cached blocks
        mgrs = [build(total), build(total)]
        assert len(mgrs[0]._evictable) == 5 and need > len(mgrs[0]._free)
        one = build(total)
        one.__class__ = OneBlockAtATime                # the same bulk append, each block taken by one call
        one.append_slots_bulk(order, k)
        mgrs[0].append_slots_bulk(order, k)
        for _ in range(k):
            for s in order:
                assert mgrs[1].append_slot(s) is None
        assert state(mgrs[0]) == state(mgrs[1]) == state(one)
        assert len(mgrs[0]._evictable) == 3
        check(mgrs[0])


def test_check_invariants_detects_corruption():
    bm = PagedBlockManager(8, 4)
    bm.allocate(0, 5)
    bm.ref[bm.tables[0][0]] += 1
    with pytest.raises(AssertionError):
        bm.check_invariants()


@pytest.mark.parametrize("prefix_len,prompt_len,bs", [(128, 300, 16), (100, 100, 16), (7, 40, 16), (0, 50, 16),
                                                      (64, 65, 1), (40, 33, 16), (32, 32, 16), (48, 200, 32)])
def test_prompt_block_hashes_share_as_the_tokens_do(prefix_len, prompt_len, bs):
    """Prompts' block hashes (drawn without tokens) agree up to block i exactly when hashing their tokens
    does, i.e. when the tokens up to the end of block i are equal: across requests with the same prefix, another
    prefix, none, and the same request again (recompute, children)."""
    from kvsim.core.request import RequestSpec
    from kvsim.core.tokens import block_hashes, prompt_block_hashes, synthetic_prompt_tokens
    specs = [RequestSpec(rid, 0.0, prompt_len + extra, 10, prefix_id=pid if prefix_len else -1,
                         prefix_len=prefix_len if pid >= 0 else 0)
             for rid, pid, extra in ((1, 3, 0), (2, 3, 0), (3, 3, 17), (4, 5, 0), (5, -1, 0), (1, 3, 0))]
    if prefix_len > prompt_len:
        with pytest.raises(ValueError):
            synthetic_prompt_tokens(specs[0])
        with pytest.raises(ValueError):
            prompt_block_hashes(specs[0], bs)
        return
    toks = [synthetic_prompt_tokens(s) for s in specs]
    fast = [prompt_block_hashes(s, bs) for s in specs]
    slow = [block_hashes(t, bs) for t in toks]
    for f, t in zip(fast, toks):
        assert len(f) == len(t) // bs
    shared_somewhere = False
    for a in range(len(specs)):
        for b in range(len(specs)):
            for i in range(min(len(fast[a]), len(fast[b]))):
                same_tokens = np.array_equal(toks[a][:(i + 1) * bs], toks[b][:(i + 1) * bs])
                assert (fast[a][i] == fast[b][i]) == same_tokens == (slow[a][i] == slow[b][i]), (a, b, i)
                shared_somewhere |= same_tokens and specs[a].request_id != specs[b].request_id
    assert shared_somewhere == (prefix_len >= bs)      # the prefix's full blocks are shared across requests