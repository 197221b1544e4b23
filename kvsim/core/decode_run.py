"""Decode runs: the scheduler's decode policy taken ``k`` iterations at once.

When every running group is decoding (no prefill, no beam search), nothing is
swapped, the head of the waiting queue cannot be admitted (the same checks as
``Scheduler._admit``; for the V1 scheduler, ``SchedulerV1.admission_stays_blocked``,
which also refuses while a blocked head's prefix-cache hit waits in the free
queue, where a decode step could evict it), no group finishes before the last of the steps, no step
needs a copy-on-write and every block the steps need is free, then the next
``k`` iterations are fully determined: each sequence gains one token per step
and step ``j`` attends to ``ctx_sum + j * num_seqs`` context tokens. The KV
manager says which steps take blocks (:meth:`KVManager.decode_run`) and what
memory looks like after each (:meth:`KVManager.decode_memory`);
:func:`advance` applies the run, ending like ``complete_step`` does.

Clock-free like the rest of core: the caller (``kvsim.fastforward``) prices
the steps, may cut the run shorter, and passes the time the run ends.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvsim.core.block_manager import AllocStatus
from kvsim.core.kv import MemorySplit
from kvsim.core.scheduler import Scheduler
from kvsim.core.scheduler_v1 import SchedulerV1

MIN_STEPS = 2


@dataclass
class DecodeRun:
    steps: int                 # iterations the run may take (a caller may take fewer)
    new_blocks: np.ndarray     # blocks taken at each step
    num_seqs: int              # decoding sequences (one query token each per step)
    ctx_sum: int               # context tokens the first step attends to, summed over sequences
    ctx_max: int               # the longest context at the first step


def head_blocked(sched: Scheduler, num_seqs: int) -> bool:
    """Whether ``Scheduler._admit`` would stop at the waiting queue's head (seq cap, token budget, memory)."""
    head = sched.waiting[0]
    if num_seqs + len(head.seqs) > sched.cfg.max_num_seqs:
        return True
    if sched.cfg.policy == "chunked" and sched.cfg.max_num_batched_tokens - num_seqs <= 0:
        return True
    return sched.kv.can_admit(head) == AllocStatus.LATER


def _stays_blocked(sched: Scheduler, num_seqs: int) -> bool:
    if isinstance(sched, SchedulerV1):
        return sched.admission_stays_blocked(num_seqs)
    return head_blocked(sched, num_seqs)


def plan_decode_run(sched: Scheduler) -> DecodeRun | None:
    """The longest decode run from the scheduler's state now, or None if shorter than MIN_STEPS. No state change."""
    if sched.cfg.policy == "static" or sched.swapped or not sched.running:
        return None
    running = sched.running
    remaining = 1 << 62
    nseq = 0
    for g in running:
        if g.in_prefill or g.is_beam:
            return None
        r = g.spec.output_len - g.generated
        if r < remaining:
            remaining = r
        nseq += len(g.seqs)
    k = remaining                 # the last step may finish groups: applied like complete_step does
    if k < MIN_STEPS:
        return None
    if sched.waiting and not _stays_blocked(sched, nseq):
        return None
    new_blocks = sched.kv.decode_run(running, k)
    if new_blocks is None or len(new_blocks) < MIN_STEPS:
        return None
    lengths = [s.length for g in running for s in g.seqs]
    return DecodeRun(len(new_blocks), new_blocks, nseq, sum(lengths), max(lengths))


def run_memory(sched: Scheduler, run: DecodeRun, steps: int) -> tuple[np.ndarray, MemorySplit]:
    """``blocks_in_use`` and the memory split after each of the run's first ``steps`` steps."""
    return sched.kv.decode_memory(sched.running, run.new_blocks[:steps])


def advance(sched: Scheduler, steps: int, now: float) -> None:
    """Apply ``steps`` decode iterations of a planned run; groups done at the last one finish at ``now``."""
    running = sched.running
    sched.kv.advance_decode(running, steps)
    done = []
    for g in running:
        for s in g.seqs:
            s.generated += steps
        if g.generated >= g.spec.output_len:
            done.append(g)
    if done:
        sched.finish(done, now)
