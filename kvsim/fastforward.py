"""Fast-forwarding decode runs, with results identical to stepping.

The scheduler-side conditions and the state change live in core
(:mod:`kvsim.core.decode_run`, next to the policy they mirror: a run goes on
through finishes while admission stays blocked); this module adds the
simulator's side: each segment's step times from the cost model's
``decode_run_times`` (a Python loop for short segments) or vectorised
``decode_step_times`` (both bit-identical to ``step_time``), finish times from the
same running sum of step times as SimPy's clock, the cut at the next arrival
(when nothing waits or is swapped) or the time limit, the clock advanced to
where stepping would leave it, arrivals queued at the step they would have
joined, and one iteration record per segment (:class:`kvsim.segments.SegmentTable`:
a few numbers, its rows rebuilt on demand).
"""
from __future__ import annotations

from bisect import bisect_left
from itertools import accumulate

import numpy as np

from kvsim.core.decode_run import MIN_STEPS, Segment, start_decode_run


_GROW = np.arange(64, dtype=np.float64)     # 0, 1, 2, ... (grown on demand; read only)


def _grow(k: int) -> np.ndarray:
    global _GROW
    if k > len(_GROW):
        _GROW = np.arange(max(k, 2 * len(_GROW)), dtype=np.float64)
    return _GROW[:k]


_LIST_STEPS = 48    # segments up to this long are priced in a Python loop, longer ones with numpy


def _price(cost, seg: Segment, t0: float, limit: float):
    """(step times, clock after each step) of the segment's steps, starting at ``t0``: lists for short segments,
    arrays for long ones (the same floats either way). The clock is the running sum from ``t0`` that SimPy's
    clock takes, in the same order. A cost model with ``decode_run_clock`` gives the clock alone (times None:
    :func:`_times` makes them if needed), in one loop that stops at the first step starting at or past
    ``limit`` — most segments are cut by the next arrival well before their last step — and, where that comes
    later than ``_LIST_STEPS`` steps, the rest of the segment in the array form."""
    k, nseq = seg.steps, seg.num_seqs
    clock_of = getattr(cost, "decode_run_clock", None)
    if clock_of is not None:
        clock = clock_of(nseq, seg.ctx_sum, seg.ctx_max, k, t0, limit, _LIST_STEPS)
        if clock is not None:
            return None, clock
    if k <= _LIST_STEPS:
        dts = cost.decode_run_times(nseq, seg.ctx_sum, seg.ctx_max, k)
        return dts, list(accumulate(dts, initial=t0))
    grow = _grow(k)
    dts = cost.decode_step_times(nseq, seg.ctx_sum + nseq * grow, seg.ctx_max + grow)
    clock = np.empty(k + 1, dtype=np.float64)
    clock[0] = t0
    clock[1:] = dts
    return dts, clock.cumsum(out=clock)


def _times(cost, seg: Segment, dts):
    """The segment's step times (``_price``'s, made now where it left them out)."""
    return cost.decode_run_times(seg.num_seqs, seg.ctx_sum, seg.ctx_max, seg.steps) if dts is None else dts


def _steps_before(clock, limit: float, first: bool) -> int:
    """Steps that start before ``limit`` (a run's first step always runs: the loop checked it). The clock never
    decreases, so the first start at or after the limit is a binary search away."""
    k = len(clock) - 1
    if limit == float("inf"):
        return k
    if isinstance(clock, list):
        return bisect_left(clock, limit, 1 if first else 0, k)
    if first:
        return int(clock[1:-1].searchsorted(limit)) + 1
    return int(clock[:-1].searchsorted(limit))


def fast_forward(eng):
    """A SimPy generator running the decode run that starts now, or None if the next step is taken alone."""
    sched, env = eng.sched, eng.env
    mix = getattr(eng.cost, "_window", None)      # sliding-window pricing: segments stay inside the windows
    if mix is not None and not mix.plain_below_window:
        return None
    run = start_decode_run(sched)
    if run is None:
        return None
    if mix is not None:     # a step's windowed key sum is then the plain context sum: linear, as segments price it
        run.ctx_limit = mix.min_window
    seg = run.next_segment()
    if seg.steps < MIN_STEPS:
        return None
    limit = eng.max_time_s if eng.max_time_s is not None else float("inf")
    if not sched.waiting and not sched.swapped:
        limit = min(limit, eng.next_arrival_s)      # the step at or after the arrival would admit it
    dts, clock = _price(eng.cost, seg, env.now, limit)
    k = _steps_before(clock, limit, True)
    if k < MIN_STEPS:
        return None
    return _advance(eng, run, seg, dts, clock, k, limit)


def _advance(eng, run, seg: Segment, dts: np.ndarray, clock: np.ndarray, k: int, limit: float):
    sched, env, log = eng.sched, eng.env, eng.log
    waiting, swapped = len(sched.waiting), len(sched.swapped)
    first_iter = len(log)
    pieces = []                                 # (clock, segment, step times or None, steps taken) of each
    t = env.now
    stuck = False       # the run ends where the free blocks run out: the next step will not fit either
    while True:
        log.add_segment(t, k, seg.num_seqs, seg.num_groups, seg.ctx_sum, seg.ctx_max, swapped, waiting,
                        not pieces, run.memory(seg, k))
        pieces.append((clock, seg, dts, k))
        t = float(clock[k])
        if not run.apply(seg, k, t) or eng.gate is not None:
            stuck = k == seg.steps and seg.short_of_memory
            break       # closed loop: a finish may free a slot, and the request it sends joins at t
        seg = run.next_segment()
        if seg.steps == 0:
            stuck = seg.short_of_memory
            break
        dts, clock = _price(eng.cost, seg, t, limit)
        k = _steps_before(clock, limit, False)
        if k == 0:
            break
    # nothing between here and the next schedule takes or frees blocks (arrivals only queue), so a run cut
    # short of memory would not start again there: the engine skips that try
    eng.ff_blocked = stuck
    if env.now + (t - env.now) == t:            # one timeout lands exactly where the steps would
        yield env.timeout(t - env.now)
    else:
        for _, sg, d, n in pieces:
            for dt in _times(eng.cost, sg, d)[:n]:
                yield env.timeout(float(dt))
    end_iter = len(log)
    eng.ff_steps += end_iter - first_iter
    clock, _, _, n = pieces[-1]
    if not eng.inbox or min(when for when, _ in eng.inbox) > clock[n - 1]:
        return                                  # (as usual: the arrival that cut the run comes after its last start)
    # arrivals during the run only join the queue behind a blocked head or while groups are swapped
    # out (start_decode_run checked that); each is added at the first step starting at or after it
    starts = np.concatenate([c[:n] for c, _, _, n in pieces])
    late = []
    for when, spec in eng.inbox:
        j = int(np.searchsorted(starts, when, side="left"))
        if j >= len(starts):
            late.append((when, spec))
            continue
        before = len(sched.waiting)
        sched.add_request(spec)
        log.segments.add_waiting(first_iter + j, len(sched.waiting) - before, end_iter)
    eng.inbox[:] = late
