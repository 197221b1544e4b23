"""Sequences and sequence groups: the scheduling state of a request.

A request (``RequestSpec``) becomes one ``SequenceGroup`` holding ``num_seqs``
``Sequence`` objects: 1 for plain generation, ``n`` for parallel sampling,
``beam_width`` for beam search. All sequences of a group share the prompt.

Token accounting follows vLLM: after the prompt is computed the group has
produced its first token (``generated == 1``); every decode step feeds the last
generated token, writes its KV into one new slot and produces the next token.
So a sequence holds ``prompt_len + generated - 1`` KV slots between steps and
``prompt_len + generated`` while a decode step runs; it finishes when
``generated == output_len``, having written at most ``prompt_len + output_len - 1``
KV entries.
"""
from __future__ import annotations

from enum import Enum
from operator import attrgetter

from kvsim.core.request import RequestSpec

FCFS_ORDER = attrgetter("arrival_s", "spec.request_id")      # first come, first served: (arrival, group id)


class GroupStatus(str, Enum):
    WAITING = "waiting"      # not admitted, or preempted by recompute
    RUNNING = "running"      # has KV on the GPU
    SWAPPED = "swapped"      # KV on the CPU (preempted by swap)
    FINISHED = "finished"
    REJECTED = "rejected"


# The states every request passes through, as module names for the paths that set or test them once or more
# per request: an Enum member read off its class costs ~70 ns on Python 3.11 (a descriptor call)
WAITING, RUNNING, FINISHED = GroupStatus.WAITING, GroupStatus.RUNNING, GroupStatus.FINISHED


class Sequence:
    """One token stream. ``generated`` counts output tokens produced so far. It holds its request's spec, not
    its group (no reference cycle: a finished group is freed as soon as nothing refers to it, without waiting
    for Python's cycle collector, whose passes cost a long simulation several percent)."""

    __slots__ = ("seq_id", "spec", "generated")

    def __init__(self, seq_id: int, spec: RequestSpec):
        self.seq_id = seq_id
        self.spec = spec
        self.generated = 0

    @property
    def length(self) -> int:
        """Prompt plus generated tokens (the context a decode step attends to)."""
        return self.spec.prompt_len + self.generated

    @property
    def final_kv_tokens(self) -> int:
        """KV entries the sequence will have written when it finishes."""
        return self.spec.prompt_len + self.spec.output_len - 1


class SequenceGroup:
    """A request's scheduling state. Timestamps are seconds on the caller's clock."""

    __slots__ = ("spec", "seqs", "seq_ids", "status", "prefill_target", "prefill_done",
                 "arrival_s", "first_scheduled_s", "first_token_s", "finish_s",
                 "num_preemptions", "num_swaps", "num_recomputes", "reject_reason",
                 "cached_tokens", "blocks_at_finish")

    def __init__(self, spec: RequestSpec, first_seq_id: int):
        self.spec = spec
        self.seqs = [Sequence(first_seq_id + i, spec) for i in range(spec.num_seqs)]
        self.seq_ids = [s.seq_id for s in self.seqs]     # fixed for the group's life
        self.status = WAITING
        self.prefill_target = spec.prompt_len   # tokens the next (re)prefill must compute
        self.prefill_done = 0                   # tokens of it computed so far (chunked prefill)
        self.arrival_s = spec.arrival_s
        self.first_scheduled_s: float | None = None
        self.first_token_s: float | None = None
        self.finish_s: float | None = None
        self.num_preemptions = 0
        self.num_swaps = 0
        self.num_recomputes = 0
        self.reject_reason: str | None = None
        self.cached_tokens = 0                  # prefix-cache hits at the last admission
        self.blocks_at_finish = 0

    @property
    def group_id(self) -> int:
        return self.spec.request_id

    @property
    def is_beam(self) -> bool:
        return self.spec.beam_width > 1

    @property
    def in_prefill(self) -> bool:
        return self.prefill_done < self.prefill_target

    @property
    def generated(self) -> int:
        return self.seqs[0].generated

    def sampling(self, prompt_done: bool) -> str | None:
        """How the step samples this group's tokens: ``"beam_first"`` (its prompt just ended and it searches
        beams), ``"beam"``, ``"draw"`` (one independent draw per sequence) or None (a decode row of a group
        already finished, kept in a static batch: nothing drawn). ``prompt_done``: the group's prompt (or its
        last chunk) runs this step; else it decodes. The engine's runner and the scheduler's counts
        (``StepPlan.beam_rows``) both follow it."""
        if prompt_done:
            return "beam_first" if self.spec.beam_width > 1 and self.seqs[0].generated == 0 else "draw"
        if self.seqs[0].generated >= self.spec.output_len:
            return None
        return "beam" if self.spec.beam_width > 1 else "draw"

    def recompute_len(self) -> int:
        """Tokens a recompute must run: the prompt once plus every sequence's own generated tokens."""
        return self.spec.prompt_len + sum(s.generated for s in self.seqs)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return (f"SequenceGroup(id={self.group_id}, status={self.status.value}, "
                f"gen={self.generated}/{self.spec.output_len}, seqs={len(self.seqs)})")
