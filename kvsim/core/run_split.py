"""The memory split of a step that only admits beside a kept decode run, from the run's aggregates.

Under the vllm policy a step that admits runs the admitted prompts alone: the running groups' slots stay as the
last decode run left them. Where that run (:mod:`kvsim.core.decode_run`) is still the scheduler's state but for the
groups the step admitted (no stepped iteration that decoded, preempted, swapped or copied since it stopped; its
groups are ``running`` in order, the admitted ones after them), :meth:`PagedKV.memory_split` of ``running`` is the
run's paged tracker's aggregates (internal and logical slots of its groups, as the steps taken from a run read
them: :mod:`kvsim.core.decode_preempt`) plus the admitted groups' own terms (``PagedKV.split_terms``), under the
block manager's counters now. The simulator's record row of such a step (:func:`kvsim.records.step_state`) reads
it so, without a pass over every running group (~2% of a paged run: one such step per request). Likewise Orca's
contiguous reservations: the run's tracker's internal and reserved sums (where it keeps them) plus the admitted
groups' ``ContiguousKV.group_split``. Equal to ``memory_split`` (``tests/test_run_split.py``).
"""
from __future__ import annotations

from kvsim.core.decode_tracker import ContiguousTracker
from kvsim.core.kv import MemorySplit
from kvsim.core.kv_contiguous import ContiguousKV
from kvsim.core.kv_paged import PagedKV
from kvsim.core.kv_paged_run import PagedDecodeTracker
from kvsim.core.plan import StepPlan
from kvsim.core.scheduler import Scheduler

ENABLED = True      # off: every step's split is memory_split's (the equality tests run both ways)


def admitting_split(plan: StepPlan, sched: Scheduler) -> MemorySplit | None:
    """``sched.kv.memory_split(sched.running)`` read right after ``schedule`` returned ``plan``, where ``plan``
    only admits (prefills of the groups it admitted, nothing else) beside the scheduler's kept run (see the
    module doc); None otherwise (the caller asks ``memory_split``)."""
    run = sched._kept_run
    if run is None or not ENABLED or not plan.prefill_group_ids or plan.decode_group_ids:
        return None
    if plan.preempted or plan.swap_out or plan.swap_in or plan.copy_pairs:
        return None
    kv, tracker = sched.kv, run.tracker
    if type(sched) is not Scheduler:
        return None
    if type(kv) is PagedKV:
        if type(tracker) is not PagedDecodeTracker:
            return None
    elif type(kv) is not ContiguousKV or type(tracker) is not ContiguousTracker or tracker._sums is None:
        return None
    kv_steps, uniform, tail, _ = run._seen          # (joins: the groups just admitted)
    if kv_steps != sched.kv_steps or uniform != sched.uniform_steps or tail != sched.tail_steps:
        return None                                 # stepped since the run stopped (or took it up)
    running, n = sched.running, run.num_groups
    new = running[n:]
    if len(new) != len(plan.prefill_group_ids) or running[:n] != run._groups:
        return None                                 # (groups changed: not the run's state and the admitted)
    for g, gid in zip(new, plan.prefill_group_ids):
        if g.group_id != gid:
            return None
    if type(kv) is ContiguousKV:
        internal, reserved = kv.group_split(new)
        return kv.split_with(internal + tracker._sums[0], reserved + tracker._sums[1])
    internal, logical = kv.split_terms(new)
    return kv.split_of(internal + tracker.internal, logical + tracker.logical)
