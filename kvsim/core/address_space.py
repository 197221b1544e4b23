"""Contiguous KV reservations at real offsets in ``[0, capacity_slots)`` token slots, so that
external fragmentation (free slots in holes too small to use) can be measured: first fit
(:class:`FirstFitSpace`) and binary buddy (:class:`BuddySpace`). Deterministic, stdlib only."""
from __future__ import annotations

import heapq
import operator
from bisect import bisect_left, insort
from dataclasses import dataclass, fields

from kvsim.errors import KvsimError


class SpaceConfigError(KvsimError, ValueError):
    """Bad size or configuration: a one-line KvsimError that is also a ValueError."""


def _positive_int(name: str, value) -> int:
    v = operator.index(value) if hasattr(type(value), "__index__") else 0
    if v < 1:
        raise SpaceConfigError(name, f"got {value!r}; must be a positive integer")
    return v


@dataclass(eq=False)
class AddressSpace:
    """``capacity_slots`` token slots, each free or inside exactly one allocation.

    Invariant (:meth:`check_invariants`): allocations and free ranges are disjoint and tile
    ``[0, capacity_slots)``, holes are coalesced, free + allocated == capacity; same calls,
    same offsets. Subclasses implement ``reset()`` (back to as built), ``alloc(size_slots) ->
    offset | None`` (never partial; succeeds iff ``size_slots <= largest_free_hole()``),
    ``free(offset) -> slots freed`` (ValueError, nothing changed, if not live),
    ``largest_free_hole()``, ``holes()`` (sorted ``(offset, size)``), ``num_holes()``.
    """

    capacity_slots: int
    kind = "abstract"
    tail_slots = 0  # free slots that no request can ever use (BuddySpace only)

    def __post_init__(self) -> None:
        self.capacity_slots = _positive_int("capacity_slots", self.capacity_slots)
        self.reset()

    @property
    def free_slots(self) -> int:
        """Slots in no allocation. O(1)."""
        return self._free

    @property
    def allocated_slots(self) -> int:
        """Slots inside allocations (``capacity_slots - free_slots``). O(1)."""
        return self.capacity_slots - self._free

    def rounded_size(self, size_slots: int) -> int:
        """Slots an allocation of ``size_slots`` occupies (first fit: exactly ``size_slots``)."""
        return _positive_int("size_slots", size_slots)

    def allocations(self) -> list[tuple[int, int]]:
        """Live allocations as sorted ``(offset, slots_occupied)``. O(n log n)."""
        return sorted(self._alloc.items())

    def external_fragmentation_slots(self, request_size: int | None = None) -> int:
        """Free slots that cannot serve an allocation of ``request_size`` (0 when empty, except
        buddy over a non-power-of-two capacity, whose smaller cover blocks and tail count).

        None: ``free_slots - largest_free_hole()``, as cheap as that. Else the free slots
        outside holes that fit ``request_size`` (buddy: rounded up), O(holes)."""
        if request_size is None:
            return self._free - self.largest_free_hole()
        need = self.rounded_size(request_size)
        return self._free - sum(s for _, s in self.holes() if s >= need)

    def check_invariants(self) -> bool:
        """Return True or raise AssertionError naming the broken invariant. O(n log n), for tests."""
        hs, al = self.holes(), self.allocations()
        pos = 0
        tail = [(self.capacity_slots - self.tail_slots, self.tail_slots)] if self.tail_slots else []
        for off, size in sorted(hs + al + tail):
            if off != pos or size <= 0:
                raise AssertionError(f"ranges do not tile [0, {self.capacity_slots}): {size}@{off}, expected @{pos}")
            pos += size
        if pos != self.capacity_slots:
            raise AssertionError(f"ranges end at {pos}, capacity is {self.capacity_slots}")
        if self.allocated_slots != sum(s for _, s in al):
            raise AssertionError("allocated_slots/free_slots disagree with the allocations")
        if (self.largest_free_hole(), self.num_holes()) != (max((s for _, s in hs), default=0), len(hs)):
            raise AssertionError("largest_free_hole() or num_holes() disagrees with holes()")
        return True


@dataclass(eq=False)
class FirstFitSpace(AddressSpace):
    """First fit: the lowest-offset hole that fits; adjacent holes coalesce on free.

    State: sorted hole offsets (``bisect``), offset -> hole size, and a max-heap of hole
    sizes with lazy deletion (rebuilt when over twice the live holes + 64). h = holes:
    alloc O(h scanned + log h), free O(log h + memmove), largest_free_hole amortised O(log h).
    """

    kind = "first_fit"

    def reset(self) -> None:
        """Free everything: one hole ``(0, capacity_slots)``."""
        c = self.capacity_slots
        self._alloc: dict[int, int] = {}  # offset -> size
        self._offs, self._hole = [0], {0: c}  # sorted hole offsets; offset -> hole size
        self._heap, self._free = [(-c, 0)], c  # (-size, offset), stale entries skipped

    def _set_hole(self, off: int, size: int) -> None:
        self._hole[off] = size
        heapq.heappush(self._heap, (-size, off))
        if len(self._heap) > 2 * len(self._hole) + 64:
            self._heap = [(-s, o) for o, s in self._hole.items()]
            heapq.heapify(self._heap)

    def largest_free_hole(self) -> int:
        """Size of the largest hole (0 when full). Amortised O(log h)."""
        heap, hole = self._heap, self._hole
        while heap:
            neg, off = heap[0]
            if hole.get(off) == -neg:
                return -neg
            heapq.heappop(heap)
        return 0

    def alloc(self, size_slots: int) -> int | None:
        """Place ``size_slots`` at the lowest offset that fits; None iff > largest_free_hole()."""
        size = _positive_int("size_slots", size_slots)
        if size > self.largest_free_hole():
            return None
        offs, hole = self._offs, self._hole
        for i, off in enumerate(offs):
            have = hole[off]
            if have >= size:
                break
        del hole[off]
        if have == size:
            del offs[i]
        else:  # the rest of the hole keeps its place in the sorted list
            offs[i] = off + size
            self._set_hole(off + size, have - size)
        self._alloc[off] = size
        self._free -= size
        return off

    def free(self, offset: int) -> int:
        """Free the allocation at ``offset`` (ValueError if not live), merge adjacent holes; return its size."""
        size = self._alloc.pop(offset, None)
        if size is None:
            raise ValueError(f"offset: {offset!r} is not the start of a live allocation")
        offs, hole = self._offs, self._hole
        i = bisect_left(offs, offset)
        start, new = offset, size
        merge_next = i < len(offs) and offs[i] == offset + size
        if merge_next:
            new += hole.pop(offs[i])
        if i > 0 and offs[i - 1] + hole[offs[i - 1]] == offset:
            start = offs[i - 1]
            new += hole[start]
            if merge_next:
                del offs[i]
        elif merge_next:
            offs[i] = offset
        else:
            offs.insert(i, offset)
        self._set_hole(start, new)
        self._free += size
        return size

    def holes(self) -> list[tuple[int, int]]:
        """Holes as sorted ``(offset, size)``, never adjacent (coalesced). O(h)."""
        return [(o, self._hole[o]) for o in self._offs]

    def num_holes(self) -> int:
        """Number of holes. O(1)."""
        return len(self._offs)

    def check_invariants(self) -> bool:
        """Base invariants plus: holes sorted and never adjacent (coalesced)."""
        super().check_invariants()
        hs = self.holes()
        for (o1, s1), (o2, _) in zip(hs, hs[1:]):
            if o1 + s1 >= o2:
                raise AssertionError(f"holes at {o1} and {o2} are adjacent or unsorted")
        return True


@dataclass(eq=False)
class BuddySpace(AddressSpace):
    """Binary buddy allocator: requests round up to a power of two >= ``min_block_slots``.

    A non-power-of-two capacity is covered from offset 0 by its power-of-two binary digits
    >= ``min_block_slots``, largest first (100 -> 64@0, 32@64, 4@96); each cover block is
    aligned to its size and never merges with another. Slots past the cover (``tail_slots`` <
    ``min_block_slots``) are free but never allocatable: in ``free_slots`` and external
    fragmentation, not in ``holes()``. Alloc splits the smallest fitting free block, lowest
    offset first. L = log2 capacity, b = free blocks of one order: alloc O(L + b memmove),
    free O(L log b), largest_free_hole O(L).
    """

    min_block_slots: int = 1
    kind = "buddy"

    def __post_init__(self) -> None:
        m = _positive_int("min_block_slots", self.min_block_slots)
        if m & (m - 1):
            raise SpaceConfigError("min_block_slots", f"got {m}; must be a power of two")
        self.min_block_slots, self._min_order = m, m.bit_length() - 1
        super().__post_init__()

    def rounded_size(self, size_slots: int) -> int:
        """Slots a request occupies: ``max(min_block_slots, next power of two >= size_slots)``."""
        size = _positive_int("size_slots", size_slots)
        return max(self.min_block_slots, 1 << (size - 1).bit_length())

    def reset(self) -> None:
        """Free everything: the free blocks are exactly ``cover``."""
        c = self.capacity_slots
        self._fl: list[list[int]] = [[] for _ in range(c.bit_length())]  # order -> sorted offsets
        cover, off = [], 0
        for k in range(c.bit_length() - 1, self._min_order - 1, -1):
            if c >> k & 1:
                cover.append((off, 1 << k))
                self._fl[k].append(off)
                off += 1 << k
        self.cover: tuple[tuple[int, int], ...] = tuple(cover)  # the initial free blocks
        self.tail_slots = c - off
        self._alloc, self._free = {}, c  # offset -> rounded size

    def largest_free_hole(self) -> int:
        """Largest free block: requests up to it succeed, none above it do. O(L)."""
        return next((1 << k for k in range(len(self._fl) - 1, -1, -1) if self._fl[k]), 0)

    def alloc(self, size_slots: int) -> int | None:
        """Offset of ``rounded_size(size_slots)`` slots aligned to that size; None iff > largest_free_hole()."""
        need = self.rounded_size(size_slots)
        k = j = need.bit_length() - 1
        fl = self._fl
        while j < len(fl) and not fl[j]:
            j += 1
        if j >= len(fl):
            return None
        off = fl[j].pop(0)
        while j > k:  # orders k..j-1 were empty, so appending keeps them sorted
            j -= 1
            fl[j].append(off + (1 << j))
        self._alloc[off] = need
        self._free -= need
        return off

    def free(self, offset: int) -> int:
        """Free the block at ``offset`` (ValueError if not live), merge free buddies; return its rounded size."""
        size = self._alloc.pop(offset, None)
        if size is None:
            raise ValueError(f"offset: {offset!r} is not the start of a live allocation")
        k, fl, off = size.bit_length() - 1, self._fl, offset
        while k + 1 < len(fl):
            lst, buddy = fl[k], off ^ (1 << k)
            i = bisect_left(lst, buddy)
            if i == len(lst) or lst[i] != buddy:
                break
            del lst[i]
            off, k = min(off, buddy), k + 1
        insort(fl[k], off)
        self._free += size
        return size

    def holes(self) -> list[tuple[int, int]]:
        """Free blocks as sorted ``(offset, size)``, the tail excluded. O(b log b)."""
        return sorted((o, 1 << k) for k, lst in enumerate(self._fl) for o in lst)

    def num_holes(self) -> int:
        """Number of free blocks, the tail excluded. O(L)."""
        return sum(map(len, self._fl))

    def check_invariants(self) -> bool:
        """Base invariants plus: blocks aligned to their size, no two free buddies."""
        super().check_invariants()
        free = set(self.holes())
        for o, s in list(free) + self.allocations():
            if o % s or s < self.min_block_slots or s & (s - 1):
                raise AssertionError(f"block {s}@{o} misaligned, not a power of two or below min_block_slots")
            if (o, s) in free and (o ^ s, s) in free:
                raise AssertionError(f"free buddies {s}@{o} and {s}@{o ^ s} not merged")
        return True


_KINDS = {"first_fit": FirstFitSpace, "buddy": BuddySpace}


def make_space(kind: str, capacity_slots: int, **kw) -> AddressSpace:
    """Build a space by name: ``"first_fit"`` or ``"buddy"`` (option ``min_block_slots``)."""
    cls = _KINDS.get(kind)
    if cls is None:
        raise SpaceConfigError("kind", f"got {kind!r}; allowed: {', '.join(sorted(_KINDS))}")
    allowed = sorted({f.name for f in fields(cls)} - {"capacity_slots"})
    for name in set(kw) - set(allowed):
        raise SpaceConfigError(name, f"not an option of {kind!r}; allowed: {allowed or 'none'}")
    return cls(capacity_slots, **kw)
