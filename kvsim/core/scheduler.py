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

Where its parts are: this module plans a step (admission, chunks, static batches); a decode step's slots
under memory pressure (preemption by swap or recompute, swapping back in) are
:mod:`kvsim.core.decode_slots`; applying a finished step (tokens, beam parents, finished groups) is
:mod:`kvsim.core.step_outcome`.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from operator import attrgetter

import numpy as np

from kvsim.core.beam import BeamParents
from kvsim.core.block_manager import ALLOC_LATER, ALLOC_NEVER
from kvsim.core.decode_slots import DecodeSlotsMixin
from kvsim.core.kv import KVManager
from kvsim.core.plan import StepPlan
from kvsim.core.request import RequestSpec
from kvsim.core.sequence import FCFS_ORDER, RUNNING, GroupStatus, SequenceGroup
from kvsim.core.step_outcome import StepOutcomeMixin

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


class Scheduler(DecodeSlotsMixin, StepOutcomeMixin):
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
        # Set by kvsim.core.decode_run.start_decode_run: the paged decode run kept to be taken up again after a
        # stepped iteration (None: none), and whether the next schedule admits or rejects the waiting head (then
        # no step is taken from the kept run: kvsim.core.decode_preempt)
        self._kept_run = None
        self._admits_next = False

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
            for g in [g for g in self.running if g.prefill_done < g.prefill_target] if budget > 0 else ():
                if budget <= 0:
                    break
                if g.group_id not in plan.prefill_group_ids:           # (in prefill: the list's test)
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
                plan.beam_shared_blocks += self.kv.shared_blocks(g)
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
            if status == ALLOC_NEVER:
                self.waiting.popleft()
                self._reject(g, self.kv.never_fits(g) or "does not fit in KV memory")
                continue
            if status == ALLOC_LATER:
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
            g.status = RUNNING
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
