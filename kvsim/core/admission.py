"""Whether the scheduler's next step admits nothing: the condition a decode run (:mod:`kvsim.core.decode_run`)
needs to go on, checked the way ``Scheduler._admit`` and ``Scheduler._swap_in`` decide (the V1 scheduler has its
own test), and the most free blocks at which that stays so where decode steps may give blocks back."""
from __future__ import annotations

from kvsim.core.block_manager import ALLOC_LATER
from kvsim.core.scheduler import FCFS_ORDER, Scheduler
from kvsim.core.scheduler_v1 import SchedulerV1

__all__ = ["admission_blocked", "admission_free_cap", "head_blocked", "swap_in_blocked"]


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
