"""The chunked-prefill step after a decode run: every group of the kept run decodes beside the prefills admitted,
the decode part taken from the run's aggregates.

Under the chunked policy a decode run mostly ends where a request arrives; the step ``schedule`` takes next
decodes every running group first (``_decode``), then admits waiting groups under the token budget left
(``_admit``), their prompts or first chunks in the same step. Where the kept run (:mod:`kvsim.core.decode_run`) is
still the scheduler's state (no stepped iteration since it stopped, its groups are ``running`` in order: none in
prefill) and nothing is swapped, that step's decode part is determined: each group takes its slot in order, the
sequences taking a block being the paged tracker's members of residue ``j % block_size`` (no copy-on-write inside
a run), unless those blocks are not all free (``_decode`` then preempts: the step is left to ``schedule``).

:func:`mixed_step` takes that step as ``schedule`` would: the same blocks in the same order (``append_slots_bulk``
with the known takers), the run moved to step ``j + 1`` and the step counted as ``complete_step`` counts a step in
which every decoding group took its slot (``uniform_steps``), then ``Scheduler._admit`` itself with the budget left.
Its plan lists the prefills only: the decode rows are the run's (``num_seqs``, ``ctx_sum``), which is all the
roofline's price (``mixed_plan_time``) and the record read of them. Without it each such step walked the ~10
running groups five times (the decode lists, their slots, the memory split, ``complete_step``): ~8% of a chunked
run's instructions. :meth:`MixedStep.state` is ``step_state`` of the plan ``schedule`` returns,
:meth:`MixedStep.complete` ``complete_step``'s side. Results are identical to stepping
(``tests/test_mixed_step.py``).
"""
from __future__ import annotations

from kvsim.core.decode_run import kept_run_state
from kvsim.core.decode_run_members import _counts
from kvsim.core.plan import StepPlan
from kvsim.core.scheduler import Scheduler

ENABLED = True      # off: every chunked step is scheduled (the equality tests run both ways)


class MixedStep:
    """A chunked step taken (see the module doc): what pricing and the record read, and its completion."""

    __slots__ = ("run", "plan", "num_seqs", "num_groups", "ctx_sum")

    def __init__(self, run, plan: StepPlan, num_seqs: int, num_groups: int, ctx_sum: int):
        self.run = run
        self.plan = plan                # the prefills only (decode ids and contexts left out)
        self.num_seqs = num_seqs        # decoding sequences and groups (the run's)
        self.num_groups = num_groups
        self.ctx_sum = ctx_sum          # context tokens the decode rows attend to, summed over them

    def state(self) -> tuple:
        """``step_state(plan, sched)`` of the plan ``schedule`` would have returned, read right after it: the
        memory split from the paged tracker's aggregates (the run's groups) plus the admitted groups' terms."""
        run, plan = self.run, self.plan
        sched, tracker = run.sched, run.tracker
        internal, logical = tracker.internal, tracker.logical
        if plan.prefill_group_ids:                  # (the admitted groups: no other group is in prefill)
            groups = sched.groups
            i, lg = sched.kv.split_terms([groups[gid] for gid in plan.prefill_group_ids])
            internal += i
            logical += lg
        n, n_prefill, prefill_tokens = self.num_seqs, len(plan.prefill_group_ids), plan.num_prefill_tokens
        return (n_prefill, prefill_tokens, n, n_prefill + self.num_groups, prefill_tokens + n, len(sched.running),
                len(sched.waiting), len(sched.swapped), 0, 0, 0, 0, tracker.bm.num_allocated) \
            + sched.kv.split_of(internal, logical).values()

    def complete(self, now: float) -> None:
        """``complete_step`` of the step at ``now``: the prefills' progress (groups whose prompt ends take their
        first token), then the groups finishing, in ``complete_step``'s order: prefills first, then the run's
        groups whose last token the step produced (in running order, as ``finish_due`` frees them)."""
        run, plan = self.run, self.plan
        sched = run.sched
        if plan.prefill_group_ids:
            done = sched._prefills_advance(plan, now)
            if done:
                sched.finish(done, now)
        if run._finish_steps and run._finish_steps[0] == run.step - 1:
            run.finish_due(now)


def mixed_step(sched: Scheduler, now: float) -> MixedStep | None:
    """Take the next step where it is the chunked step after the scheduler's kept run (see the module doc), its
    plan stamped ``now``; None (nothing changed: the caller schedules) otherwise. Call where ``schedule`` would be
    called next."""
    if not ENABLED or sched.swapped or not sched.running:
        return None
    run = kept_run_state(sched, "chunked")
    if run is None:
        return None
    kv, running = sched.kv, sched.running
    tracker = run.tracker
    j = run.step
    takers = tracker._members[j % tracker.bs]       # sequences taking a block at step j, in running order
    if len(takers) > kv.free_blocks():
        return None                                 # _decode preempts
    ctx_sum, num_seqs, num_groups = run.ctx_sum, run.num_seqs, len(running)
    run.take_step(running, takers, len(takers))
    sched.uniform_steps += 1
    run._seen = _counts(sched)                      # (the run in step: the groups admitted below join it later)
    plan = StepPlan(now_s=now)
    budget = sched.cfg.max_num_batched_tokens - num_seqs
    if budget > 0:
        sched._admit(plan, budget, chunked=True)       # (admitted groups join ``running``)
    return MixedStep(run, plan, num_seqs, num_groups, ctx_sum)
