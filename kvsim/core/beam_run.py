"""Beam decode runs: the scheduler's beam-search decode steps taken one after another without a plan per step.

Between an admission and the next finish, a vLLM-policy scheduler whose running groups are all beam groups past
their prompts repeats the same step: nothing is admitted or swapped back in (``admission_blocked``), every group
takes its next slot (no preemption: the step's blocks are free), the seeded beam model draws every group's
parents (:class:`kvsim.core.beam.BeamParents`, step after step from the same stream) and the groups are
re-parented. A :class:`BeamRun` takes such steps one at a time, doing what the block manager's
``append_slots`` over the groups' sequences in running order, then ``reparent_groups`` do, inlined (the same
blocks taken, ref counts changed and blocks released, in the same order), so tables, ref counts, fills and the
free list end as stepping leaves them, without the ``StepPlan``, ``schedule`` and ``complete_step`` around each
step (and without the per-sequence ``num_tokens`` writes: every beam of a group holds as many slots, kept once
per group and written back when the run ends). A group's re-parenting is looked up by its parents' code
(:meth:`~kvsim.core.beam.BeamParents.many_codes`): the beams that take another's history, and how many beams
share a parent. Every beam's table list is changed in place, its differing suffix replaced by its parent's:
where a later beam of the step reads it as its parent's, once the group's last beam is re-parented (the new
suffix read before: ``reparent_groups`` instead gives every re-parented beam a copy of its parent's list, one
per step and beam that cost a walk of the whole table; the lists' contents are the same, only their identities
differ, and nothing holds a table list across steps). Unlike a non-beam decode run
(:mod:`kvsim.core.decode_run`) its blocks cannot be known ahead (re-parenting frees blocks and copy-on-write
takes them at random), so each step is applied before the next is checked.

What a step needs is kept from step to step: the new blocks of the next appends (a group whose sequences end on
a full block takes one block each, else one copy per beam sharing a parent's last block beyond the first: after
an append every last block is private, so after re-parenting beam ``j``'s last block has as many holders as
``j`` has children), and the memory split's group terms (``PagedKV.split_terms``), which change only where a
group's sequences start a block (every beam of a group has the same length; a sequence never holds more than
its final KV tokens, so its internal fragmentation is its last block's slots past them).

A run cut by an arrival or a finish is taken up again by the next :func:`start_beam_run` where nothing but
arrivals and prompt-only steps happened since (its groups, less those it finished, still the first running ones):
its tables, plans and sums stand, so only the groups admitted since are read (:mod:`kvsim.core.beam_groups`:
reading groups, joins, the run's end and its taking up).

Clock-free like the rest of core: the caller (:mod:`kvsim.beam_forward`) prices each step, records it, stops at
the next arrival, and passes the time the run ends (:meth:`BeamRun.end`: tokens, finished groups).
"""
from __future__ import annotations

from kvsim.core.admission import beam_step_fits, head_blocked
from kvsim.core.beam import parents_of_code
from kvsim.core.beam_groups import RunGroupsMixin, groups_state
from kvsim.core.block_manager import PagedBlockManager
from kvsim.core.block_reparent import reparent_suffix
from kvsim.core.kv_paged import PagedKV
from kvsim.core.scheduler import Scheduler


class BeamRun(RunGroupsMixin):
    """Beam decode steps from the scheduler's state now; :func:`start_beam_run` builds it (see the module doc).

    Invariants between steps: ``groups`` is ``sched.running`` (unchanged through the run); ``tabs[i]`` are the
    block manager's table lists of group ``i``'s sequences, each holding ``lens[i]`` KV slots (the manager's
    ``num_tokens`` of the run's sequences are set only by :meth:`end`: nothing else reads them meanwhile);
    ``need`` is the blocks the next step's appends take; ``internal`` and ``logical`` are
    ``kv.split_terms(groups)`` of the slots held now. The manager's ``fill`` of the tables' last blocks is written
    only where such a block stops being last (it is then full), is released, or the run ends (:meth:`end`): a
    group's last blocks all hold its slots past its full blocks, so the run counts their slots from ``lens``
    (nothing else reads them meanwhile); ``copy_of[i]`` are group ``i``'s beams whose last block the next partial
    append copies (read off the ref counts where the run starts, then its re-parenting plan's)."""

    def __init__(self, sched: Scheduler, state: tuple):
        self.sched = sched
        kv = sched.kv
        self.kv, self.bm = kv, kv.bm
        self.cfg = sched.cfg
        # each group's sequence ids and table lists, its slots per sequence, final KV tokens, beams copied at the
        # next partial append, width and re-parenting plans by code; the next step's context tokens (each
        # sequence attends to its slots after the append), the split terms before the next append and the blocks
        # it takes (:func:`groups_state`), and the steps until the first group's last token (the run ends with it)
        self.groups, self.ids, self.tabs, self.lens, self.finals, self.copy_of, self.widths, self.plans = \
            [], [], [], [], [], [], [], []
        self.ctx_sum = self.internal = self.logical = self.need = self.num_seqs = 0
        self._join(sched.running, state)
        self.left = state[6]
        self.steps = 0
        self.done: list = []                    # the groups finished where the run last ended (:meth:`end`)
        self.dropped: list[int] = []            # the step's replaced blocks, released after its record

    def can_step(self) -> bool:
        """Whether the next ``schedule`` would be this run's next step (nothing admitted, swapped in or preempted)
        and its blocks come off the free list (no prefix-cache eviction: the engine loop takes that step)."""
        return self.left > 0 and beam_step_fits(self.sched, self.num_seqs, self.need)

    def step(self) -> int:
        """Take the next step: every group's appends (the state ``schedule`` leaves: ``append_slots`` over the
        groups' sequences in running order, inlined), then its parents drawn and its tables re-parented
        (``reparent_groups``, inlined: the same tables' contents and ref counts), group after group in one walk;
        returns the step's copy-on-write copies. The replaced blocks are released by :meth:`release`, after the
        step's record is read (:meth:`record_terms`): ``reparent_groups`` releases them after every group's tables
        are set, and appends take only free blocks, so a group's re-parenting may come before the next group's
        appends."""
        cfg = self.cfg
        codes = self.sched._beam_parents.many_codes(self.widths, cfg.beam_keep_prob, cfg.beam_decay)
        bm = self.bm
        bs = bm.block_size
        free, ref, fill = bm._free, bm.ref, bm.fill
        pop = free.pop
        lens, widths, finals, plans_of = self.lens, self.widths, self.finals, self.plans
        internal, logical = self.internal, self.logical
        dropped = self.dropped
        copy_of = self.copy_of
        copies = copied = added = need = 0
        full = bs - 1                           # (an append at this offset fills its block: the next takes one)
        i = -1
        for tabs, plans, code in zip(self.tabs, plans_of, codes):
            i += 1
            # the group's appends
            o = lens[i]
            lens[i] = o + 1
            r = o % bs                          # (the offset of the slot appended in its last block)
            if r == 0:                          # a new block each; the group's split terms grow
                for table in tabs:
                    fill[table[-1]] = bs        # (a last block's fill is written as it stops being last)
                    b = pop()
                    ref[b] = 1
                    table.append(b)
                m = widths[i]
                added += m
                logical += m * bs
                cap, f = o + bs, finals[i]
                if cap > f:
                    internal += m * (cap - f)
            else:
                js = copy_of[i]
                if js:                          # shared last blocks copied (the last holder writes in place)
                    for j in js:
                        table = tabs[j]
                        nb = pop()
                        ref[nb] = 1
                        ref[table[-1]] -= 1
                        table[-1] = nb
                    m = len(js)
                    copies += m
                    copied += m * r
            # its re-parenting by its parents' code
            plan = plans.get(code)
            if plan is None:
                plan = plans[code] = _plan(parents_of_code(code, len(tabs)))
            moves, copy_of[i], waits, ncopy = plan
            # the next appends: a block each where the sequences end on a full block, else a copy for each beam
            # holding a parent's last block but its last child
            need += widths[i] if r == full else ncopy
            if not moves:
                continue                        # every beam kept its own history
            top = len(tabs[0]) - 1              # (every table of the group is as long)
            below = top - 1
            last = r + 1                        # (the last blocks' fill: not kept in ``fill`` meanwhile)
            later = [] if waits else None       # (changes to tables a later beam still reads as its parent's)
            for j, p, now in moves:
                src, dst = tabs[p], tabs[j]
                # (mostly the last block alone differs, or the last two just after a block boundary: equality is
                # prefix-closed, so they are the suffix past the shared prefix; after the appends every last block
                # is private, and no table has changed before its last read, so the last blocks differ)
                if top and src[below] == dst[below]:
                    b = src[top]
                    ref[b] += 1
                    d = dst[top]
                    fill[d] = last
                    dropped.append(d)
                    if now:
                        dst[top] = b
                    else:
                        later.append((dst, top, (b,)))
                elif top > 1 and src[top - 2] == dst[top - 2]:
                    a, b = src[below], src[top]
                    ref[a] += 1
                    ref[b] += 1
                    d = dst[top]
                    fill[d] = last
                    dropped.append(d)           # (last block first)
                    dropped.append(dst[below])
                    if now:
                        dst[below] = a
                        dst[top] = b
                    else:
                        later.append((dst, below, (a, b)))
                else:
                    fill[dst[top]] = last
                    lo = reparent_suffix(src, dst, ref, dropped)
                    if now:
                        dst[lo:] = src[lo:]
                    else:
                        later.append((dst, lo, src[lo:]))
            if later:
                for dst, lo, blocks in later:
                    dst[lo:] = blocks
        bm.num_allocated += added + copies
        bm.used_slots += copied + self.num_seqs
        self.internal, self.logical = internal, logical
        self.need = need
        sched = self.sched
        if copies:
            sched.kv_steps += 1
        else:
            sched.uniform_steps += 1
        return copies

    def record_terms(self) -> tuple[int, int, int, int, int, int, int]:
        """The step's record's memory columns (blocks in use, used, internal, reserved, external, free, logical
        slots) after its appends (before its releases), as ``PagedKV.memory_split`` gives them."""
        bm, bs = self.bm, self.bm.block_size
        alloc = bm.num_allocated * bs
        used = bm.used_slots
        internal = min(self.internal, alloc - used)
        return (bm.num_allocated, used, internal, alloc - used - internal, 0, self.kv.capacity_slots - alloc,
                self.logical)

    def release(self) -> None:
        """The step's end: the blocks its re-parenting replaced released (each group's replaced suffixes, last
        block first, in beam order: ``reparent_groups``' order)."""
        dropped = self.dropped
        if dropped:
            self.bm._release_all(dropped)
            dropped.clear()
        self.steps += 1
        self.left -= 1
        self.ctx_sum += self.num_seqs

def _plan(parents: list[int]) -> tuple[tuple[tuple[int, int, bool], ...], tuple[int, ...], bool, int]:
    """Re-parenting by ``parents`` (sorted): ``(beam, parent, now)`` for each beam that takes another beam's
    history, in beam order; the beams but the last of each parent's children (each copies the parent's last block
    at a partial block's append; the last child writes in place); whether any change waits; and how many beams the
    second names (the blocks the next partial append takes). A beam's table is changed as its turn comes (``now``)
    where no later beam in that order takes its history, else after the group's last beam (it is still read as a
    parent's table)."""
    moves = [(i, p) for i, p in enumerate(parents) if p != i]
    moves = tuple((i, p, all(q != i for j, q in moves if j > i)) for i, p in moves)
    copy_of = tuple(i for i in range(len(parents) - 1) if parents[i] == parents[i + 1])
    return moves, copy_of, not all(now for _, _, now in moves), len(copy_of)


def prompt_only(plan) -> bool:
    """Whether a stepped plan only computed prompts (no group decoded, was preempted or swapped): the running
    groups of a beam run it followed are as the run left them (``SimEngine`` keeps the run past such a step)."""
    return not (plan.decode_group_ids or plan.preempted or plan.swap_out or plan.swap_in)


def start_beam_run(sched: Scheduler, kept: BeamRun | None = None) -> BeamRun | None:
    """A beam run from the scheduler's state now whose first step may be taken (:meth:`BeamRun.can_step`), or
    None where the next step must be scheduled (it admits, swaps in or preempts, or a policy, KV manager or group
    this module does not model). No change to any state but ``kept``'s step count.

    ``kept`` is a run that ended, given where nothing but arrivals and prompt-only steps happened since: where the
    running groups are its own but those it finished, then any admitted since (:meth:`BeamRun.take_up`), it is
    taken up again (its steps counted from 0), only the admitted groups read."""
    if kept is not None and sched.running and kept.take_up(sched.running):
        nseq = kept.num_seqs
        if sched.waiting and not sched.swapped and not head_blocked(sched, nseq):
            return None
        if not beam_step_fits(sched, nseq, kept.need):
            return None
        kept.steps = 0
        return kept
    if type(sched) is not Scheduler or sched.cfg.policy != "vllm" or not sched.serves_beams:
        return None
    running = sched.running
    if not running or sched.count_sampling:
        return None
    kv = sched.kv
    if type(kv) is not PagedKV or type(kv.bm) is not PagedBlockManager:
        return None
    nseq = sched.num_running_seqs()
    if sched.waiting and not sched.swapped and not head_blocked(sched, nseq):
        return None                             # (the step admits: mostly a request that just arrived)
    state = groups_state(running, kv.bm)
    if state is None or not beam_step_fits(sched, nseq, state[-1]):
        return None
    return BeamRun(sched, state)
