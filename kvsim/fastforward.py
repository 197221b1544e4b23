"""Fast-forwarding runs of identical decode iterations, with results identical to stepping.

The scheduler-side conditions and the state change live in core
(:mod:`kvsim.core.decode_run`, next to the policy they mirror); this module adds
the simulator's side: step times from the cost model's vectorised
``decode_step_times`` (bit-identical to ``step_time``), the cut at the next
arrival or the time limit, one ``env.timeout`` per step (so clocks match
stepping), arrivals queued at the step they would have joined, and the records.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvsim.core.decode_run import MIN_STEPS, DecodeRun, advance, plan_decode_run, run_memory
from kvsim.records import decode_run_rows


@dataclass
class FastForward:
    k: int
    dts: np.ndarray
    starts: np.ndarray
    run: DecodeRun


def plan_fast_forward(eng) -> FastForward | None:
    sched = eng.sched
    run = plan_decode_run(sched)
    if run is None:
        return None
    k, nseq = run.steps, run.num_seqs
    grow = np.arange(k, dtype=np.float64)
    dts = eng.cost.decode_step_times(nseq, run.ctx_sum + nseq * grow, run.ctx_max + grow)
    starts = np.cumsum(np.concatenate(([eng.env.now], dts)))[:k]
    limit = eng.max_time_s if eng.max_time_s is not None else float("inf")
    if not sched.waiting:
        limit = min(limit, eng.next_arrival_s)
    late = np.nonzero(starts[1:] >= limit)[0]
    if len(late):
        k = int(late[0]) + 1
    if k < MIN_STEPS:
        return None
    return FastForward(k, dts[:k], starts[:k], run)


def apply_fast_forward(eng, ff: FastForward):
    """SimPy generator: advance ``ff.k`` decode steps, recording each, then apply the state change."""
    sched, env, k = eng.sched, eng.env, ff.k
    blocks, mem = run_memory(sched, ff.run, k)
    t_end = float(ff.starts[-1] + ff.dts[-1])
    if env.now + (t_end - env.now) == t_end:      # one timeout lands exactly where k would
        yield env.timeout(t_end - env.now)
    else:
        for dt in ff.dts:
            yield env.timeout(float(dt))
    # arrivals during the run only join the queue behind a blocked head (plan_decode_run
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
    eng.log.extend(decode_run_rows(len(eng.log), ff.starts, ff.dts, ff.run.num_seqs, len(sched.running),
                                   waiting, blocks, mem))
    advance(sched, k, env.now)
    eng.ff_steps += k
