"""A decode run's next step where every group takes its slot: the uniform decode from the run, then the swap-ins.

Where the kept run is the scheduler's state (:func:`kvsim.core.decode_preempt.kept_run`: ``schedule`` admits
nothing) and the blocks of its next step are free, ``schedule`` (vllm policy) gives every running group its slot
(``_decode`` preempts nothing) and then brings swapped groups back while they fit (``_swap_in``, FCFS): the step a
run stops for when a finish lets a swapped group back in, or takes alone where a segment would be too short.
:func:`swap_in_step` takes it so: the run's step through its tracker (the blocks ``_decode``'s appends take, in
the same order), then ``Scheduler._swap_in`` itself. The groups swapped in are not joined here: the next run
takes them up (``DecodeRun.resume``). :meth:`SwapInStep.complete` is ``complete_step``'s side; the record row is
``step_state``'s (the memory split from the tracker where nothing came back, else ``memory_split``). Results are
identical to stepping (``tests/test_run_step.py``).
"""
from __future__ import annotations

from kvsim.core.decode_run_members import _counts
from kvsim.core.plan import StepPlan
from kvsim.core.scheduler import Scheduler


class SwapInStep:
    """A uniform decode step taken from the run, with the swap-ins after it: what pricing and the record read."""

    __slots__ = ("run", "plan", "num_seqs", "num_groups", "ctx_sum")

    def __init__(self, run, plan: StepPlan, num_seqs: int, num_groups: int, ctx_sum: int):
        self.run = run
        self.plan = plan                # the swap-ins: their pairs, copies, decode ids and contexts
        self.num_seqs = num_seqs        # decoding sequences and groups, the run's and those swapped in
        self.num_groups = num_groups
        self.ctx_sum = ctx_sum          # context tokens the step attends to, summed over its sequences

    def state(self) -> tuple:
        """``step_state(plan, sched)`` of the plan ``schedule`` would have returned, read right after it."""
        run, plan = self.run, self.plan
        sched, tracker = run.sched, run.tracker
        bm = tracker.bm
        n = self.num_seqs
        head = (0, 0, n, self.num_groups, n, len(sched.running), len(sched.waiting), len(sched.swapped), 0, 0,
                len(plan.swap_in), len(plan.copy_pairs), bm.num_allocated)
        kv = sched.kv
        back = plan.decode_group_ids
        if not back:
            return head + kv.split_of(tracker.internal, tracker.logical).values()
        if len(sched.running) != run.num_groups + len(back):
            return head + kv.memory_split(sched.running).values()       # (a group came back mid prefill)
        # the run's groups' terms from the tracker, those of the groups that came back counted (running holds
        # both: memory_split's sums, a group at a time)
        groups = sched.groups
        internal, logical = kv.split_terms([groups[gid] for gid in back])
        return head + kv.split_of(tracker.internal + internal, tracker.logical + logical).values()

    def complete(self, now: float) -> None:
        """``complete_step`` of the step at ``now``: counted as it counts (a uniform step, or a step with copies),
        each decoding sequence one token on, the groups whose last token it produced finished (the run's first,
        then those swapped in: the plan's order), the run in step again."""
        run, plan = self.run, self.plan
        sched = run.sched
        if plan.copy_pairs:
            sched.kv_steps += 1
        else:
            sched.uniform_steps += 1
        done = []
        groups = sched.groups
        for gid in plan.decode_group_ids:
            g = groups[gid]
            for s in g.seqs:
                s.generated += 1
            if g.seqs[0].generated >= g.spec.output_len:
                done.append(g)
        if run._finish_steps and run._finish_steps[0] == run.step - 1:
            run.finish_due(now)
        if done:
            sched.finish(done, now)
        run._seen = _counts(sched)


def swap_in_step(sched: Scheduler, run) -> SwapInStep | None:
    """Take the next step where it is a uniform step of ``run`` (``kept_run(sched)``: see the module doc), or None
    (nothing changed: the caller steps). Call where ``schedule`` would be called next."""
    if not run.num_groups:
        return None
    tracker = run.tracker
    j = run.step
    takers = tracker._members[j % tracker.bs]
    if len(takers) > sched.kv.free_blocks():
        return None                                 # the step preempts (decode_preempt)
    ctx_sum, num_seqs, num_groups = run.ctx_sum, run.num_seqs, run.num_groups
    tracker.advance(j, [len(takers)])               # _decode's appends: every group's slot, in running order
    if sched.multi_seq:
        for g in sched.running:
            for s in g.seqs:
                s.generated += 1
    else:
        for g in sched.running:
            g.seqs[0].generated += 1
    run.step = j + 1
    run.ctx_sum += num_seqs
    plan = StepPlan()
    if sched.swapped:
        sched._swap_in(plan)
    return SwapInStep(run, plan, num_seqs + len(plan.decode_context_tokens), num_groups + len(plan.decode_group_ids),
                      ctx_sum + sum(plan.decode_context_tokens))
