"""Orca-style contiguous KV reservations over a real address space of token slots.

Each sequence reserves one contiguous chunk when its group is admitted:

* ``max``    — the model's maximum sequence length (Orca *Max*);
* ``pow2``   — the next power of two of prompt + output (Orca *Pow2*);
* ``oracle`` — exactly prompt + output (Orca *Oracle*, knows the output length).

There is no sharing: every parallel sample or beam reserves its own chunk, and
beam search copies whole histories when beams re-parent. Chunks are placed in
an address space (first-fit, or buddy) so external fragmentation is measured:
free slots in holes too small for the next reservation.

Chunks are placed in whole blocks of ``block_size`` token slots (the KV block
size), so a chunk is also a run of cache blocks and the real engine can use the
same paged kernels over it; rounding costs at most ``block_size - 1`` slots per
sequence, counted as internal fragmentation. Swaps move a sequence's written
blocks to a CPU pool of blocks of the same size, one block pair per block, as
paging does. Implements :class:`kvsim.core.kv.KVManager`.
"""
from __future__ import annotations

import numpy as np

from kvsim.core.address_space import make_space
from kvsim.core.block_manager import AllocStatus
from kvsim.core.kv import MemorySplit
from kvsim.core.sequence import SequenceGroup

POLICIES = ("max", "pow2", "oracle")


class ContiguousKV:
    """Orca-style contiguous reservations (one chunk per sequence, placed in a block address space)."""

    def __init__(self, capacity_slots: int, policy: str, max_seq_len: int,
                 placement: str = "first_fit", cpu_capacity_slots: int = 0, block_size: int = 1):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        self.policy = policy
        self.max_seq_len = max_seq_len
        self.block_size = block_size
        self.num_gpu_blocks = capacity_slots // block_size
        self.capacity_slots = self.num_gpu_blocks * block_size
        self.space = make_space(placement, self.num_gpu_blocks)
        self.num_cpu_blocks = cpu_capacity_slots // block_size
        self._cpu_free = list(range(self.num_cpu_blocks - 1, -1, -1))   # pop() hands out low ids first
        self.offset: dict[int, int] = {}       # seq -> chunk offset (slots)
        self.reserved: dict[int, int] = {}     # seq -> reservation (slots)
        self.written: dict[int, int] = {}      # seq -> KV slots written
        self.swapped: dict[int, tuple[int, int, list[int]]] = {}   # seq -> (reserved, written, CPU blocks)
        self.used_slots = 0
        self._max_chunk = self.space.largest_free_hole() * block_size   # biggest chunk the empty space places
        self._chunks: dict[int, int] = {}      # reservation (slots) -> slots its chunk occupies (_chunk, kept)

    def reservation(self, group: SequenceGroup) -> int:
        """Slots each sequence of the group reserves under the policy."""
        total = group.spec.prompt_len + group.spec.output_len
        if self.policy == "max":
            return max(self.max_seq_len, total)
        if self.policy == "pow2":
            return 1 << (total - 1).bit_length()
        return total

    def _blocks(self, size: int) -> int:
        return -(-size // self.block_size)

    def _chunk(self, size: int) -> int:
        """Slots a reservation of ``size`` really occupies (block rounding; buddy rounds up too). Kept per size:
        the memory split reads it for every running sequence at every step."""
        c = self._chunks.get(size)
        if c is None:
            c = self._chunks[size] = self.space.rounded_size(self._blocks(size)) * self.block_size
        return c

    # ------------------------------------------------------------- admission
    def never_fits(self, group: SequenceGroup) -> str | None:
        """A chunk larger than the empty space's largest hole, or all chunks above capacity."""
        chunk = self._chunk(self.reservation(group))
        need = chunk * len(group.seqs)
        if chunk > self._max_chunk or need > self.capacity_slots:
            return (f"reserves {need} KV token slots ({self.policy}) but the GPU holds "
                    f"{self.capacity_slots}")
        return None

    def can_admit(self, group: SequenceGroup) -> AllocStatus:
        """Every sequence's chunk can be placed now (tried, then undone)."""
        if self.never_fits(group):
            return AllocStatus.NEVER
        r = self.reservation(group)
        if len(group.seqs) == 1:    # one chunk: placing it succeeds iff it fits the largest hole (the space's contract)
            return AllocStatus.OK if self._blocks(r) <= self.space.largest_free_hole() else AllocStatus.LATER
        taken = []
        ok = True
        for _ in group.seqs:
            off = self.space.alloc(self._blocks(r))
            if off is None:
                ok = False
                break
            taken.append(off)
        for off in taken:
            self.space.free(off)
        return AllocStatus.OK if ok else AllocStatus.LATER

    def admit(self, group: SequenceGroup) -> int:
        """Place one chunk per sequence, holding the prompt and any tokens being recomputed. No prefix cache."""
        r = self.reservation(group)
        p = group.spec.prompt_len
        for s in group.seqs:
            off = self.space.alloc(self._blocks(r))
            if off is None:
                raise RuntimeError("contiguous admission without capacity (check can_admit first)")
            self.offset[s.seq_id] = off * self.block_size
            self.reserved[s.seq_id] = r
            w = p + s.generated
            self.written[s.seq_id] = w
            self.used_slots += w
        return 0

    def static_peak_blocks(self, group: SequenceGroup) -> int:
        """0: the reservation already covers the group's whole output."""
        return 0

    # ---------------------------------------------------------------- decode
    def append_need(self, group: SequenceGroup) -> int:
        """0: decode never allocates, the reservation covers the whole output."""
        return 0

    def free_blocks(self) -> int:
        """Free GPU blocks (wherever they lie: placement may still fail, see ``can_admit``)."""
        return self.space.free_slots

    def append(self, group: SequenceGroup) -> list[tuple[int, int]]:
        """One more written slot per sequence, inside its chunk; never copies."""
        for s in group.seqs:
            self.written[s.seq_id] += 1
        self.used_slots += len(group.seqs)
        return []

    def reparent(self, group: SequenceGroup, parents: list[int]) -> None:
        """Beams re-parent by copying histories between their private chunks (no sharing)."""

    def free_group(self, group: SequenceGroup) -> None:
        """Release the sequences' chunks and CPU blocks."""
        for s in group.seqs:
            off = self.offset.pop(s.seq_id, None)
            if off is not None:
                self.space.free(off // self.block_size)
                del self.reserved[s.seq_id]
                self.used_slots -= self.written.pop(s.seq_id)
            sw = self.swapped.pop(s.seq_id, None)
            if sw is not None:
                self._cpu_free.extend(sw[2])

    def forget(self, group: SequenceGroup) -> None:
        """Nothing is cached per group."""

    def group_blocks(self, group: SequenceGroup) -> int:
        """GPU blocks reserved by the group's chunks."""
        return sum(self._blocks(self.reserved[s.seq_id]) for s in group.seqs if s.seq_id in self.reserved)

    def shared_blocks(self, group: SequenceGroup) -> int:
        """Each sequence reads its own chunk: none shared."""
        return 0

    # ------------------------------------------------------------------ swap
    # Orca itself does not swap; provided for comparisons. The written blocks move; on swap-in the
    # sequence gets a fresh chunk of its reservation, wherever one is free.
    def can_swap_out(self, group: SequenceGroup) -> bool:
        """A free CPU block for each written block of the group's sequences."""
        return sum(self._blocks(self.written[s.seq_id]) for s in group.seqs) <= len(self._cpu_free)

    def swap_out(self, group: SequenceGroup) -> list[tuple[int, int]]:
        """Free each chunk; its written blocks move to CPU blocks."""
        pairs = []
        for s in group.seqs:
            off = self.offset.pop(s.seq_id)
            r = self.reserved.pop(s.seq_id)
            w = self.written.pop(s.seq_id)
            first = off // self.block_size
            self.space.free(first)
            self.used_slots -= w
            cpu = [self._cpu_free.pop() for _ in range(self._blocks(w))]
            self.swapped[s.seq_id] = (r, w, cpu)
            pairs.extend(zip(range(first, first + len(cpu)), cpu))
        return pairs

    def can_swap_in(self, group: SequenceGroup) -> bool:
        """Every sequence's chunk can be placed now."""
        return self.can_admit(group) == AllocStatus.OK

    def swap_in(self, group: SequenceGroup) -> list[tuple[int, int]]:
        """Place a fresh chunk per sequence; its written blocks come back to the chunk's first blocks."""
        pairs = []
        for s in group.seqs:
            r, w, cpu = self.swapped.pop(s.seq_id)
            first = self.space.alloc(self._blocks(r))
            self.offset[s.seq_id] = first * self.block_size
            self.reserved[s.seq_id] = r
            self.written[s.seq_id] = w
            self.used_slots += w
            pairs.extend(zip(cpu, range(first, first + len(cpu))))
            self._cpu_free.extend(reversed(cpu))
        return pairs

    # --------------------------------------------------------------- reading
    def memory_split(self, running: list[SequenceGroup]) -> MemorySplit:
        """The split in token slots.

        reserved: chunk slots the sequence will still write; internal
        fragmentation: chunk slots past its final length (incl. block and buddy
        rounding); external: free slots outside the largest hole; logical: the
        allocated slots (nothing is shared).
        """
        return self.split_with(*self.group_split(running))

    def split_with(self, internal: int, future: int) -> MemorySplit:
        """``memory_split`` of groups whose ``group_split`` is ``(internal, future)``."""
        external, free, allocated = self.space_split()
        return MemorySplit(self.used_slots, internal, future, external, free, allocated)

    def group_split(self, groups: list[SequenceGroup]) -> tuple[int, int]:
        """The internal fragmentation and reserved slots of the groups' chunks (``memory_split``'s sums)."""
        internal = future = 0
        reserved, written, chunk_of = self.reserved, self.written, self._chunk
        for g in groups:
            spec = g.spec
            final = spec.prompt_len + spec.output_len - 1       # every sequence's final_kv_tokens
            for sid in g.seq_ids:
                r = reserved.get(sid)
                if r is None:
                    continue
                chunk = chunk_of(r)
                w = written[sid]
                cap = final if final > w else w                 # min(chunk, max(final, written))
                if chunk < cap:
                    cap = chunk
                internal += chunk - cap
                future += cap - w
        return internal, future

    def caps_fixed(self, groups: list[SequenceGroup]) -> bool:
        """Whether a decode run keeps every sequence's ``group_split`` terms linear: each one, decoding until its
        group finishes (``output_len - generated`` more slots), stays within its final length, and that fits its
        chunk; then internal stays put and reserved falls one slot per sequence and step
        (:class:`~kvsim.core.decode_tracker.ContiguousTracker` keeps them so)."""
        reserved, written, chunk_of = self.reserved, self.written, self._chunk
        for g in groups:
            spec = g.spec
            final = spec.prompt_len + spec.output_len - 1
            for s in g.seqs:
                r = reserved.get(s.seq_id)
                if r is not None and (written[s.seq_id] + spec.output_len - s.generated > final
                                      or chunk_of(r) < final):
                    return False
        return True

    def space_split(self) -> tuple[int, int, int]:
        """(external, usable free, allocated) slots of the address space (``memory_split``'s last columns):
        external is the free slots outside the largest hole; nothing is shared, so allocated is logical too."""
        free = self.space.free_slots * self.block_size
        external = self.space.external_fragmentation_slots() * self.block_size
        return external, free - external, self.capacity_slots - free

    def blocks_in_use(self) -> int:
        """GPU blocks inside allocated chunks (a chunk is a run of whole blocks)."""
        return self.space.allocated_slots

    def block_table(self, seq_id: int) -> list[int]:
        """The chunk as a run of blocks (for the engine's paged kernels)."""
        first = self.offset[seq_id] // self.block_size
        return list(range(first, first + self._blocks(self.reserved[seq_id])))

    def prefix_cache_stats(self) -> None:
        """No prefix cache."""
        return None

    def locate(self, seq_id: int) -> tuple[str, int] | None:
        """("gpu" | "cpu", KV slots written) for a sequence held on either side, else None."""
        if seq_id in self.written:
            return "gpu", self.written[seq_id]
        if seq_id in self.swapped:
            return "cpu", self.swapped[seq_id][1]
        return None

    def check_invariants(self) -> None:
        """The address space is consistent; written slots add up and stay inside reservations."""
        self.space.check_invariants()
        assert self.used_slots == sum(self.written.values())
        for s, w in self.written.items():
            assert w <= self.reserved[s]
        held = sum(len(sw[2]) for sw in self.swapped.values())
        assert held + len(self._cpu_free) == self.num_cpu_blocks

    def check_empty(self) -> None:
        """Assert nothing is held: the space all free, no chunks, nothing swapped, every CPU block free."""
        assert self.space.allocated_slots == 0 and self.space.free_slots * self.block_size == self.capacity_slots
        assert not self.offset and not self.swapped and not self.written
        assert self.used_slots == 0 and len(self._cpu_free) == self.num_cpu_blocks

    # ----------------------------------------------------------- bulk decode
    def decode_run(self, groups: list[SequenceGroup], steps: int) -> np.ndarray:
        """Decoding stays inside the chunks: no step takes a block or copies."""
        return np.zeros(steps, dtype=np.int64)

    def decode_memory(self, groups: list[SequenceGroup], new_blocks: np.ndarray) -> tuple[np.ndarray, MemorySplit]:
        """Each step moves one slot per sequence from reserved to used; nothing else changes."""
        k = len(new_blocks)
        m = self.memory_split(groups)
        grow = sum(len(g.seqs) for g in groups) * np.arange(1, k + 1, dtype=np.int64)
        const = np.ones(k, dtype=np.int64)
        return const * self.blocks_in_use(), MemorySplit(m.used + grow, const * m.internal, m.reserved - grow,
                                                         const * m.external, const * m.free, const * m.logical)

    def decode_tracker(self, groups: list[SequenceGroup]):
        """Decode runs in closed form (:class:`kvsim.core.decode_tracker.ContiguousTracker`)."""
        from kvsim.core.decode_tracker import ContiguousTracker
        return ContiguousTracker(self, groups)

    def advance_decode(self, groups: list[SequenceGroup], steps: int) -> None:
        """``steps`` more written slots per sequence."""
        n = 0
        for g in groups:
            for s in g.seqs:
                self.written[s.seq_id] += steps
                n += 1
        self.used_slots += steps * n
