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
each segment, may cut it shorter, and passes the time each segment ends.
"""
from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Sequence
from dataclasses import dataclass

from kvsim.core.admission import admission_blocked, admission_free_cap, head_blocked, swap_in_blocked
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


class DecodeRun:
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

    def resume(self) -> bool:
        """Take up this (ended) run again where the scheduler's running groups begin with some of its groups, in
        its order, each ``d`` steps on (taken one at a time since, ``d`` the same for all), followed by new ones
        (admitted or swapped in since): its other groups (finished or preempted since, wherever they stood)
        leave the run at its step, the rest catch up ``d`` steps and the new ones join, and the run is in the
        state a fresh one would have, its steps shifted by ``self.step``. False (nothing changed) otherwise."""
        running, old, fins, j = self.sched.running, self._groups, self._fins, self.step
        n_old = len(old)
        sched = self.sched
        kv_steps, uniform, tail, joins = self._seen
        if sched.kv_steps == kv_steps:
            # since the run stopped, only steps in which every decoding group still running took its slot (d of
            # them), admissions and swap-ins: the groups still here are d steps on; the run takes them up without
            # reading each one, (1) when none left (no preemption) and any new ones come after them, or (2) when
            # none joined and the ones left were its last
            d = sched.uniform_steps - uniform + sched.tail_steps - tail
            if sched.tail_steps == tail and running[:n_old] == old:
                new = running[n_old:]
                if self.tracker.shares_partial(new):
                    return False
                self._catch_up(j, d)
                self._join(new, self.step)
                self._seen = _counts(sched)
                return True
            m = len(running)
            if sched.joins == joins and m < n_old and running == old[:m]:
                self._leave(range(m, n_old), j)
                del old[m:], fins[m:]
                self._catch_up(j, d)
                self.num_groups = m
                self._seen = _counts(sched)
                return True
        # the longest start of ``running`` that is a subsequence of ``old``: the groups kept (their positions)
        kept: list[int] = []
        i = 0
        for g in running:
            while i < n_old and old[i] is not g:
                i += 1
            if i == n_old:
                break
            kept.append(i)
            i += 1
        k = len(kept)
        d = 0
        if k:
            g, f = running[0], fins[kept[0]]
            d = f - (g.spec.output_len - g.seqs[0].generated - 1) - j
            if d < 0:
                return False
            for g, x in zip(running[1:k], kept[1:]):
                if g.spec.output_len - g.seqs[0].generated - 1 + j + d != fins[x]:
                    return False
        new = running[k:]                            # (may hold groups gone from the run again: out, then in anew)
        tracker = self.tracker
        if not tracker.moved(running[:k], j, d) or tracker.shares_partial(new):
            return False
        if k < n_old:                                # groups gone since: out at step j
            keep = set(kept)
            self._leave([x for x in range(n_old) if x not in keep], j)
            if k == kept[-1] + 1 if k else True:     # the kept ones are the first k: cut the tails
                del old[k:], fins[k:]
            else:
                old[:] = [old[x] for x in kept]
                fins[:] = [fins[x] for x in kept]
        self._catch_up(j, d)
        self._seen = _counts(sched)
        self._join(new, self.step)
        return True

    def _leave(self, gone, j: int) -> None:
        """The groups at positions ``gone`` of the run (finished or preempted since it stopped) leave it at step
        ``j``: their aggregates out (the caller removes them from the run's lists)."""
        old, fins, tracker = self._groups, self._fins, self.tracker
        for x in gone:
            g, f = old[x], fins[x]
            tracker.drop(g, j)
            n = g.spec.prompt_len + g.spec.output_len - 1 - f + j       # their context at step j
            self.ctx_sum -= n * len(g.seqs)
            for _ in g.seqs:
                del self._base[bisect_left(self._base, n - j)]
            self.num_seqs -= len(g.seqs)
            if self._group_of is not None:
                for sid in g.seq_ids:
                    del self._group_of[sid]
            at = self._done_at[f]
            at.remove(g)
            if not at:
                del self._done_at[f]
                self._finish_steps.remove(f)

    def _catch_up(self, j: int, d: int) -> None:
        """The run's groups took ``d`` steps outside it since step ``j`` (stepped): the aggregates follow."""
        if d:
            self.tracker.caught_up(j, d)
            self.step = j + d
            self.ctx_sum += self.num_seqs * d

    def _join(self, new: list, j: int) -> None:
        """Groups admitted or swapped in join the run ``j`` steps in (after the tracked ones, in running order)."""
        self.tracker.extend(new, j)
        fins, old = self._fins, self._groups
        base, done_at = self._base, self._done_at
        for g in new:
            spec, seqs = g.spec, g.seqs
            f = spec.output_len - seqs[0].generated - 1 + j
            fins.append(f)
            at = done_at.get(f)
            if at is None:
                done_at[f] = [g]
                insort(self._finish_steps, f)
            else:
                at.append(g)
            p = spec.prompt_len
            for s in seqs:
                n = p + s.generated
                self.ctx_sum += n
                insort(base, n - j)
            self.num_seqs += len(seqs)
        old.extend(new)
        self.num_groups = len(old)
        if self._group_of is not None:
            for g in new:
                for sid in g.seq_ids:
                    self._group_of[sid] = g

    def take_step(self, groups: list, takers: list[int], new_blocks: int) -> None:
        """One step of the run taken alone, beside what a segment models (a step that preempts, or that admits
        prompts beside the run): ``groups``, the run's groups that decode in it (running order), each take their
        next slot, ``takers`` the blocks still to be taken (sequences whose last block is full, in the tracker's
        order), ``new_blocks`` the blocks the run's sequences take in the step in all; the run moves one step on."""
        tracker, j = self.tracker, self.step
        tracker.bm.append_slots_bulk(tracker.seq_ids, 1, takers)
        tracker._count(j, 1, [new_blocks])
        if self.sched.multi_seq:
            for g in groups:
                for s in g.seqs:
                    s.generated += 1
        else:
            for g in groups:
                g.seqs[0].generated += 1
        self.step = j + 1
        self.ctx_sum += self.num_seqs


def _counts(sched: Scheduler) -> tuple[int, int, int, int]:
    """The scheduler's step and join counts (see ``Scheduler.__init__``): what a kept run compares on resume."""
    return sched.kv_steps, sched.uniform_steps, sched.tail_steps, sched.joins


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
    the next step must be taken alone. No change to the scheduler's or the KV manager's state."""
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
        return run if run.tracker.first_steps_fit(run.step, sched.kv.free_blocks()) else None
    tracker = make_tracker(sched.kv, sched.running)
    if tracker is None:
        return None
    if hasattr(tracker, "free_cap"):          # decode steps may free blocks: stop before admission could go on
        tracker.free_cap = admission_free_cap(sched, nseq)
    run = DecodeRun(sched, tracker)
    sched._kept_run = run if type(tracker) is PagedDecodeTracker or type(tracker) is ContiguousTracker else None
    return run

