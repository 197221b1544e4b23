"""Orca-style contiguous KV reservations over a real address space of token slots.

Each sequence reserves one contiguous chunk when its group is admitted:

* ``max``    — the model's maximum sequence length (Orca *Max*);
* ``pow2``   — the next power of two of prompt + output (Orca *Pow2*);
* ``oracle`` — exactly prompt + output (Orca *Oracle*, knows the output length).

There is no sharing: every parallel sample or beam reserves its own chunk, and
beam search copies whole histories when beams re-parent. Chunks are placed in
an address space (first-fit, or buddy) so external fragmentation is measured:
free slots in holes too small for the next reservation.

Chunks are placed in units of ``unit_slots`` token slots (the engine passes its
KV block size), so a chunk is also a run of whole cache blocks and the real
engine can use the same paged kernels over it; rounding costs at most
``unit_slots - 1`` slots per sequence, counted as internal fragmentation.
"""
from __future__ import annotations

from kvsim.core.address_space import make_space
from kvsim.core.block_manager import AllocStatus
from kvsim.core.sequence import SequenceGroup

POLICIES = ("max", "pow2", "oracle")


class ContiguousKV:
    kind = "contiguous"

    def __init__(self, capacity_slots: int, policy: str, max_seq_len: int,
                 placement: str = "first_fit", cpu_capacity_slots: int = 0, unit_slots: int = 1):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        self.policy = policy
        self.max_seq_len = max_seq_len
        self.unit = unit_slots
        self.capacity_slots = capacity_slots // unit_slots * unit_slots
        self.space = make_space(placement, capacity_slots // unit_slots)
        self.cpu_capacity_slots = cpu_capacity_slots
        self.cpu_used_slots = 0
        self.offset: dict[int, int] = {}       # seq -> chunk offset
        self.reserved: dict[int, int] = {}     # seq -> chunk size (slots)
        self.written: dict[int, int] = {}      # seq -> KV slots written
        self.swapped: dict[int, tuple[int, int]] = {}   # seq -> (reserved, written) on CPU
        self.used_slots = 0
        self._max_chunk = self.space.largest_free_hole() * unit_slots   # biggest chunk the empty space places

    def reservation(self, group: SequenceGroup) -> int:
        total = group.spec.prompt_len + group.spec.output_len
        if self.policy == "max":
            return max(self.max_seq_len, total)
        if self.policy == "pow2":
            return 1 << (total - 1).bit_length()
        return total

    def _units(self, size: int) -> int:
        return -(-size // self.unit)

    def _chunk(self, size: int) -> int:
        """Slots a reservation of ``size`` really occupies (unit rounding; buddy rounds up too)."""
        return self.space.rounded_size(self._units(size)) * self.unit

    def never_fits(self, group: SequenceGroup) -> str | None:
        chunk = self._chunk(self.reservation(group))
        need = chunk * len(group.seqs)
        if chunk > self._max_chunk or need > self.capacity_slots:
            return (f"reserves {need} KV token slots ({self.policy}) but the GPU holds "
                    f"{self.capacity_slots}")
        return None

    def can_admit(self, group: SequenceGroup) -> AllocStatus:
        if self.never_fits(group):
            return AllocStatus.NEVER
        r = self.reservation(group)
        taken = []
        ok = True
        for _ in group.seqs:
            off = self.space.alloc(self._units(r))
            if off is None:
                ok = False
                break
            taken.append(off)
        for off in taken:
            self.space.free(off)
        return AllocStatus.OK if ok else AllocStatus.LATER

    def admit(self, group: SequenceGroup) -> int:
        r = self.reservation(group)
        p = group.spec.prompt_len
        for s in group.seqs:
            off = self.space.alloc(self._units(r))
            if off is None:
                raise RuntimeError("contiguous admission without capacity (check can_admit first)")
            self.offset[s.seq_id] = off * self.unit
            self.reserved[s.seq_id] = r
            w = p + s.generated
            self.written[s.seq_id] = w
            self.used_slots += w
        return 0

    # decode never allocates: the reservation already covers the whole output
    def append_need(self, group: SequenceGroup) -> int:
        return 0

    def free_blocks(self) -> int:
        return self.space.free_slots * self.unit

    def append(self, group: SequenceGroup) -> list[tuple[int, int]]:
        for s in group.seqs:
            self.written[s.seq_id] += 1
        self.used_slots += len(group.seqs)
        return []

    def reparent(self, group: SequenceGroup, parents: list[int]) -> None:
        """Beams re-parent by copying histories between their private chunks (no sharing)."""

    def free_group(self, group: SequenceGroup) -> None:
        for s in group.seqs:
            off = self.offset.pop(s.seq_id, None)
            if off is not None:
                self.space.free(off // self.unit)
                del self.reserved[s.seq_id]
                self.used_slots -= self.written.pop(s.seq_id)
            sw = self.swapped.pop(s.seq_id, None)
            if sw is not None:
                self.cpu_used_slots -= sw[0]

    def forget(self, group: SequenceGroup) -> None:
        pass

    def group_blocks(self, group: SequenceGroup) -> int:
        return sum(self.reserved.get(s.seq_id, 0) for s in group.seqs)

    # swap moves whole chunks (Orca itself does not swap; provided for comparisons)
    def can_swap_out(self, group: SequenceGroup) -> bool:
        need = sum(self.reserved[s.seq_id] for s in group.seqs)
        return self.cpu_used_slots + need <= self.cpu_capacity_slots

    def swap_out(self, group: SequenceGroup) -> list[tuple[int, int]]:
        pairs = []
        for s in group.seqs:
            off = self.offset.pop(s.seq_id)
            r = self.reserved.pop(s.seq_id)
            w = self.written.pop(s.seq_id)
            self.space.free(off // self.unit)
            self.used_slots -= w
            self.swapped[s.seq_id] = (r, w)
            self.cpu_used_slots += r
            pairs.append((off, w))
        return pairs

    def can_swap_in(self, group: SequenceGroup) -> bool:
        return self.can_admit(group) == AllocStatus.OK

    def swap_in(self, group: SequenceGroup) -> list[tuple[int, int]]:
        pairs = []
        for s in group.seqs:
            r, w = self.swapped.pop(s.seq_id)
            self.cpu_used_slots -= r
            off = self.space.alloc(self._units(r))
            self.offset[s.seq_id] = off * self.unit
            self.reserved[s.seq_id] = r
            self.written[s.seq_id] = w
            self.used_slots += w
            pairs.append((off, w))
        return pairs

    def memory_split(self, running: list[SequenceGroup]) -> tuple[int, int, int, int, int, int]:
        """(used, internal_frag, reserved, external_frag, free, logical) in token slots.

        reserved: chunk slots the sequence will still write; internal
        fragmentation: chunk slots past its final length (incl. buddy rounding);
        external: free slots outside the largest hole.
        """
        internal = 0
        future = 0
        for g in running:
            for s in g.seqs:
                r = self.reserved.get(s.seq_id)
                if r is None:
                    continue
                chunk = self._chunk(r)
                final = max(s.final_kv_tokens, self.written[s.seq_id])
                internal += chunk - min(chunk, final)
                future += min(chunk, final) - self.written[s.seq_id]
        free = self.space.free_slots * self.unit
        external = self.space.external_fragmentation_slots() * self.unit
        allocated = self.capacity_slots - free
        return self.used_slots, internal, future, external, free - external, allocated

    def blocks_in_use(self) -> int:
        return self.space.allocated_slots * self.unit

    def block_table(self, seq_id: int) -> list[int]:
        """The chunk as a run of ``unit_slots``-sized blocks (for the engine's paged kernels)."""
        first = self.offset[seq_id] // self.unit
        return list(range(first, first + self._units(self.reserved[seq_id])))

    def check_invariants(self) -> None:
        self.space.check_invariants()
        assert self.used_slots == sum(self.written.values())
        for s, w in self.written.items():
            assert w <= self.reserved[s]
