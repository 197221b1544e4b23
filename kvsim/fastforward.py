"""Fast-forwarding runs of identical decode iterations, with results identical to stepping.

When every running group is decoding (no prefill, no beam search), nothing is
swapped, the head of the waiting queue cannot be admitted (or the queue is
empty and no request arrives), no group finishes before the last of the steps
and every block the steps need is free, then the next ``k`` iterations are fully determined: each
sequence gains one token per step, step ``j`` attends to ``S0 + j*num_seqs``
context tokens, and blocks are taken exactly where lengths cross block
boundaries. We compute those ``k`` steps' times and records with numpy and
apply the state change in bulk. Step times come from the cost model's
vectorised ``decode_step_times``, which is bit-identical to ``step_time``, and
simulated time advances by one ``env.timeout`` per step, so clocks match too.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvsim.core.block_manager import AllocStatus

MIN_STEPS = 2


@dataclass
class FastForward:
    k: int
    dts: np.ndarray
    starts: np.ndarray
    seq_ids: list[int]
    crossings: np.ndarray | None   # paged: new blocks per step


def _head_blocked(sched, nseq: int) -> bool:
    head = sched.waiting[0]
    if nseq + len(head.seqs) > sched.cfg.max_num_seqs:
        return True
    if sched.cfg.policy == "chunked" and sched.cfg.max_num_batched_tokens - nseq <= 0:
        return True
    return sched.kv.can_admit(head) == AllocStatus.LATER


def plan_fast_forward(eng) -> FastForward | None:
    sched = eng.sched
    if sched.cfg.policy == "static" or sched.swapped or not sched.running:
        return None
    running = sched.running
    remaining = 1 << 62
    for g in running:
        if g.in_prefill or g.is_beam:
            return None
        r = g.spec.output_len - g.generated
        if r < remaining:
            remaining = r
    k = remaining                 # the last step may finish groups: applied like complete_step does
    if k < MIN_STEPS:
        return None
    seq_ids = [s.seq_id for g in running for s in g.seqs]
    nseq = len(seq_ids)
    if sched.waiting and not _head_blocked(sched, nseq):
        return None
    kv = eng.kv
    crossings = None
    if kv.kind == "paged":
        bm = kv.bm
        bs = bm.block_size
        n0 = np.fromiter((bm.num_tokens[s] for s in seq_ids), dtype=np.int64, count=nseq)
        for s, n in zip(seq_ids, n0):
            if n % bs and bm.ref[bm.tables[s][-1]] > 1:
                return None
        first = (-n0) % bs                     # first step at which each sequence needs a block
        steps = np.arange(k)
        crossings = ((steps[None, :] - first[:, None]) % bs == 0) & (steps[None, :] >= first[:, None])
        crossings = crossings.sum(axis=0)
        over = np.nonzero(np.cumsum(crossings) > kv.free_blocks())[0]
        if len(over):
            k = int(over[0])
            crossings = crossings[:k]
        if k < MIN_STEPS:
            return None
    lengths = [s.length for g in running for s in g.seqs]
    grow = np.arange(k, dtype=np.float64)
    dts = eng.cost.decode_step_times(nseq, sum(lengths) + nseq * grow, max(lengths) + grow)
    starts = np.cumsum(np.concatenate(([eng.env.now], dts)))[:k]
    limit = eng.max_time_s if eng.max_time_s is not None else float("inf")
    if not sched.waiting:
        limit = min(limit, eng.next_arrival_s)
    late = np.nonzero(starts[1:] >= limit)[0]
    if len(late):
        k = int(late[0]) + 1
    if k < MIN_STEPS:
        return None
    return FastForward(k, dts[:k], starts[:k], seq_ids,
                       crossings[:k] if crossings is not None else None)


def _memory_rows(eng, ff: FastForward) -> dict[str, np.ndarray]:
    """Per-step memory split after each step's appends, as KV.memory_split would report it."""
    kv, k = eng.kv, ff.k
    running = eng.sched.running
    nseq = len(ff.seq_ids)
    grow = nseq * np.arange(1, k + 1, dtype=np.int64)
    if kv.kind == "paged":
        bm, bs = kv.bm, kv.block_size
        n0 = np.array([bm.num_tokens[s] for s in ff.seq_ids], dtype=np.int64)
        final = np.array([s.final_kv_tokens for g in running for s in g.seqs], dtype=np.int64)
        n = n0[None, :] + np.arange(1, k + 1, dtype=np.int64)[:, None]
        cap = -(-n // bs) * bs
        logical = cap.sum(axis=1)
        internal = np.where(cap > final[None, :], cap - np.maximum(final[None, :], n), 0).sum(axis=1)
        blocks = bm.num_allocated + np.cumsum(ff.crossings)
        alloc = blocks * bs
        used = bm.used_slots + grow
        internal = np.minimum(internal, alloc - used)
        reserved = alloc - used - internal
        return dict(blocks_in_use=blocks, mem_used=used, mem_internal=internal, mem_reserved=reserved,
                    mem_external=np.zeros(k, np.int64), mem_free=kv.capacity_slots - alloc,
                    mem_logical=logical)
    used0, internal, future0, external, free, logical = kv.memory_split(running)
    # memory_split already counts this step's append in neither used nor future: shift both
    used = used0 + grow
    const = np.full(k, 1, dtype=np.int64)
    return dict(blocks_in_use=const * kv.blocks_in_use(), mem_used=used, mem_internal=const * internal,
                mem_reserved=future0 - grow, mem_external=const * external, mem_free=const * free,
                mem_logical=const * logical)


def apply_fast_forward(eng, ff: FastForward):
    """SimPy generator: advance ``ff.k`` decode steps, recording each, then apply the state change."""
    sched, env, k = eng.sched, eng.env, ff.k
    mem = _memory_rows(eng, ff)
    t_end = float(ff.starts[-1] + ff.dts[-1])
    if env.now + (t_end - env.now) == t_end:      # one timeout lands exactly where k would
        yield env.timeout(t_end - env.now)
    else:
        for dt in ff.dts:
            yield env.timeout(float(dt))
    # arrivals during the run only join the queue behind a blocked head (plan_fast_forward
    # checked that); each is added at the first step starting at or after its arrival
    waiting = np.full(k, len(sched.waiting), dtype=np.int64)
    late = []
    for when, spec in eng.inbox:
        j = int(np.searchsorted(ff.starts, when, side="left"))
        if j >= k:
            late.append((when, spec))
            continue
        before = len(sched.waiting)
        sched.add_request(spec)
        waiting[j:] += len(sched.waiting) - before
    eng.inbox[:] = late
    nseq = len(ff.seq_ids)
    zeros = np.zeros(k, dtype=np.int64)
    start_iter = len(eng.log)
    block = dict(iter=np.arange(start_iter, start_iter + k), start_s=ff.starts, duration_s=ff.dts + 0.0,
                 swap_s=np.zeros(k), prefill_groups=zeros, prefill_tokens=zeros,
                 decode_seqs=zeros + nseq, batched_requests=zeros + len(sched.running),
                 batched_tokens=zeros + nseq, running=zeros + len(sched.running), waiting=waiting,
                 swapped=zeros, preempted=zeros, swap_out_blocks=zeros, swap_in_blocks=zeros,
                 cow_copies=zeros, **mem)
    eng.log.extend(block)
    kv = eng.kv
    if kv.kind == "paged":
        kv.bm.append_slots_bulk(ff.seq_ids, k)
    else:
        for sid in ff.seq_ids:
            kv.written[sid] += k
        kv.used_slots += k * nseq
    done = []
    for g in sched.running:
        for s in g.seqs:
            s.generated += k
        if g.generated >= g.spec.output_len:
            done.append(g)
    if done:
        sched.finish(done, env.now)
    eng.ff_steps += k
