"""Iteration-level scheduler: which groups prefill, which decode, who is preempted.

Policies (``SchedulerConfig.policy``):

* ``vllm`` — the PagedAttention paper's scheduler: FCFS; if nothing is swapped
  out, admit waiting groups (whole prompts) under ``max_num_seqs`` and
  ``max_num_batched_tokens``; a step with prefills runs only prefills; otherwise
  every running group decodes one token, preempting the latest-arrived group
  (all-or-nothing) whenever a running group cannot get its next block; if no
  group was preempted, swapped groups come back (FCFS) before any new admission.
* ``chunked`` — chunked prefill (Sarathi/vLLM style): running groups decode
  first, then partial prefills continue, then new groups are admitted, all under
  one token budget, mixing prefill chunks and decodes in a step.
* ``static`` — request-level batching (FasterTransformer-like): a batch is
  admitted only when none is running and runs until its longest request ends;
  finished requests keep their memory and their (padded) compute until then.
  It never preempts, so with the paged allocator a batch is admitted only while
  the sum of its groups' peak blocks fits the free blocks.

The scheduler keeps no clock: ``schedule(now)`` and ``complete_step(plan, now)``
receive the caller's time (simulated or wall clock).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from operator import attrgetter

import numpy as np

from kvsim.core.beam import BeamParents
from kvsim.core.block_manager import AllocStatus
from kvsim.core.kv import KVManager
from kvsim.core.plan import StepPlan
from kvsim.core.request import RequestSpec
from kvsim.core.sequence import GroupStatus, SequenceGroup

FCFS_ORDER = attrgetter("arrival_s", "spec.request_id")      # first come, first served: (arrival, group id)
_SEQS = attrgetter("seqs")

POLICIES = ("vllm", "chunked", "static")
PREEMPTION_MODES = ("auto", "swap", "recompute")


@dataclass
class SchedulerConfig:
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    max_model_len: int = 2048
    policy: str = "vllm"
    preemption_mode: str = "auto"
    beam_keep_prob: float = 0.5
    beam_decay: float = 0.5


class Scheduler:
    def __init__(self, kv: KVManager, config: SchedulerConfig, rng: np.random.Generator):
        if config.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}")
        if config.preemption_mode not in PREEMPTION_MODES:
            raise ValueError(f"preemption_mode must be one of {PREEMPTION_MODES}")
        self.kv = kv
        self.cfg = config
        self.rng = rng
        self._beam_parents = BeamParents(rng)     # choose_parents(rng, ...), drawn in chunks
        self.groups: dict[int, SequenceGroup] = {}
        self.waiting: deque[SequenceGroup] = deque()
        self.running: list[SequenceGroup] = []
        self.swapped: list[SequenceGroup] = []
        self.finished: list[SequenceGroup] = []
        self.rejected: list[SequenceGroup] = []
        self._next_seq_id = 0
        self._static_done: set[int] = set()
        self.serves_beams = False           # a beam group was added
        self.multi_seq = False              # a group of several sequences (n > 1 or beam) was added
        self.count_sampling = False         # plans count their sampling rows (a cost model that prices them)
        # What stepped iterations did to the running groups, for a kept decode run to see what happened since it
        # stopped (decode_run.resume): ``uniform_steps`` counts the steps in which every decoding group took its
        # slot and nothing else touched KV but swap-ins; ``tail_steps`` those in which every decoding group not
        # preempted took its slot; ``kv_steps`` every other step that decoded, preempted, swapped or copied;
        # ``joins`` the groups admitted or swapped in
        self.kv_steps = self.uniform_steps = self.tail_steps = self.joins = 0
        self._uniform_plan: StepPlan | None = None      # the plan _decode gave every decoding group its slot
        self._tail_plan: StepPlan | None = None         # ... every decoding group it did not preempt

    # ----------------------------------------------------------------- intake
    def add_request(self, spec: RequestSpec) -> SequenceGroup:
        """Queue a request that has arrived. Requests that can never run are rejected with a reason.

        Invariant: every added request ends FINISHED or REJECTED (with ``reject_reason``).
        """
        g = SequenceGroup(spec, self._next_seq_id)
        self._next_seq_id += spec.num_seqs
        self.groups[spec.request_id] = g
        if spec.beam_width > 1:
            self.serves_beams = True
        if spec.num_seqs > 1:
            self.multi_seq = True
        cfg = self.cfg
        reason = None
        if spec.prompt_len + spec.output_len > cfg.max_model_len:
            reason = (f"prompt+output of {spec.prompt_len + spec.output_len} tokens exceeds "
                      f"max_model_len={cfg.max_model_len}")
        elif cfg.policy != "chunked" and spec.prompt_len > cfg.max_num_batched_tokens:
            reason = (f"prompt of {spec.prompt_len} tokens exceeds "
                      f"max_num_batched_tokens={cfg.max_num_batched_tokens}")
        elif spec.num_seqs > cfg.max_num_seqs:
            reason = f"{spec.num_seqs} sequences exceed max_num_seqs={cfg.max_num_seqs}"
        else:
            reason = self.kv.never_fits(g)
        if reason:
            self._reject(g, reason)
        else:
            self.waiting.append(g)
        return g

    def _reject(self, g: SequenceGroup, reason: str) -> None:
        g.status = GroupStatus.REJECTED
        g.reject_reason = reason
        self.rejected.append(g)
        self.kv.forget(g)

    @property
    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running or self.swapped)

    def request_groups(self) -> list[SequenceGroup]:
        """One entry per request, for the request records (here: every group)."""
        return list(self.groups.values())

    def num_running_seqs(self) -> int:
        if not self.multi_seq:              # every group holds one sequence
            return len(self.running)
        return sum(map(len, map(_SEQS, self.running)))

    # ------------------------------------------------------------- schedule
    def schedule(self, now: float) -> StepPlan:
        """Plan one iteration. Deterministic given the call sequence and the rng seed."""
        plan = StepPlan(now_s=now)
        policy = self.cfg.policy
        if policy == "static":
            self._schedule_static(plan)
        elif policy == "vllm":
            if not self.swapped:
                self._admit(plan, self.cfg.max_num_batched_tokens, chunked=False)
            if not plan.prefill_group_ids:
                if not self._decode(plan):
                    self._swap_in(plan)
        else:
            preempted = self._decode(plan)
            if not preempted:
                self._swap_in(plan)
            budget = self.cfg.max_num_batched_tokens - plan.num_decode_seqs
            for g in self.running:
                if budget <= 0:
                    break
                if g.in_prefill and g.group_id not in plan.prefill_group_ids:
                    chunk = min(g.prefill_target - g.prefill_done, budget)
                    self._add_prefill(plan, g, chunk)
                    budget -= chunk
            if not self.swapped and budget > 0:
                self._admit(plan, budget, chunked=True)
        # (a group is first scheduled when admitted: _admit stamps it; swapped groups ran before)
        if self.serves_beams and self.count_sampling:
            self._count_sampling(plan)
        return plan

    def _count_sampling(self, plan: StepPlan) -> None:
        """``plan.beam_rows`` / ``beam_first`` / ``draw_rows`` (see :class:`StepPlan`): what the step samples,
        as the engine's runner samples it (:meth:`SequenceGroup.sampling`)."""
        groups = self.groups
        for gid, new, cached in zip(plan.prefill_group_ids, plan.prefill_new_tokens, plan.prefill_cached_tokens):
            g = groups[gid]
            if cached + new >= g.prefill_target:
                if g.sampling(True) == "beam_first":
                    plan.beam_first += 1
                else:
                    plan.draw_rows += len(g.seqs)
        for gid in plan.decode_group_ids:
            g = groups[gid]
            kind = g.sampling(False)
            if kind == "beam":
                plan.beam_rows += len(g.seqs)
            elif kind == "draw":
                plan.draw_rows += len(g.seqs)

    def _add_prefill(self, plan: StepPlan, g: SequenceGroup, tokens: int) -> None:
        plan.prefill_group_ids.append(g.group_id)
        plan.prefill_new_tokens.append(tokens)
        plan.prefill_cached_tokens.append(g.prefill_done)

    def _admit(self, plan: StepPlan, budget: int, chunked: bool, static: bool = False) -> None:
        num_seqs = self.num_running_seqs()
        admitted = 0
        # static batching never preempts, so a batch must fit its peak blocks up front
        peak_room = self.kv.free_blocks() if static else None
        victims = {gid for gid, _ in plan.preempted} if plan.preempted else ()
        while self.waiting:
            g = self.waiting[0]
            if g.group_id in victims:
                break   # preempted in this very step: only where appends free memory (sliding windows)
            todo = g.prefill_target
            if not chunked and todo > budget and plan.prefill_group_ids:
                break
            if chunked and budget <= 0:
                break
            if num_seqs + len(g.seqs) > self.cfg.max_num_seqs:
                break
            status = self.kv.can_admit(g)
            if status == AllocStatus.NEVER:
                self.waiting.popleft()
                self._reject(g, self.kv.never_fits(g) or "does not fit in KV memory")
                continue
            if status == AllocStatus.LATER:
                break
            if peak_room is not None:
                peak = self.kv.static_peak_blocks(g)
                if peak > peak_room:
                    break
                peak_room -= peak
            self.waiting.popleft()
            cached = self.kv.admit(g)
            g.cached_tokens = cached
            g.prefill_done = cached
            g.status = GroupStatus.RUNNING
            if g.first_scheduled_s is None:
                g.first_scheduled_s = plan.now_s
            self.running.append(g)
            admitted += 1
            num_seqs += len(g.seqs)
            tokens = todo - cached
            if chunked:
                tokens = min(tokens, budget)
            self._add_prefill(plan, g, tokens)
            budget -= tokens
        if admitted:
            self.joins += admitted
            self._sort_running(admitted)

    def _sort_running(self, appended: int) -> None:
        """Put ``running`` back in FCFS order after ``appended`` groups were added at its end. The rest is in order
        already (groups only leave it otherwise), so when the new ones follow the last of it in order, nothing
        moves and the sort (a key per group) is skipped."""
        running = self.running
        tail = running[-appended - 1:]
        for a, b in zip(tail, tail[1:]):
            if FCFS_ORDER(a) > FCFS_ORDER(b):
                running.sort(key=FCFS_ORDER)
                return

    def _decode(self, plan: StepPlan) -> bool:
        """Give every decoding group its next slot, preempting latest arrivals when memory runs out."""
        kv = self.kv
        decoding = [g for g in self.running if g.prefill_done >= g.prefill_target]      # not in prefill
        free = kv.free_blocks()
        per_seq = getattr(kv, "append_blocks_per_seq", None)    # a bound on any append's need, per sequence
        needs = None
        if not (per_seq is not None and per_seq * sum(len(g.seqs) for g in decoding) <= free):
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
        for g in groups:
            spec, seqs = g.spec, g.seqs
            ids.append(spec.request_id)             # (the group id of this scheduler's groups)
            p = spec.prompt_len
            if len(seqs) == 1:
                ctx.append(p + seqs[0].generated)
            else:
                ctx.extend([p + s.generated for s in seqs])

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

    def _schedule_static(self, plan: StepPlan) -> None:
        if not self.running:
            self._static_done.clear()
            self._admit(plan, 1 << 62, chunked=False, static=True)
            return
        for g in self.running:
            if g.group_id not in self._static_done:
                plan.copy_pairs.extend(self.kv.append(g))
            plan.decode_group_ids.append(g.group_id)
            plan.decode_context_tokens.extend(s.length for s in g.seqs)

    # ------------------------------------------------------------- complete
    def complete_step(self, plan: StepPlan, now: float,
                      beam_parents: dict[int, list[int]] | None = None) -> list[SequenceGroup]:
        """Apply a finished step's outcome: new tokens, beam re-parenting, finished groups freed.

        ``beam_parents`` gives the real parents chosen by an engine's sampler;
        groups missing from it use the seeded beam model.
        Returns the groups that finished at ``now``.
        """
        if plan.copy_pairs:
            self.kv_steps += 1
        elif plan is self._uniform_plan:             # (_decode preempted nothing; swapped-in groups: ``joins``)
            self.uniform_steps += 1
        elif plan is self._tail_plan:                # (_decode's preempting branch; swapped-in groups: ``joins``)
            self.tail_steps += 1
        elif plan.decode_group_ids or plan.preempted or plan.swap_out or plan.swap_in:
            self.kv_steps += 1
        self._uniform_plan = self._tail_plan = None
        groups = self.groups
        done: list[SequenceGroup] = []
        for gid, new in zip(plan.prefill_group_ids, plan.prefill_new_tokens):
            g = groups[gid]
            g.prefill_done += new
            if g.prefill_done >= g.prefill_target:
                for s in g.seqs:
                    s.generated += 1
                if g.first_token_s is None:
                    g.first_token_s = now
                if g.generated >= g.spec.output_len:
                    done.append(g)
        static = self.cfg.policy == "static"
        if static:
            stepped = [groups[gid] for gid in plan.decode_group_ids if gid not in self._static_done]
        else:
            stepped = list(map(groups.__getitem__, plan.decode_group_ids))
        beams = [g for g in stepped if g.spec.beam_width > 1]
        if beams:
            # the seeded model's parents for this step's beam groups, drawn together in step order, then each
            # group re-parented in step order
            given = beam_parents or {}
            modelled = [len(g.seqs) for g in beams if given.get(g.group_id) is None]
            drawn = iter(self._beam_parents.many(modelled, self.cfg.beam_keep_prob, self.cfg.beam_decay)
                         if modelled else ())
            reparent = self.kv.reparent
            for g in beams:
                parents = given.get(g.group_id)
                reparent(g, next(drawn) if parents is None else parents)
        for g in stepped:
            seqs = g.seqs
            if len(seqs) == 1:
                s = seqs[0]
                s.generated = n = s.generated + 1
            else:
                for s in seqs:
                    s.generated += 1
                n = seqs[0].generated
            if n >= g.spec.output_len:
                done.append(g)
        if static:
            self._static_done.update(g.group_id for g in done)
            if len(self._static_done) < len(self.running):
                return []
            done = list(self.running)
        self.finish(done, now)
        return done

    def finish(self, done: list[SequenceGroup], now: float) -> None:
        """Free finished groups (in the given order) and stamp their finish time.

        Invariant: afterwards none of ``done`` holds KV blocks and ``running`` holds only RUNNING groups.
        """
        for g in done:
            g.blocks_at_finish = self.kv.group_blocks(g)
            self.kv.free_group(g)
            self.kv.forget(g)
            g.status = GroupStatus.FINISHED
            g.finish_s = now
            self.finished.append(g)
        if done:
            self.running = [g for g in self.running if g.status is GroupStatus.RUNNING]
