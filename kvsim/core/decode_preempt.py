"""The preempting step of a decode run: the step a run stopped short of memory at, taken from the run's aggregates.

A decode run (:mod:`kvsim.core.decode_run`) stops where the next step's blocks are not free; the step after it
preempts. Where the run is still the scheduler's state (no stepped iteration since it stopped, its groups are
``running`` in order) that step is determined: ``Scheduler.schedule`` (vllm policy) admits nothing (a group is
swapped out, or the waiting head is blocked: checked again, arrivals may have come) and ``_decode`` walks the
running groups in order, giving each its slot while the free blocks cover its need and preempting the latest
arrivals (from the end of ``running``) where they do not, until the group fits or is itself the last one left.
A group's need at run step ``j`` is the number of its sequences that take a block there: the paged tracker's
members of residue ``j % block_size``, in running order (no copy-on-write inside a run).

:func:`preempting_step` takes that step as ``schedule`` would (same blocks taken in the same order around the
preemptions, the victims preempted by ``Scheduler._preempt`` itself) and keeps the run in step with it: victims
leave the run at step ``j``, the kept groups' sequences gain their slot and the run moves to ``j + 1``.
:meth:`PreemptingStep.complete` is ``complete_step``'s side (the step counted, the groups whose last token came
then finished at the step's end). The step's record row comes from the run's aggregates
(:meth:`PreemptingStep.state`: ``step_state`` of the plan ``schedule`` returns). Clock-free: the simulator
(:mod:`kvsim.run_step`) prices it. Results are identical to stepping (``tests/test_run_step.py``).
"""
from __future__ import annotations

from kvsim.core.admission import head_blocked
from kvsim.core.decode_run import kept_run_state
from kvsim.core.decode_run_members import _counts
from kvsim.core.plan import StepPlan
from kvsim.core.scheduler import Scheduler

ENABLED = True      # off: no step is taken from a run, here or in decode_swap_in (the equality tests run both ways)


class PreemptingStep:
    """A preempting step taken (see the module doc): what pricing and the record read, and its completion."""

    __slots__ = ("run", "plan", "num_seqs", "num_groups", "ctx_sum")

    def __init__(self, run, plan: StepPlan, num_seqs: int, num_groups: int, ctx_sum: int):
        self.run = run
        self.plan = plan                # preempted and swap_out only (decode ids and contexts left out)
        self.num_seqs = num_seqs        # decoding sequences and groups (the groups kept)
        self.num_groups = num_groups
        self.ctx_sum = ctx_sum          # context tokens the step attends to, summed over its sequences

    def state(self) -> tuple:
        """``step_state(plan, sched)`` of the plan ``schedule`` would have returned, read right after it: the
        memory split from the paged tracker's aggregates (``PagedKV.memory_split`` of the kept groups)."""
        run, plan = self.run, self.plan
        sched, tracker = run.sched, run.tracker
        n = self.num_seqs
        return (0, 0, n, self.num_groups, n, len(sched.running), len(sched.waiting), len(sched.swapped),
                len(plan.preempted), len(plan.swap_out), 0, 0, tracker.bm.num_allocated) \
            + sched.kv.split_of(tracker.internal, tracker.logical).values()

    def complete(self, now: float) -> None:
        """``complete_step`` of the step at ``now``: counted as a step in which every group not preempted took
        its slot (``tail_steps``), the groups whose last token it produced finished, the run in step again."""
        run = self.run
        sched = run.sched
        sched.tail_steps += 1
        if run._finish_steps and run._finish_steps[0] == run.step - 1:
            run.finish_due(now)
        run._seen = _counts(sched)


def kept_run(sched: Scheduler):
    """The scheduler's kept decode run where it is the scheduler's state and ``schedule`` (vllm policy, paged KV
    without prefix caching, no beam search) would admit nothing next, else None. The run is the scheduler's state
    where the scheduler's step counts are those it saw last (it applied or took up every step since: a stepped
    iteration that decodes, preempts, swaps, copies or admits changes them) and its groups are ``running``."""
    if sched._admits_next or not ENABLED:
        return None                                 # (_admits_next: start_decode_run found the head admitted next)
    run = kept_run_state(sched, "vllm")
    if run is None:
        return None
    if not sched.swapped and sched.waiting and not head_blocked(sched, run.num_seqs):
        return None                                 # schedule would admit (or reject) the waiting head
    return run


def preempting_step(sched: Scheduler, run) -> PreemptingStep | None:
    """Take the next step where it is the preempting step of ``run`` (``kept_run(sched)``: see the module doc) —
    the step's blocks are not free — or None (nothing changed: the caller steps). Call where ``schedule`` would be
    called next."""
    kv, tracker = sched.kv, run.tracker
    j, bs = run.step, tracker.bs
    takers = tracker._members[j % bs]               # sequences taking a block at step j, in running order
    free = kv.free_blocks()
    if len(takers) <= free:
        return None                                 # every need is covered: no preemption
    running = sched.running
    group_of = run.group_of()
    bm = kv.bm
    plan = StepPlan()
    preempt = sched._preempt
    end = len(running)                              # running[end:] preempted (latest arrivals first)
    victims = set()
    taken = 0                                       # takers given their block so far
    i, n = 0, len(takers)
    while i < n:
        g = group_of[takers[i]]
        if id(g) in victims:
            break                                   # (preempted: so is every later group)
        k = i + 1
        while k < n and group_of[takers[k]] is g:
            k += 1
        need = k - i
        if free < need:
            # schedule appends the groups given their slot so far, then preempts: their blocks first
            bm.append_slots_bulk([], 1, takers[taken:i])
            taken = i
            while free < need:
                victim = running[end - 1]           # (g itself where no later group is left)
                end -= 1
                preempt(plan, victim)
                victims.add(id(victim))
                free = kv.free_blocks()
                if victim is g:
                    break
            else:
                free -= need
        else:
            free -= need
        i = k
    m = i                                           # takers[:m]: those of the groups kept (victims: the last groups)
    while m > taken and id(group_of[takers[m - 1]]) in victims:
        m -= 1
    # the run: victims out at step j, then the kept groups' slots (the takers left take their blocks first)
    run._leave(range(end, len(running)), j)
    del run._groups[end:], run._fins[end:]
    run.num_groups = end
    sched.running = kept = running[:end]
    ctx_sum, num_seqs = run.ctx_sum, run.num_seqs
    run.take_step(kept, takers[taken:m], m)     # (takers[:taken] took theirs before the preemptions)
    return PreemptingStep(run, plan, num_seqs, end, ctx_sum)
