"""Whether the scheduler's next step admits nothing: the condition a decode run (:mod:`kvsim.core.decode_run`)
needs to go on, checked the way ``Scheduler._admit`` and ``Scheduler._swap_in`` decide (the V1 scheduler has its
own test), and the most free blocks at which that stays so where decode steps may give blocks back; for beam runs
(:mod:`kvsim.core.beam_run`), the same read step by step, the swap-in after the step's appends."""
from __future__ import annotations

from kvsim.core.block_manager import ALLOC_LATER
from kvsim.core.scheduler import FCFS_ORDER, Scheduler
from kvsim.core.scheduler_v1 import SchedulerV1

__all__ = ["admission_blocked", "admission_free_cap", "beam_step_fits", "head_blocked",
           "swap_in_blocked"]


def head_blocked(sched: Scheduler, num_seqs: int) -> bool:
    """Whether ``Scheduler._admit`` would stop at the waiting queue's head (seq cap, token budget, memory)."""
    head = sched.waiting[0]
    if num_seqs + len(head.seqs) > sched.cfg.max_num_seqs:
        return True
    if sched.cfg.policy == "chunked" and sched.cfg.max_num_batched_tokens - num_seqs <= 0:
        return True
    return sched.kv.can_admit(head) == ALLOC_LATER


def swap_in_blocked(sched: Scheduler, num_seqs: int) -> bool:
    """Whether ``Scheduler._swap_in`` would bring nothing back (its first group, FCFS, does not fit)."""
    head = min(sched.swapped, key=FCFS_ORDER)
    return num_seqs + len(head.seqs) > sched.cfg.max_num_seqs or not sched.kv.can_swap_in(head)


def admission_blocked(sched: Scheduler, num_seqs: int) -> bool:
    """Whether the next ``schedule`` adds no group: swapped groups first (no admission while any is
    swapped), else the waiting queue's head. Read with the memory free now, before the step's appends:
    appends only take memory, so a blocked head stays blocked through the steps that follow. The V1
    scheduler has its own test (``SchedulerV1.admission_stays_blocked``: it also refuses while a blocked
    head's prefix-cache hit waits in the free queue, where a decode step could evict it)."""
    if isinstance(sched, SchedulerV1):
        return not sched.waiting or sched.admission_stays_blocked(num_seqs)
    if sched.swapped:
        return swap_in_blocked(sched, num_seqs)
    if sched.waiting:
        return head_blocked(sched, num_seqs)
    return True


def admission_free_cap(sched: Scheduler, num_seqs: int) -> float:
    """Most free blocks at which the next ``schedule`` still admits nothing, for managers whose decode steps
    may free blocks (sliding windows: ``kv.admission_free_cap``); inf when memory is not what blocks it.
    Read where :func:`admission_blocked` holds."""
    cap = getattr(sched.kv, "admission_free_cap", None)
    if cap is None or not sched.waiting or sched.swapped:
        return float("inf")
    head, cfg = sched.waiting[0], sched.cfg
    if isinstance(sched, SchedulerV1):
        budget = cfg.max_num_batched_tokens - num_seqs
        if len(sched.running) >= cfg.max_num_seqs or budget <= 0:
            return float("inf")
        return cap(head, min(head.prefill_target - sched.kv.prefix_hits(head), budget))
    if num_seqs + len(head.seqs) > cfg.max_num_seqs:
        return float("inf")
    if cfg.policy == "chunked" and cfg.max_num_batched_tokens - num_seqs <= 0:
        return float("inf")
    return cap(head)


def beam_step_fits(sched: Scheduler, num_seqs: int, need: int) -> bool:
    """Whether the next ``schedule`` of a beam run (:mod:`kvsim.core.beam_run`; vllm policy), the running groups'
    appends taking ``need`` blocks, admits nothing, swaps nothing in and preempts nothing, and the blocks are on
    the free list. As :func:`admission_blocked`, but the swap-in read after the appends, as ``Scheduler._swap_in``
    reads it (the free blocks less the need: appends take exactly their need): a beam step's re-parenting gives
    blocks back, so the swap-in read before a step does not hold through the next."""
    bm = sched.kv.bm
    if need > len(bm._free):
        return False                        # (preempts, or evicts cached blocks)
    if sched.swapped:
        return _swap_in_blocked_after(sched, num_seqs, len(bm._free) + len(bm._evictable) - need)
    return not sched.waiting or head_blocked(sched, num_seqs)


def _swap_in_blocked_after(sched: Scheduler, num_seqs: int, free_after: int) -> bool:
    """``swap_in_blocked`` as ``Scheduler._swap_in`` reads it after the step's appends, ``free_after`` blocks
    then free: its first group (FCFS) over the sequence cap, or its blocks (``PagedKV.can_swap_in``'s count, the
    same from the first ask until it comes back) not fitting above the watermark."""
    head = min(sched.swapped, key=FCFS_ORDER)
    if num_seqs + len(head.seqs) > sched.cfg.max_num_seqs:
        return True
    kv = sched.kv
    kv.can_swap_in(head)                        # (counts the group's need where not yet asked)
    need = kv._swap_in_need[head.group_id]
    bm = kv.bm
    return need > bm.num_gpu_blocks - bm.watermark_blocks or free_after - need < bm.watermark_blocks
