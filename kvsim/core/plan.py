"""StepPlan: what one engine iteration does. Plain data, no behaviour.

The scheduler returns one per iteration; the simulator prices it with a cost
model, the real engine executes it. Lists are per unit of work:

* ``prefill_*`` — one entry per prefilling sequence group (a group's prompt is
  computed once, whatever its ``n`` or beam width): ``prefill_new_tokens[i]``
  tokens are computed this step attending to ``prefill_cached_tokens[i]`` tokens
  already in the KV cache (prefix-cache hits or earlier chunks) plus themselves
  (causal).
* ``decode_group_ids`` — one entry per decoding group; ``decode_context_tokens``
  — one entry per decoding *sequence* (all sequences of those groups, in
  order): the number of KV entries its one new query token attends to, itself
  included.
* ``copy_pairs`` — copy-on-write block copies ``(src_block, dst_block)`` to do
  before the step's attention.
* ``swap_out`` ``(gpu_block, cpu_block)`` / ``swap_in`` ``(cpu_block, gpu_block)``.
* ``preempted`` — ``(group_id, "swap" | "recompute")`` decided this step.
* ``beam_rows`` — decode rows (sequences) of beam-search groups: their tokens come from a beam step
  (log-softmax and top-k over the group's beams) instead of one independent draw per row;
  ``beam_first`` — beam groups whose prompt ends this step (their first beam step); ``draw_rows`` — rows
  the step draws independently. Filled by the scheduler only when it serves beam groups and is asked to
  (``Scheduler.count_sampling``; else 0), for cost models that price sampling apart
  (:mod:`kvsim.cost.sampling_price`, with a profile's ``sampling`` table). ``beam_shared_blocks`` — with them:
  block reads of those rows beyond the first of each block within its group (the beams' shared prompt and
  common history, ``KVManager.shared_blocks``), which a calibrated model prices apart
  (:mod:`kvsim.calibrate.beam_fit`).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StepPlan:
    now_s: float = 0.0
    prefill_group_ids: list[int] = field(default_factory=list)
    prefill_new_tokens: list[int] = field(default_factory=list)
    prefill_cached_tokens: list[int] = field(default_factory=list)
    decode_group_ids: list[int] = field(default_factory=list)
    decode_context_tokens: list[int] = field(default_factory=list)
    copy_pairs: list[tuple[int, int]] = field(default_factory=list)
    swap_out: list[tuple[int, int]] = field(default_factory=list)
    swap_in: list[tuple[int, int]] = field(default_factory=list)
    preempted: list[tuple[int, str]] = field(default_factory=list)
    beam_rows: int = 0
    beam_first: int = 0
    draw_rows: int = 0
    beam_shared_blocks: int = 0

    @property
    def num_prefill_tokens(self) -> int:
        return sum(self.prefill_new_tokens)

    @property
    def num_decode_seqs(self) -> int:
        return len(self.decode_context_tokens)

    @property
    def num_batched_tokens(self) -> int:
        return self.num_prefill_tokens + self.num_decode_seqs

    @property
    def is_empty(self) -> bool:
        return not (self.prefill_new_tokens or self.decode_context_tokens
                    or self.swap_in or self.swap_out or self.copy_pairs)
