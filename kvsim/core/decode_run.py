"""Decode runs: the scheduler's decode policy taken many iterations at once, through finishes.

When every running group is decoding (no prefill, no beam search), no step
needs a copy-on-write and the next ``schedule`` would neither admit a waiting
group nor swap a swapped one back in (the same checks as ``Scheduler._admit``
and ``Scheduler._swap_in``), the next iterations are fully determined: each
sequence gains one token per step, step ``j`` of a stretch of ``n`` sequences
attends to ``ctx_sum + j * n`` context tokens, and the groups whose last token
comes at a step finish at its end, as ``complete_step`` finishes them.

A :class:`DecodeRun` walks such a run one *segment* at a time: a segment ends
with the next step at which groups finish (or where free blocks run out: the
run stops there, the scheduler will preempt). Between segments the finished
groups are freed (``Scheduler.finish``, same order as stepping) and the run
goes on with the smaller running set while admission stays blocked. Its
aggregates are kept incrementally: the context sum and longest context, each
group's finishing step, and the KV manager's :mod:`decode tracker
<kvsim.core.decode_tracker>` (blocks per step, memory split).

Sliding-window KV groups can give blocks back during a run (a block leaves the
window): their tracker gets ``free_cap`` (:func:`admission_free_cap`, the most free
blocks at which the waiting head stays blocked) and cuts a segment before a step
leaving more, or one whose appends could preempt; ``ctx_limit`` lets the caller
keep every decode context of a segment below a bound (its pricing's linear range).

Clock-free like the rest of core: the caller (``kvsim.fastforward``) prices
each segment, may cut it shorter, and passes the time each segment ends. How a run is taken up again after the
steps taken one at a time since it ended, and a step taken from it, are :mod:`kvsim.core.decode_run_members`.
"""
from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

from kvsim.core.admission import admission_blocked, admission_free_cap, head_blocked, swap_in_blocked
from kvsim.core.decode_run_members import RunMembersMixin, _counts
from kvsim.core.decode_tracker import MIN_STEPS, ContiguousTracker, make_tracker
from kvsim.core.kv_paged import PagedKV
from kvsim.core.kv_paged_run import PagedDecodeTracker
from kvsim.core.scheduler import Scheduler

KEEP_RUNS = True    # take up the last run again where its groups are unchanged (off: every run starts afresh)

__all__ = ["MIN_STEPS", "DecodeRun", "Segment", "admission_blocked", "admission_free_cap", "head_blocked", "start_decode_run",
           "swap_in_blocked"]


@dataclass(slots=True)
class Segment:
    """The next steps of a run up to (and including) the next finishing step, or fewer where memory runs out."""
    first: int                 # run step the segment starts at
    steps: int                 # steps it may take (a caller may take fewer)
    num_seqs: int              # decoding sequences (one query token each per step)
    num_groups: int            # running groups (all decode)
    ctx_sum: int               # context tokens the first step attends to, summed over sequences
    ctx_max: int               # the longest context at the first step
    new_blocks: Sequence[int]  # blocks taken at each step (the tracker's own kind: array or list)
    finishes: bool             # groups finish at the end of the last step
    short_of_memory: bool = False   # cut where the free blocks run out: the step after its last does not fit
    #                                 (trackers whose cut means only that say so: ``CUT_MEANS_FULL``)


class DecodeRun(RunMembersMixin):
    """A decode run from the scheduler's state now; :func:`start_decode_run` builds it."""

    def __init__(self, sched: Scheduler, tracker):
        self.sched = sched
        self.tracker = tracker
        self.step = 0                            # run steps applied so far
        self.ctx_limit: int | None = None        # longest decode context a segment may reach (caller's pricing)
        self.num_seqs = 0
        self.ctx_sum = 0
        self._base: list[int] = []               # each sequence's context length at run step 0, sorted
        self._done_at: dict[int, list] = {}      # run step -> groups whose last token it produces
        base, done_at = self._base, self._done_at
        self._groups = list(sched.running)       # the groups in running order, and the step each finishes at
        fins = self._fins = []                   # (for keeping the run: :meth:`resume`)
        ctx_sum = num_seqs = 0
        for g in self._groups:
            spec, seqs = g.spec, g.seqs
            j = spec.output_len - seqs[0].generated - 1
            fins.append(j)
            at = done_at.get(j)
            if at is None:
                done_at[j] = [g]
            else:
                at.append(g)
            p = spec.prompt_len
            for s in seqs:
                n = p + s.generated
                ctx_sum += n
                base.append(n)
            num_seqs += len(seqs)
        self.ctx_sum, self.num_seqs = ctx_sum, num_seqs
        base.sort()
        self._finish_steps = sorted(self._done_at)
        self.num_groups = len(sched.running)
        self._seen = _counts(sched)              # the scheduler's step counts when the run (re)started
        self._group_of: dict | None = None       # sequence id -> its group, built where first asked for (group_of)

    def next_segment(self) -> Segment:
        """The steps up to the next finish, cut where the free blocks run out (possibly to 0 steps)."""
        j = self.step
        k = self._finish_steps[0] - j + 1
        top = self.ctx_limit
        cut = k if top is None else max(0, min(k, top - self._base[-1] - j + 1))
        nb = self.tracker.new_blocks(j, cut, self.sched.kv.free_blocks()) if cut else []
        return Segment(j, len(nb), self.num_seqs, self.num_groups, self.ctx_sum, self._base[-1] + j,
                       nb, len(nb) == k, len(nb) < cut and self.tracker.CUT_MEANS_FULL)

    def memory(self, seg: Segment, steps: int):
        """KV memory after each of the segment's first ``steps`` steps (a tracker's ``segment_memory``)."""
        nb = seg.new_blocks
        return self.tracker.segment_memory(seg.first, nb if steps == len(nb) else nb[:steps])

    def apply(self, seg: Segment, steps: int, end_s: float) -> bool:
        """Apply the segment's first ``steps`` steps ending at ``end_s``; finish the groups due then.

        Returns whether the run may go on (all steps taken, groups finished, some still running and
        admission still blocked)."""
        nb = seg.new_blocks                      # (whole when the segment is: trackers only read it)
        self.tracker.advance(seg.first, nb if steps == len(nb) else nb[:steps])
        sched = self.sched
        if sched.multi_seq:
            for g in sched.running:
                for s in g.seqs:
                    s.generated += steps
        else:                                    # one sequence per group
            for g in sched.running:
                g.seqs[0].generated += steps
        self.step += steps
        self.ctx_sum += self.num_seqs * steps
        if steps < seg.steps or not seg.finishes:
            return False
        self.finish_due(end_s)
        if not (self.sched.running and admission_blocked(self.sched, self.num_seqs)):
            return False
        if hasattr(self.tracker, "free_cap"):
            self.tracker.free_cap = admission_free_cap(self.sched, self.num_seqs)
        return True

    def finish_due(self, end_s: float) -> None:
        """The groups whose last token came at the run's last step (``self.step - 1``, the next finishing step)
        finish at ``end_s``: out of the run, then freed by the scheduler in the order stepping frees them."""
        f = self._finish_steps.pop(0)
        done = self._done_at.pop(f)
        fins = self._fins
        if len(done) == 1:                       # (mostly one group: out by its place, no pass over the run)
            i = fins.index(f)
            del self._groups[i], fins[i]
        else:
            self._groups = [g for g, x in zip(self._groups, fins) if x != f]
            self._fins = [x for x in fins if x != f]
        j = self.step
        group_of = self._group_of
        for g in done:
            self.tracker.drop(g, j)
            for s in g.seqs:
                n = s.length
                self.ctx_sum -= n
                del self._base[bisect_left(self._base, n - j)]
                if group_of is not None:
                    del group_of[s.seq_id]
            self.num_seqs -= len(g.seqs)
        self.num_groups -= len(done)
        self.sched.finish(done, end_s)

    def group_of(self) -> dict:
        """Each tracked sequence's group (kept up to date from the first call on: leaves, joins, finishes)."""
        if self._group_of is None:
            self._group_of = {sid: g for g in self._groups for sid in g.seq_ids}
        return self._group_of


def kept_run_state(sched: Scheduler, policy: str) -> DecodeRun | None:
    """The scheduler's kept decode run where it is still the scheduler's state, for the steps taken from it
    (:mod:`kvsim.core.decode_preempt`, :mod:`kvsim.core.decode_mixed`), else None: the plain ``Scheduler`` under
    ``policy``, no beam search, paged KV without prefix caching, the scheduler's step counts those the run saw last
    (it applied or took up every step since: a stepped iteration that decodes, preempts, swaps, copies or admits
    changes them) and its groups ``running``, in order."""
    run = sched._kept_run
    if run is None or type(sched) is not Scheduler or sched.cfg.policy != policy or sched.serves_beams:
        return None
    kv = sched.kv
    if type(kv) is not PagedKV or kv.enable_prefix_caching or type(run.tracker) is not PagedDecodeTracker:
        return None
    if run._seen != _counts(sched):
        return None                                 # stepped since the run stopped (or took it up)
    running = sched.running
    if run.num_groups != len(running) or running != run._groups:
        return None                                 # (groups changed: not the run's state)
    return run


def _resumed(sched: Scheduler) -> DecodeRun | None:
    """The scheduler's last decode run on the paged tracker taken up again (:meth:`DecodeRun.resume`) where it
    may be; None otherwise."""
    run = sched._kept_run
    if run is None or not run.resume():
        return None
    return run


def start_decode_run(sched: Scheduler) -> DecodeRun | None:
    """A decode run from the scheduler's state now (its last one taken up again where it may be), or None when
    the next step must be taken alone. A run taken up is returned even where the blocks of its first
    ``MIN_STEPS`` steps are not free (a fresh run is not): its first segment is then that short, which the
    caller checks (``next_segment`` cuts it before the first step whose blocks are not free; a second look
    here cost a paged run ~0.7% of its instructions). No change to the scheduler's or the KV manager's state."""
    running = sched.running
    sched._admits_next = False
    if sched.cfg.policy == "static" or not running:
        return None
    if sched.serves_beams and running[0].spec.beam_width > 1:
        return None             # beam search (the check below, on its first group: beam runs skip the rest)
    nseq = sched.num_running_seqs()
    if not admission_blocked(sched, nseq):      # (first: a request that just arrived is mostly admitted)
        # the next schedule admits or rejects the waiting head where nothing is swapped: no step is taken from
        # the kept run then (decode_preempt.kept_run reads this until the next call here)
        sched._admits_next = not sched.swapped
        return None
    if sched.cfg.policy != "vllm" or type(sched) is not Scheduler:
        # (the vllm Scheduler runs each admitted prompt whole in its step, complete_step ending its prefill: none
        # is in prefill between steps; chunked prefill's and V1's groups may be)
        for g in running:
            if g.prefill_done < g.prefill_target:   # in prefill
                return None
    if sched.serves_beams:
        for g in running:
            if g.spec.beam_width > 1:               # beam search
                return None
    run = _resumed(sched) if KEEP_RUNS else None
    if run is not None:
        return run      # (where its first steps' blocks are not free, its first segment is cut short: no run)
    tracker = make_tracker(sched.kv, sched.running)
    if tracker is None:
        return None
    if hasattr(tracker, "free_cap"):          # decode steps may free blocks: stop before admission could go on
        tracker.free_cap = admission_free_cap(sched, nseq)
    run = DecodeRun(sched, tracker)
    sched._kept_run = run if type(tracker) is PagedDecodeTracker or type(tracker) is ContiguousTracker else None
    return run

