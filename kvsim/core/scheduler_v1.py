"""The vLLM V1 scheduler (``engine.policy: v1``): one token budget, decodes first, recompute only.

Each step, under ``max_num_batched_tokens``:

1. running requests that decode get one token each, in running order, then
   running requests still in (chunked) prefill continue with the largest chunk
   the budget leaves; slots are allocated per step for exactly the tokens
   computed (:class:`~kvsim.core.kv_paged_v1.PagedKVV1`);
2. when a request's slots do not fit, the most recently admitted running
   request not yet scheduled this step is preempted (LIFO; it may be the
   request itself), by **recompute**: its blocks are freed (tail first, still
   cached until reused) and it goes back to the front of the waiting queue;
3. if nobody was preempted, waiting requests are admitted in order, each with
   its prefix-cache hits and a first chunk of the remaining budget, while fewer
   than ``max_num_seqs`` requests run and the chunk's blocks fit.

Chunked prefill is always on; there is no swap, no beam search and no
watermark. A request with ``n > 1`` is fanned out into ``n`` child requests
(:mod:`kvsim.core.fanout`) that share its prompt only through the prefix cache.
Finishing, token accounting and the clock-free interface (``schedule(now)``,
``complete_step(plan, now)``) are the V0 :class:`~kvsim.core.scheduler.Scheduler`'s.

Why decodes are never starved: the budget is at least ``max_num_seqs``, and
every decode is placed before any prefill chunk. (In vLLM V1, which walks the
running list in order, the same holds because at most one running request is
in prefill and it is the list's tail.)
"""
from __future__ import annotations

import numpy as np

from kvsim.core.fanout import FanOut, fan_out
from kvsim.core.kv_paged_v1 import PagedKVV1
from kvsim.core.kv_window_v1 import WindowedPagedKVV1
from kvsim.core.plan import StepPlan
from kvsim.core.request import RequestSpec
from kvsim.core.scheduler import Scheduler, SchedulerConfig
from kvsim.core.sequence import GroupStatus, SequenceGroup

V1_PREEMPTION_MODES = ("auto", "recompute")


class SchedulerV1(Scheduler):
    def __init__(self, kv: PagedKVV1, config: SchedulerConfig, rng: np.random.Generator):
        if not isinstance(kv, (PagedKVV1, WindowedPagedKVV1)):
            raise ValueError("the v1 scheduler needs a V1 paged KV manager (PagedKVV1, WindowedPagedKVV1)")
        if config.preemption_mode not in V1_PREEMPTION_MODES:
            raise ValueError("the v1 policy preempts by recompute only (preemption_mode auto or recompute)")
        if config.policy == "static":
            raise ValueError("the v1 policy always chunks prefill; static batching is a v0 policy")
        if config.max_num_batched_tokens < config.max_num_seqs:
            raise ValueError("the v1 policy needs max_num_batched_tokens >= max_num_seqs (decodes come first)")
        super().__init__(kv, config, rng)
        self.kv: PagedKVV1 = kv
        self.requests: dict[int, SequenceGroup | FanOut] = {}     # request id -> its record row
        self._next_child_id = -1            # children beyond the first get negative group ids

    # ----------------------------------------------------------------- intake
    def add_request(self, spec: RequestSpec) -> SequenceGroup | FanOut:
        """Queue a request, fanned out into ``n`` child requests when ``n > 1``; returns its record."""
        if spec.beam_width > 1:
            raise ValueError("the v1 policy has no beam search (beam_width must be 1)")
        if spec.request_id < 0:
            raise ValueError("request ids must be >= 0 (negative ids name child requests)")
        if spec.n == 1:
            rec = g = SequenceGroup(spec, self._next_seq_id)
            children = [g]
        else:
            ids = [spec.request_id]
            for _ in range(spec.n - 1):
                ids.append(self._next_child_id)
                self._next_child_id -= 1
            rec = fan_out(spec, self._next_seq_id, ids)
            children = rec.children
        self._next_seq_id += spec.n
        self.requests[spec.request_id] = rec
        for g in children:
            self.groups[g.group_id] = g
            if spec.prompt_len + spec.output_len > self.cfg.max_model_len:
                self._reject(g, f"prompt+output of {spec.prompt_len + spec.output_len} tokens exceeds "
                                f"max_model_len={self.cfg.max_model_len}")
            elif reason := self.kv.never_fits(g):
                self._reject(g, reason)
            else:
                self.waiting.append(g)
        return rec

    def request_groups(self) -> list:
        """One record per request (children of a fanned-out request read as one :class:`FanOut`)."""
        return list(self.requests.values())

    # --------------------------------------------------------------- schedule
    def schedule(self, now: float) -> StepPlan:
        plan = StepPlan(now_s=now)
        kv = self.kv
        budget = self.cfg.max_num_batched_tokens
        scheduled: set[int] = set()
        preempted = False
        order = [g for g in self.running if not g.in_prefill] + [g for g in self.running if g.in_prefill]
        for g in order:
            if g.status is not GroupStatus.RUNNING:
                continue                       # preempted earlier in this step
            if budget <= 0:
                break
            decode = not g.in_prefill
            new = 1 if decode else min(g.prefill_target - g.prefill_done, budget)
            while not kv.can_allocate(g, new):
                victim = next(v for v in reversed(self.running) if v.group_id not in scheduled)
                self._preempt_recompute(plan, victim)
                preempted = True
                if victim is g:
                    break
            if g.status is not GroupStatus.RUNNING:
                break                          # it preempted itself: nobody after it can be scheduled
            kv.allocate_slots(g, new)
            if decode:
                plan.decode_group_ids.append(g.group_id)
                plan.decode_context_tokens.append(g.seqs[0].length)
            else:
                self._add_prefill(plan, g, new)
            scheduled.add(g.group_id)
            budget -= new
        if not preempted:
            self._admit_waiting(plan, budget)
        for g in self.running:
            if g.first_scheduled_s is None:
                g.first_scheduled_s = now
        return plan

    def _admit_waiting(self, plan: StepPlan, budget: int) -> None:
        kv = self.kv
        while self.waiting and budget > 0 and len(self.running) < self.cfg.max_num_seqs:
            g = self.waiting[0]
            new = min(g.prefill_target - kv.prefix_hits(g), budget)
            if not kv.can_allocate(g, new):
                reason = kv.chunk_never_fits(g, new)
                if reason is None:
                    break                    # waits for memory
                self.waiting.popleft()       # would wait forever (a sliding window's late recompute): rejected
                self._reject(g, reason)
                continue
            self.waiting.popleft()
            cached = kv.allocate_slots(g, new)
            g.cached_tokens = cached
            g.prefill_done = cached
            g.status = GroupStatus.RUNNING
            self.running.append(g)
            self.joins += 1
            self._add_prefill(plan, g, new)
            budget -= new

    def _preempt_recompute(self, plan: StepPlan, g: SequenceGroup) -> None:
        self.kv.free_group(g)
        self.running.remove(g)
        g.status = GroupStatus.WAITING
        g.num_preemptions += 1
        g.num_recomputes += 1
        g.prefill_target = g.recompute_len()
        g.prefill_done = 0
        self.waiting.appendleft(g)
        plan.preempted.append((g.group_id, "recompute"))

    # ----------------------------------------------------------- fast-forward
    def admission_stays_blocked(self, num_seqs: int) -> bool:
        """Whether admission stops at the waiting queue's head now *and* through a decode run of
        ``num_seqs`` sequences in which nothing finishes (:mod:`kvsim.core.decode_run`).

        Blocked by the request cap or the budget: both stay as they are. Blocked by memory: the
        run only takes free blocks, so it stays blocked unless a head's prefix-cache hit sits in
        the free queue (a step could evict it and change the head's need); then this says False.
        """
        if len(self.running) >= self.cfg.max_num_seqs:
            return True
        budget = self.cfg.max_num_batched_tokens - num_seqs
        if budget <= 0:
            return True
        kv, head = self.kv, self.waiting[0]
        hits = kv.hit_blocks(head)
        if any(kv.bm.ref[b] == 0 for b in hits):
            return False
        new = min(head.prefill_target - len(hits) * kv.block_size, budget)
        # (a head that can never get its chunk is rejected by the next stepped iteration: not blocked)
        return not kv.can_allocate(head, new) and kv.chunk_never_fits(head, new) is None
