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

Where a run cannot go on as a segment (its next step preempts, or lets swapped groups back in) and no request
arrives before that step, the step is taken from the run (:func:`kvsim.run_step.step_in_run`: one stepped row,
the clock moved by its swaps and its step) and the run goes on after it (groups swapped in joined by
``DecodeRun.resume``): the arrivals of the run are then placed among the segments after its last such step.
"""
from __future__ import annotations

from bisect import bisect_left
from itertools import accumulate

import numpy as np

from kvsim.core import decode_run
from kvsim.core.decode_run import MIN_STEPS, Segment, admission_blocked, start_decode_run
from kvsim.run_step import step_in_run


_GROW = np.arange(64, dtype=np.float64)     # 0, 1, 2, ... (grown on demand; read only)


def _grow(k: int) -> np.ndarray:
    global _GROW
    if k > len(_GROW):
        _GROW = np.arange(max(k, 2 * len(_GROW)), dtype=np.float64)
    return _GROW[:k]


_LIST_STEPS = 128   # segments up to this long are priced in a Python loop, longer ones with numpy (48 cost a paged
#                   run ~1.4% more instructions: the loop stops at the next arrival, numpy prices the whole rest)


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
    limit = _limit(eng)
    dts, clock = _price(eng.cost, seg, env.now, limit)
    k = _steps_before(clock, limit, True)
    if k < MIN_STEPS:
        return None
    return _advance(eng, run, seg, dts, clock, k, limit)


def _limit(eng) -> float:
    """The clock a run's steps must start before: the time limit, and the next arrival where nothing waits or is
    swapped out (the step at or after it would admit it)."""
    sched = eng.sched
    limit = eng.max_time_s if eng.max_time_s is not None else float("inf")
    if not sched.waiting and not sched.swapped:
        limit = min(limit, eng.next_arrival_s)
    return limit


def _advance(eng, run, seg: Segment, dts: np.ndarray, clock: np.ndarray, k: int, limit: float):
    sched, env, log = eng.sched, eng.env, eng.log
    waiting, swapped = len(sched.waiting), len(sched.swapped)
    first_iter = len(log)
    run_first = first_iter                      # (the first iteration of the run, for ff_steps)
    pieces = []         # (clock, segment, step times or None, steps taken) of each segment, (None, swap s, step s, 0)
    #                     of each step taken from the run (step_in_run), in order: the timeouts
    since = 0           # pieces[since:]: the segments since the last step taken from the run (arrivals go there)
    t = env.now
    start = True        # the next segment starts a run (its clock is not the last segment's running sum)
    stuck = False       # the run ends where the free blocks run out: the next step will not fit either
    taken = 0           # steps taken from the run
    priced = True       # dts, clock and k are seg's (the caller priced the first segment)
    while True:
        if not priced and seg.steps:            # the run's next segment, from t up to the limit
            dts, clock = _price(eng.cost, seg, t, limit)
            k = _steps_before(clock, limit, False)
            if k == 0:
                break
        priced = False
        short = False                           # (the run stops short of memory)
        if seg.steps:
            t1 = float(clock[k])
            log.add_segment(t, k, seg.num_seqs, seg.num_groups, seg.ctx_sum, seg.ctx_max, swapped, waiting,
                            start, run.memory(seg, k), t1)
            start = False
            pieces.append((clock, seg, dts, k))
            t = t1
            if eng.gate is not None:            # closed loop: a finish may free a slot, and the request it sends
                run.apply(seg, k, t)            # joins at t
                stuck = k == seg.steps and seg.short_of_memory
                break
            if run.apply(seg, k, t):
                seg = run.next_segment()
                if seg.steps:
                    continue
                short = seg.short_of_memory
            elif k < seg.steps:
                break                           # cut at the limit
            else:
                short = seg.short_of_memory
        else:
            short = seg.short_of_memory
        # the run cannot go on as a segment: its next step (preempting, or swapping groups in) taken from it
        got = step_in_run(eng, run, t)
        if got is None:
            stuck = short
            break
        swap_s, dt, t = got
        pieces.append((None, swap_s, dt, 0))
        taken += 1
        since = len(pieces)
        first_iter = len(log)
        waiting, swapped = len(sched.waiting), len(sched.swapped)
        limit = _limit(eng)
        start = True
        if not (sched.running and decode_run.KEEP_RUNS and run.resume() and admission_blocked(sched, run.num_seqs)):
            break                               # (resume: the groups swapped in join the run)
        seg = run.next_segment()
    if eng.overlap is not None and pieces and pieces[-1][0] is not None:   # the run's last step (kvsim.overlap)
        c, _, _, n = pieces[-1]
        eng.overlap.started(float(c[n - 1]), False)
    # nothing between here and the next schedule takes or frees blocks (arrivals only queue), so a run cut
    # short of memory would not start again there: the engine skips that try
    eng.ff_blocked = stuck
    if env.now + (t - env.now) == t:            # one timeout lands exactly where the steps would
        yield env.timeout(t - env.now)
    else:
        for c, sg, d, n in pieces:
            if c is None:                       # a step taken from the run: its swaps, then the step
                if sg > 0:
                    yield env.timeout(sg)
                yield env.timeout(d)
                continue
            for dt in _times(eng.cost, sg, d)[:n]:
                yield env.timeout(float(dt))
    end_iter = len(log)
    eng.ff_steps += end_iter - run_first - taken
    if since == len(pieces):
        return                                  # (the run ended with a step taken from it: arrivals are the engine's)
    clock, _, _, n = pieces[-1]
    if not eng.inbox or min(when for when, _ in eng.inbox) > clock[n - 1]:
        return                                  # (as usual: the arrival that cut the run comes after its last start)
    # arrivals during the run only join the queue behind a blocked head or while groups are swapped
    # out (start_decode_run checked that); each is added at the first step starting at or after it
    starts = np.concatenate([c[:n] for c, _, _, n in pieces[since:]])
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
