"""Tests for kvsim.core.address_space: first-fit and buddy placement of contiguous reservations."""
from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvsim.core.address_space import (
    AddressSpace,
    BuddySpace,
    FirstFitSpace,
    SpaceConfigError,
    make_space,
)
from kvsim.errors import KvsimError


# -- a slot-by-slot reference model of first fit -------------------------------------------
class RefFirstFit:
    def __init__(self, cap: int):
        self.used = np.zeros(cap, dtype=bool)
        self.sizes: dict[int, int] = {}

    def runs(self) -> list[tuple[int, int]]:
        out, start = [], None
        for i, u in enumerate(list(self.used) + [True]):
            if not u and start is None:
                start = i
            elif u and start is not None:
                out.append((start, i - start))
                start = None
        return out

    def alloc(self, size: int):
        for off, n in self.runs():
            if n >= size:
                self.used[off:off + size] = True
                self.sizes[off] = size
                return off
        return None

    def free(self, off: int) -> int:
        size = self.sizes.pop(off)
        assert self.used[off:off + size].all()
        self.used[off:off + size] = False
        return size


def ops_strategy(max_cap: int):
    """(capacity, ops): op = ("a", size in 1..cap) or ("f", index into live allocations)."""
    return st.integers(1, max_cap).flatmap(
        lambda cap: st.tuples(
            st.just(cap),
            st.lists(
                st.one_of(
                    st.tuples(st.just("a"), st.integers(1, cap)),
                    st.tuples(st.just("f"), st.integers(0, 10_000)),
                ),
                max_size=80,
            ),
        )
    )


def build(kind: str, cap: int, min_block: int = 1) -> AddressSpace:
    return make_space(kind, cap, min_block_slots=min_block) if kind == "buddy" else make_space(kind, cap)


def probe_largest(space: AddressSpace) -> None:
    """largest_free_hole() is exactly the largest size alloc accepts (checked on copies)."""
    lfh = space.largest_free_hole()
    if lfh > 0:
        assert copy.deepcopy(space).alloc(lfh) is not None
    assert copy.deepcopy(space).alloc(lfh + 1) is None


# -- property tests --------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(ops_strategy(48))
def test_first_fit_matches_slot_reference(cap_ops):
    cap, ops = cap_ops
    space, ref, live = FirstFitSpace(cap), RefFirstFit(cap), []
    for op, v in ops:
        if op == "a":
            got, want = space.alloc(v), ref.alloc(v)
            assert got == want  # lowest fitting offset, None exactly when the reference fails
            if got is not None:
                live.append(got)
        elif live:
            off = live.pop(v % len(live))
            assert space.free(off) == ref.free(off)
        runs = ref.runs()
        assert space.holes() == runs
        assert space.num_holes() == len(runs)
        assert space.largest_free_hole() == max((n for _, n in runs), default=0)
        assert space.free_slots == int((~ref.used).sum())
        for req in (1, 2, 5):
            assert space.external_fragmentation_slots(req) == sum(n for _, n in runs if n < req)
        assert space.check_invariants()


@settings(max_examples=150, deadline=None)
@given(ops_strategy(300), st.sampled_from(["first_fit", "buddy"]), st.sampled_from([1, 2, 4, 8]))
def test_random_ops_keep_invariants_and_free_all_restores(cap_ops, kind, min_block):
    cap, ops = cap_ops
    space = build(kind, cap, min_block)
    initial_holes = space.holes()
    live: dict[int, int] = {}
    for op, v in ops:
        if op == "a":
            lfh = space.largest_free_hole()
            off = space.alloc(v)
            assert (off is not None) == (v <= lfh)
            if off is not None:
                occupied = space.rounded_size(v)
                assert occupied >= v
                if kind == "buddy":
                    assert occupied & (occupied - 1) == 0 and occupied >= min_block
                    assert off % occupied == 0  # aligned to its rounded size
                assert 0 <= off and off + occupied <= cap
                assert off not in live
                live[off] = occupied
        elif live:
            off = sorted(live)[v % len(live)]
            assert space.free(off) == live.pop(off)
        assert space.allocated_slots == sum(live.values())
        assert space.free_slots + space.allocated_slots == cap
        assert space.external_fragmentation_slots() == space.free_slots - space.largest_free_hole()
        assert space.check_invariants()
        probe_largest(space)
    for off in sorted(live, reverse=True):
        space.free(off)
    assert space.holes() == initial_holes
    assert space.allocated_slots == 0 and space.check_invariants()
    if kind == "first_fit":
        assert space.holes() == [(0, cap)]
        assert space.external_fragmentation_slots() == 0
    else:
        assert space.holes() == list(space.cover)
        # empty buddy: the cover's smaller blocks (non-power-of-two capacity) and the tail
        largest_cover = max((n for _, n in space.cover), default=0)
        assert space.external_fragmentation_slots() == cap - largest_cover
        if cap & (cap - 1) == 0 and cap >= min_block:
            assert space.external_fragmentation_slots() == 0


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(["first_fit", "buddy"]), st.lists(st.integers(1, 64), max_size=40))
def test_deterministic_and_reset(kind, sizes):
    def run(space):
        offs = [space.alloc(s) for s in sizes]
        for o in offs[::2]:
            if o is not None:
                space.free(o)
        return offs + [space.alloc(s) for s in sizes[:10]], space.holes()

    a, b = build(kind, 256), build(kind, 256)
    assert run(a) == run(b)
    a.reset()
    assert a.holes() == build(kind, 256).holes() and a.free_slots == 256
    assert run(a) == run(build(kind, 256))


# -- constructed cases -------------------------------------------------------------------------
def test_first_fit_lowest_offset_and_coalescing():
    s = FirstFitSpace(10)
    assert [s.alloc(3), s.alloc(3), s.alloc(3)] == [0, 3, 6]
    assert s.holes() == [(9, 1)]
    assert s.free(3) == 3
    assert s.alloc(2) == 3  # lowest fitting hole, not the tail hole at 9
    assert s.holes() == [(5, 1), (9, 1)]
    assert s.alloc(2) is None and s.largest_free_hole() == 1
    assert s.alloc(1) == 5
    s.free(0)
    assert s.holes() == [(0, 3), (9, 1)]
    s.free(6)  # merges with the hole after it
    assert s.holes() == [(0, 3), (6, 4)]
    s.free(3)  # merges with the hole before it
    assert s.holes() == [(0, 5), (6, 4)]
    s.free(5)  # merges with both
    assert s.holes() == [(0, 10)]
    assert s.alloc(7) == 0
    s.reset()
    assert s.holes() == [(0, 10)] and s.check_invariants()


def test_first_fit_free_merges_both_neighbours():
    s = FirstFitSpace(9)
    a, b, c = s.alloc(3), s.alloc(3), s.alloc(3)
    s.free(a)
    s.free(c)
    assert s.holes() == [(0, 3), (6, 3)] and s.num_holes() == 2
    s.free(b)
    assert s.holes() == [(0, 9)] and s.num_holes() == 1 and s.largest_free_hole() == 9


@pytest.mark.parametrize("kind", ["first_fit", "buddy"])
def test_checkerboard_external_fragmentation(kind):
    s = build(kind, 16)
    assert s.external_fragmentation_slots() == 0
    assert s.external_fragmentation_slots(16) == 0
    offs = [s.alloc(1) for _ in range(16)]
    assert sorted(offs) == list(range(16)) and s.alloc(1) is None
    for o in offs:
        if o % 2 == 0:
            s.free(o)
    assert s.free_slots == 8 and s.num_holes() == 8
    assert s.largest_free_hole() == 1
    assert s.external_fragmentation_slots() == 7
    assert s.external_fragmentation_slots(1) == 0
    assert s.external_fragmentation_slots(2) == 8
    assert s.alloc(2) is None and s.alloc(1) is not None
    assert s.check_invariants()


def test_buddy_rounding_cover_and_tail():
    b = BuddySpace(100)
    assert list(b.cover) == [(0, 64), (64, 32), (96, 4)] and b.tail_slots == 0
    assert [b.rounded_size(n) for n in (1, 2, 3, 4, 5, 64, 65)] == [1, 2, 4, 4, 8, 64, 128]
    assert b.largest_free_hole() == 64 and b.alloc(65) is None and b.alloc(100) is None
    b8 = BuddySpace(100, min_block_slots=8)
    assert list(b8.cover) == [(0, 64), (64, 32)] and b8.tail_slots == 4
    assert b8.rounded_size(1) == 8 and b8.free_slots == 100
    assert b8.external_fragmentation_slots() == 36  # 32-block + unusable 4-slot tail
    assert b8.alloc(3) == 64  # smallest fitting block first, lowest offset
    assert b8.free(64) == 8 and b8.holes() == list(b8.cover)
    tiny = BuddySpace(3, min_block_slots=4)
    assert tiny.cover == () and tiny.largest_free_hole() == 0 and tiny.alloc(1) is None
    assert tiny.external_fragmentation_slots() == 3 and tiny.check_invariants()


def test_buddy_split_and_merge():
    b = BuddySpace(16)
    assert [b.alloc(1), b.alloc(1), b.alloc(2), b.alloc(4), b.alloc(8)] == [0, 1, 2, 4, 8]
    assert b.free_slots == 0 and b.holes() == []
    assert b.free(1) == 1 and b.holes() == [(1, 1)]
    assert b.free(0) == 1 and b.holes() == [(0, 2)]  # buddies 0 and 1 merged
    assert b.alloc(3) is None  # 3 rounds to 4: no free 4-block
    assert b.free(2) == 2 and b.holes() == [(0, 4)]
    assert b.alloc(3) == 0 and b.allocations() == [(0, 4), (4, 4), (8, 8)]
    for off in (0, 8, 4):
        b.free(off)
    assert b.holes() == [(0, 16)] and b.check_invariants()


def test_buddy_takes_lowest_offset_of_the_smallest_fitting_order():
    b = BuddySpace(32)
    assert [b.alloc(4) for _ in range(4)] == [0, 4, 8, 12]
    b.free(12)
    b.free(4)  # free 4-blocks at 4 and 12 (buddies 0 and 8 still allocated); 16-block at 16
    assert b.holes() == [(4, 4), (12, 4), (16, 16)]
    assert b.alloc(3) == 4 and b.alloc(4) == 12 and b.alloc(4) == 16


@pytest.mark.parametrize("kind", ["first_fit", "buddy"])
def test_errors(kind):
    s = build(kind, 32)
    off = s.alloc(4)
    with pytest.raises(ValueError, match="offset"):
        s.free(off + 1)
    s.free(off)
    with pytest.raises(ValueError):
        s.free(off)  # double free
    assert s.check_invariants() and s.free_slots == 32
    for bad in (0, -3, 2.5, None):
        with pytest.raises(ValueError, match="size_slots"):
            s.alloc(bad)
    with pytest.raises(ValueError, match="request_size|size_slots"):
        s.external_fragmentation_slots(0)


def test_make_space_validation():
    assert isinstance(make_space("first_fit", 10), FirstFitSpace)
    assert make_space("buddy", 10, min_block_slots=2).min_block_slots == 2
    with pytest.raises(ValueError, match="buddy, first_fit") as e:
        make_space("best_fit", 10)
    assert isinstance(e.value, KvsimError) and "best_fit" in str(e.value)
    with pytest.raises(SpaceConfigError, match="min_block_slots"):
        make_space("first_fit", 10, min_block_slots=2)
    with pytest.raises(SpaceConfigError, match="capacity_slots"):
        make_space("first_fit", 0)
    with pytest.raises(SpaceConfigError, match="power of two"):
        BuddySpace(64, min_block_slots=3)


# -- a long run -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["first_fit", "buddy"])
def test_20k_alloc_free_pairs_keep_invariants(kind):
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 2048, size=20_000).tolist()
    picks = rng.integers(0, 1 << 30, size=20_000).tolist()
    s = build(kind, 100_000)
    live = [s.alloc(int(x)) for x in rng.integers(1, 2048, size=60).tolist()]
    live = [o for o in live if o is not None]
    done = 0
    for size, pick in zip(sizes, picks):
        s.largest_free_hole()  # the simulator asks every iteration
        if live:
            s.free(live.pop(pick % len(live)))
        off = s.alloc(size)
        if off is not None:
            live.append(off)
            done += 1
        off2 = s.alloc(size)  # keep the space under pressure so holes and failures occur
        if off2 is not None:
            live.append(off2)
    assert done > 10_000
    assert s.check_invariants()
    if kind == "first_fit":  # lazy-deletion heap stays bounded
        assert len(s._heap) <= 2 * s.num_holes() + 65
