"""A decode step's KV slots under memory pressure, for :class:`kvsim.core.scheduler.Scheduler`.

Every running group that is not in prefill decodes one token, so each of its sequences needs its next KV slot
(a new block where the last one is full, a copy where it is shared). When the free blocks cover every need the
groups are appended in order. Otherwise the scheduler preempts, as the PagedAttention paper's engine does:
all-or-nothing per group, latest arrival first (FCFS), until the group whose turn it is fits, or that group
itself is the last one left. A preempted group is swapped out to CPU blocks (``swap``) or freed to be
recomputed from its prompt and output so far (``recompute``); ``auto`` swaps groups of several sequences and
recomputes single ones, as vLLM V0 (and recomputes where the CPU blocks cannot hold a group). Swapped groups come back (FCFS) in a step that preempted nothing.

The plans that gave every decoding group its slot (``_uniform_plan``) or every group not preempted
(``_tail_plan``) are marked, so :meth:`complete_step` can count them for kept decode runs
(:mod:`kvsim.core.decode_run`).
"""
from __future__ import annotations

from collections import deque
from operator import attrgetter

from kvsim.core.plan import StepPlan
from kvsim.core.sequence import FCFS_ORDER, GroupStatus, SequenceGroup

_SEQS = attrgetter("seqs")


class DecodeSlotsMixin:
    """``_decode``, ``_append``, ``_preempt`` and ``_swap_in`` over the scheduler's ``kv``, ``cfg``, ``running``,
    ``waiting``, ``swapped`` and its ``num_running_seqs`` / ``_sort_running`` (see the module doc)."""

    def _decode(self, plan: StepPlan) -> bool:
        """Give every decoding group its next slot, preempting latest arrivals when memory runs out."""
        kv = self.kv
        decoding = [g for g in self.running if g.prefill_done >= g.prefill_target]      # not in prefill
        free = kv.free_blocks()
        per_seq = getattr(kv, "append_blocks_per_seq", None)    # a bound on any append's need, per sequence
        needs = None
        if per_seq is None or per_seq * (sum(map(len, map(_SEQS, decoding))) if self.multi_seq
                                         else len(decoding)) > free:
            needs_of = getattr(kv, "append_needs", None)
            needs = needs_of(decoding) if needs_of is not None else list(map(kv.append_need, decoding))
        if needs is None or sum(needs) <= free:
            # every group's need is covered at its turn (appends take exactly their need, and a group's
            # need does not depend on the others'): the loop below would preempt nothing
            self._append(plan, decoding)
            self._uniform_plan = plan
            return False
        # Each group's need, as computed above (it does not depend on the other groups, preempted or not), and
        # the free blocks counted down by it (appends take exactly their need). The groups given their slot are
        # appended together, before any preemption frees blocks: the same blocks as appending one by one.
        need_of = dict(zip(map(id, decoding), needs))
        queue = deque(self.running)
        kept: list[SequenceGroup] = []
        batch: list[SequenceGroup] = []         # kept decoding groups not appended yet
        preempted = False
        while queue:
            g = queue.popleft()
            if g.in_prefill:
                kept.append(g)
                continue
            need = need_of[id(g)]
            if free >= need:
                free -= need
                batch.append(g)
                kept.append(g)
                continue
            if batch:
                self._append(plan, batch)
                batch = []
            while free < need:
                victim = queue.pop() if queue else None
                if victim is None:
                    # last resort: a later-arrived group already kept (chunked prefill ones)
                    later = [k for k in kept if FCFS_ORDER(k) > FCFS_ORDER(g)]
                    victim = later[-1] if later else g
                    if victim is not g:
                        kept.remove(victim)
                self._preempt(plan, victim)
                preempted = True
                free = kv.free_blocks()
                if victim is g:
                    break
            else:
                free -= need
                batch.append(g)
                kept.append(g)
        if batch:
            self._append(plan, batch)
        self.running = kept
        self._tail_plan = plan
        return preempted

    def _append(self, plan: StepPlan, groups: list[SequenceGroup]) -> None:
        """Each group's next slot, in order, into the plan: copy-on-write pairs, decode ids and contexts."""
        kv = self.kv
        append_all = getattr(kv, "append_all", None)
        copies = plan.copy_pairs
        if append_all is not None:
            pairs = append_all(groups)
            if pairs:
                copies.extend(pairs)
        else:
            for g in groups:
                pairs = kv.append(g)
                if pairs:
                    copies.extend(pairs)
        ids, ctx = plan.decode_group_ids, plan.decode_context_tokens
        if not self.multi_seq:                      # one sequence a group: the loop below, a list at a time
            ids.extend([g.spec.request_id for g in groups])
            ctx.extend([g.spec.prompt_len + g.seqs[0].generated for g in groups])
            return
        add = ctx.append
        for g in groups:
            spec, seqs = g.spec, g.seqs
            ids.append(spec.request_id)             # (the group id of this scheduler's groups)
            p = spec.prompt_len
            for s in seqs:
                add(p + s.generated)

    def _preempt(self, plan: StepPlan, g: SequenceGroup) -> None:
        mode = self.cfg.preemption_mode
        if mode == "auto":
            mode = "swap" if len(g.seqs) > 1 else "recompute"
        if mode == "swap" and not self.kv.can_swap_out(g):
            mode = "recompute"
        g.num_preemptions += 1
        plan.preempted.append((g.group_id, mode))
        if mode == "swap":
            plan.swap_out.extend(self.kv.swap_out(g))
            g.status = GroupStatus.SWAPPED
            g.num_swaps += 1
            self.swapped.append(g)
        else:
            self.kv.free_group(g)
            g.status = GroupStatus.WAITING
            g.num_recomputes += 1
            g.prefill_target = g.recompute_len()
            g.prefill_done = 0
            self.waiting.appendleft(g)

    def _swap_in(self, plan: StepPlan) -> None:
        if not self.swapped:
            return
        self.swapped.sort(key=FCFS_ORDER)
        num_seqs = self.num_running_seqs()
        back = 0
        while self.swapped:
            g = self.swapped[0]
            if num_seqs + len(g.seqs) > self.cfg.max_num_seqs or not self.kv.can_swap_in(g):
                break
            self.swapped.pop(0)
            plan.swap_in.extend(self.kv.swap_in(g))
            g.status = GroupStatus.RUNNING
            num_seqs += len(g.seqs)
            self.running.append(g)
            back += 1
            if g.in_prefill:
                continue    # swapped mid chunked prefill: its prefill resumes, nothing to decode yet
            plan.copy_pairs.extend(self.kv.append(g))
            plan.decode_group_ids.append(g.group_id)
            plan.decode_context_tokens.extend(s.length for s in g.seqs)
        if back:
            self.joins += back
            self._sort_running(back)
