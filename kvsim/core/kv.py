"""The KV-manager protocol: the one seam between scheduling policy and KV storage.

The scheduler, the simulator (and its fast-forward), the records and the real
engine's runner talk to a KV manager only through :class:`KVManager`; none of
them asks which allocator it is or reads its internals. :class:`PagedKV`
(vLLM paging) and :class:`ContiguousKV` (Orca-style reservations) implement it;
a new allocator is added by implementing it alone.

Units. KV storage is a pool of ``num_gpu_blocks`` GPU blocks of ``block_size``
token slots (plus ``num_cpu_blocks`` CPU swap blocks of the same size). Block
ids are what :class:`~kvsim.core.plan.StepPlan` carries: copy-on-write pairs
``(src, dst)`` and swap pairs ``(gpu, cpu)`` / ``(cpu, gpu)``, one pair per
block moved, so a swap is priced per block whatever the allocator.
The memory split is in token slots (:class:`MemorySplit`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from kvsim.core.block_manager import AllocStatus
    from kvsim.core.sequence import SequenceGroup

MEMORY_COLUMNS = ("mem_used", "mem_internal", "mem_reserved", "mem_external", "mem_free", "mem_logical")


@dataclass(slots=True)
class MemorySplit:
    """Where the GPU's KV slots are, in token slots (ints, or numpy arrays with one entry per step).

    ``used + internal + reserved`` are the running sequences' allocated slots;
    with ``external + free`` they make up the GPU's KV slots.
    """
    used: int | np.ndarray       # slots holding KV
    internal: int | np.ndarray   # allocated slots past a sequence's final length (never written)
    reserved: int | np.ndarray   # allocated slots that will still be written
    external: int | np.ndarray   # free slots that no next allocation can use (holes)
    free: int | np.ndarray       # free, usable slots
    logical: int | np.ndarray    # slots the running sequences would hold without any sharing

    def values(self) -> tuple:
        """The split in ``MEMORY_COLUMNS`` order."""
        return self.used, self.internal, self.reserved, self.external, self.free, self.logical

    def columns(self) -> dict:
        """The split as the iteration record's ``mem_*`` columns."""
        return dict(zip(MEMORY_COLUMNS, self.values()))


@runtime_checkable
class KVManager(Protocol):
    """What the scheduler, simulator, records and engine may ask of a KV allocator.

    Group-level calls take a :class:`SequenceGroup`; every sequence of the group
    is allocated, swapped and freed together. A group is in exactly one of three
    states for the manager: unknown/freed, resident (after ``admit`` or
    ``swap_in``) or swapped (after ``swap_out``).
    """

    block_size: int        # token slots per block
    num_gpu_blocks: int    # blocks of the GPU pool; block ids are 0..num_gpu_blocks-1
    num_cpu_blocks: int    # blocks of the CPU swap pool; ids 0..num_cpu_blocks-1
    capacity_slots: int    # token slots the GPU pool holds (num_gpu_blocks * block_size)

    # ----------------------------------------------------------- admission
    def never_fits(self, group: SequenceGroup) -> str | None:
        """Why the group can never be admitted even into empty memory (a sentence), or None."""

    def can_admit(self, group: SequenceGroup) -> AllocStatus:
        """OK if ``admit`` would succeed now, LATER if it may after frees, NEVER if ``never_fits``. No state change."""

    def admit(self, group: SequenceGroup) -> int:
        """Allocate the group's (re)prefill: prompt plus tokens already generated (recompute).

        Requires ``can_admit(group) == OK``. Returns prompt tokens served by a
        prefix cache (0 without one). Afterwards the group is resident.
        """

    def static_peak_blocks(self, group: SequenceGroup) -> int:
        """Free blocks a never-preempting (static) batch must set aside for the group at admission,
        beyond what ``admit`` takes itself; 0 where admission already reserves the group's peak."""

    # -------------------------------------------------------------- decode
    def free_blocks(self) -> int:
        """GPU blocks free now (evictable prefix-cache blocks count as free)."""

    def append_need(self, group: SequenceGroup) -> int:
        """Blocks ``append(group)`` would take; the scheduler preempts until ``free_blocks()`` covers it.

        Exact: ``append`` takes exactly this many off ``free_blocks()``, and one group's need does not
        depend on another's appends (the scheduler sums the needs of a step to skip the per-group checks).
        """

    def append(self, group: SequenceGroup) -> list[tuple[int, int]]:
        """Give each sequence of a resident group one more KV slot; return copy-on-write block pairs.

        Requires ``free_blocks() >= append_need(group)``.
        """

    # Optional, for speed: ``append_needs(groups)`` == ``[append_need(g) for g in groups]`` and
    # ``append_all(groups)`` == the concatenated pairs of ``append(g)`` for each group in order, with the same
    # state afterwards (the scheduler's decode step uses them where a manager has them).

    def reparent(self, group: SequenceGroup, parents: list[int]) -> None:
        """Beam search: sequence ``i`` continues from the history of sequence ``parents[i]``."""

    def group_blocks(self, group: SequenceGroup) -> int:
        """KV held by the resident group, in ``blocks_in_use`` units (shared blocks counted once)."""

    def shared_blocks(self, group: SequenceGroup) -> int:
        """Block reads of the resident group's sequences beyond the first of each block: the sum of their
        tables' lengths less the distinct blocks in them (beam search's shared prompt and common history, which
        a decode step's attention reads once per beam); 0 where sequences never share blocks."""

    def free_group(self, group: SequenceGroup) -> None:
        """Release everything the group holds on GPU and CPU. Idempotent."""

    def forget(self, group: SequenceGroup) -> None:
        """Drop per-group caches (prefix hashes) once the group will never be admitted again."""

    # ---------------------------------------------------------------- swap
    def can_swap_out(self, group: SequenceGroup) -> bool:
        """Whether the CPU pool has a free block for every block ``swap_out`` would move."""

    def swap_out(self, group: SequenceGroup) -> list[tuple[int, int]]:
        """Move a resident group's written KV to CPU; one ``(gpu_block, cpu_block)`` pair per block moved.

        Afterwards the group is swapped and holds no GPU block.
        """

    def can_swap_in(self, group: SequenceGroup) -> bool:
        """Whether ``swap_in`` and the group's next ``append`` both fit in GPU memory now."""

    def swap_in(self, group: SequenceGroup) -> list[tuple[int, int]]:
        """Bring a swapped group back; one ``(cpu_block, gpu_block)`` pair per block moved (as many as out)."""

    # ------------------------------------------------------------- reading
    def memory_split(self, running: list[SequenceGroup]) -> MemorySplit:
        """The GPU's slots split by use, for the ``running`` groups' sequences. No state change."""

    def blocks_in_use(self) -> int:
        """GPU blocks allocated now (shared blocks counted once; a contiguous chunk counts its whole blocks)."""

    def block_table(self, seq_id: int) -> list[int]:
        """GPU block ids holding a resident sequence's KV, in token order (what the engine's kernels read)."""

    def prefix_cache_stats(self) -> tuple[int, int] | None:
        """(prompt tokens served from the prefix cache, prompt tokens looked up), or None without one."""

    def locate(self, seq_id: int) -> tuple[str, int] | None:
        """("gpu" | "cpu", KV slots written) for a sequence held on either side, else None."""

    def check_invariants(self) -> None:
        """Assert the allocator's internal invariants (tests)."""

    def check_empty(self) -> None:
        """Assert the manager holds nothing: every block free, no sequence, no swap, no per-group cache."""

    # -------------------------------------------------------- bulk decode
    # (A manager may also offer ``decode_tracker(groups)``, a faster incremental form of these three,
    # outside the protocol: see :mod:`kvsim.core.decode_tracker`. Without it they are asked once per
    # segment of a decode run.)
    def decode_run(self, groups: list[SequenceGroup], steps: int) -> np.ndarray | None:
        """Blocks newly taken at each of up to ``steps`` decode steps in which every sequence of the
        resident ``groups`` gains one token, with no other change in between.

        The array is cut before the first step that would run out of free blocks
        (it may be empty). None if any step would need a copy-on-write (then the
        scheduler must step one at a time). No state change.
        """

    def decode_memory(self, groups: list[SequenceGroup], new_blocks: np.ndarray) -> tuple[np.ndarray, MemorySplit]:
        """``blocks_in_use`` and the memory split after each step of a ``decode_run`` result, as
        ``blocks_in_use()`` and ``memory_split(groups)`` would read after stepping (arrays, one entry a step)."""

    def advance_decode(self, groups: list[SequenceGroup], steps: int) -> None:
        """Apply ``steps`` decode appends to every sequence of ``groups`` at once: the state after equals
        ``steps`` calls of ``append``. Requires ``len(decode_run(groups, steps)) == steps``."""
