"""Fast-forwarding decode runs, with results identical to stepping.

The scheduler-side conditions and the state change live in core
(:mod:`kvsim.core.decode_run`, next to the policy they mirror: a run goes on
through finishes while admission stays blocked); this module adds the
simulator's side: each segment's step times from the cost model's
``decode_run_times`` (a Python loop for short segments) or vectorised
``decode_step_times`` (both bit-identical to ``step_time``), finish times from the
same running sum of step times as SimPy's clock, the cut at the next arrival
(when nothing waits or is swapped, and always where the cost model prices the decode steps the engine did not
prepare ahead, :mod:`kvsim.overlap`: a run then also stops before such a step) or the time limit, the clock advanced to
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


def _price(cost, seg: Segment, t0: float, limit: float, first: bool):
    """Where the segment's steps from the clock ``t0`` stop: ``(k, clock before step k - 1, clock after it, clock,
    step times)``, ``k`` the steps that start before ``limit`` (the run's first step always runs: the engine loop
    checked it). The clock is the running sum from ``t0`` that SimPy's clock takes, in the same order. A cost
    model with ``decode_run_cut`` gives the two clock values alone (clock and times None: :func:`_starts` and
    :func:`_times` make them where needed), in one loop that stops at the first step ending at or past ``limit``
    — most segments are cut by the next arrival well before their last step — and, where that comes later than
    ``_LIST_STEPS`` steps, the rest of the segment in the array form; other models price the segment's steps as
    lists (short segments) or arrays (long ones): the same floats either way."""
    k, nseq = seg.steps, seg.num_seqs
    if not first and t0 >= limit:
        return 0, t0, t0, None, None
    cut = getattr(cost, "decode_run_cut", None)
    if cut is not None:
        got = cut(nseq, seg.ctx_sum, seg.ctx_max, k, t0, limit, _LIST_STEPS)
        if got is not None:
            return got + (None, None)
    if k <= _LIST_STEPS:
        dts = cost.decode_run_times(nseq, seg.ctx_sum, seg.ctx_max, k)
        clock = list(accumulate(dts, initial=t0))
    else:
        grow = _grow(k)
        dts = cost.decode_step_times(nseq, seg.ctx_sum + nseq * grow, seg.ctx_max + grow)
        clock = np.empty(k + 1, dtype=np.float64)
        clock[0] = t0
        clock[1:] = dts
        clock.cumsum(out=clock)
    n = _steps_before(clock, limit)
    return n, float(clock[n - 1]) if n else t0, float(clock[n]), clock, dts


def _until_not_ahead(eng, seg: Segment, t0: float, priced: tuple, limit: float, first: bool, before: float):
    """``priced`` cut before its first step that was not prepared while the one before it flew (a request due
    while that one ran: :mod:`kvsim.overlap`), which the engine loop then takes with its host part. Only a
    segment's last steps can be such (the run stops at the next arrival: every step starts before it, and a decode
    step is never shorter than half the one before it), so they are looked at from the end. ``first``: the segment
    starts the run (its first step was checked by :func:`fast_forward`); ``before``: the start of the step before
    the segment's first otherwise."""
    k = priced[0]
    if limit == float("inf"):
        return priced
    clock = priced[3]           # (the segment's running sum where _price made it: its starts, no copy taken)
    starts = clock if clock is not None else _starts(eng.cost, (clock, seg, None, k, t0, None))
    flew = eng.overlap.flew
    j = k
    while j > (1 if first else 0):
        prev = starts[j - 2] if j >= 2 else before
        if flew(float(prev), float(starts[j - 1])):
            break
        j -= 1
    if j == k:
        return priced
    return _price(eng.cost, seg, t0, float(starts[j]), first) if j else (0, t0, t0, None, None)


def _times(cost, seg: Segment, dts):
    """The segment's step times (``_price``'s, made now where it left them out)."""
    return cost.decode_run_times(seg.num_seqs, seg.ctx_sum, seg.ctx_max, seg.steps) if dts is None else dts


def _starts(cost, piece) -> list | np.ndarray:
    """The start of each step a segment's piece took (``_price``'s clock, made now where it left it out: the
    running sum of the step times, as the loop that cut the segment summed them)."""
    clock, seg, _, n, t0, _ = piece
    if clock is None:
        return list(accumulate(cost.decode_run_times(seg.num_seqs, seg.ctx_sum, seg.ctx_max, n - 1), initial=t0))
    return clock[:n]


def _steps_before(clock, limit: float) -> int:
    """Steps that start before ``limit`` past the first (which always runs: the caller checked it). The clock
    never decreases, so the first start at or after the limit is a binary search away."""
    k = len(clock) - 1
    if limit == float("inf"):
        return k
    if isinstance(clock, list):
        return bisect_left(clock, limit, 1, k)
    return int(clock[1:-1].searchsorted(limit)) + 1


def fast_forward(eng):
    """A SimPy generator running the decode run that starts now, or None if the next step is taken alone."""
    sched, env = eng.sched, eng.env
    mix = getattr(eng.cost, "_window", None)      # sliding-window pricing: segments stay inside the windows
    if mix is not None and not mix.plain_below_window:
        return None
    run = start_decode_run(sched)
    if run is None:
        return None
    ov = eng.overlap
    if ov is not None and ov.decode_priced and not (ov.seen_decode and ov.ahead(env.now)):
        return None         # its first step (or, the first decode step, its second) pays its host part (kvsim.overlap):
        #                     the engine loop prices it
    if mix is not None:     # a step's windowed key sum is then the plain context sum: linear, as segments price it
        run.ctx_limit = mix.min_window
    seg = run.next_segment()
    if seg.steps < MIN_STEPS:
        return None
    limit = _limit(eng)
    priced = _price(eng.cost, seg, env.now, limit, True)
    if priced[0] < MIN_STEPS:
        return None
    return _advance(eng, run, seg, priced, limit)


def _limit(eng) -> float:
    """The clock a run's steps must start before: the time limit, and the next arrival where nothing waits or is
    swapped out (the step at or after it would admit it)."""
    sched = eng.sched
    limit = eng.max_time_s if eng.max_time_s is not None else float("inf")
    ov = eng.overlap
    if (not sched.waiting and not sched.swapped) or (ov is not None and ov.decode_priced):
        limit = min(limit, eng.next_arrival_s)      # (a request due: the step in flight may not fly, kvsim.overlap)
    return limit


def _advance(eng, run, seg: Segment, priced: tuple, limit: float):
    sched, env, log = eng.sched, eng.env, eng.log
    waiting, swapped = len(sched.waiting), len(sched.swapped)
    first_iter = len(log)
    run_first = first_iter                      # (the first iteration of the run, for ff_steps)
    pieces = []         # (clock or None, segment, step times or None, steps taken, start, last step's start) of each
    #                     segment, (None, swap s, step s, 0, None, None) of each step taken from the run
    #                     (step_in_run), in order: the timeouts
    since = 0           # pieces[since:]: the segments since the last step taken from the run (arrivals go there)
    t = env.now
    start = True        # the next segment starts a run (its clock is not the last segment's running sum)
    stuck = False       # the run ends where the free blocks run out: the next step will not fit either
    taken = 0           # steps taken from the run
    last_start = t      # the start of the last step priced
    values = getattr(run.tracker, "segment_values", None)     # closed-form memory as a tuple (paged runs)
    ov_decode = eng.overlap is not None and eng.overlap.decode_priced     # (steps not prepared ahead: the loop's)
    while True:
        if priced is None and seg.steps:        # the run's next segment, from t up to the limit
            priced = _price(eng.cost, seg, t, limit, False)
        if seg.steps and priced[0] and ov_decode:
            priced = _until_not_ahead(eng, seg, t, priced, limit, start, last_start)
        short = False                           # (the run stops short of memory)
        if seg.steps:
            if priced[0] == 0:
                break
            k, last_start, t1, clock, dts = priced
            priced = None
            if values is None:
                log.add_segment(t, k, seg.num_seqs, seg.num_groups, seg.ctx_sum, seg.ctx_max, swapped, waiting,
                                start, run.memory(seg, k), t1)
            else:                               # (a paged run: its memory as a tuple, no SegmentMemory built)
                nb = seg.new_blocks
                log.add_segment_values(t, k, seg.num_seqs, seg.num_groups, seg.ctx_sum, seg.ctx_max, swapped,
                                       waiting, start, values(seg.first, nb if k == len(nb) else nb[:k]), t1)
            start = False
            pieces.append((clock, seg, dts, k, t, last_start))
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
        pieces.append((None, swap_s, dt, 0, None, None))
        taken += 1
        since = len(pieces)
        first_iter = len(log)
        waiting, swapped = len(sched.waiting), len(sched.swapped)
        limit = _limit(eng)
        start = True
        if not (sched.running and decode_run.KEEP_RUNS and run.resume() and admission_blocked(sched, run.num_seqs)):
            break                               # (resume: the groups swapped in join the run)
        seg = run.next_segment()
    if eng.overlap is not None and pieces and pieces[-1][3]:   # the run ended with a segment: its last step's start
        eng.overlap.started(pieces[-1][5], False)            # (a step taken from the run told kvsim.overlap itself)
    # nothing between here and the next schedule takes or frees blocks (arrivals only queue), so a run cut
    # short of memory would not start again there: the engine skips that try
    eng.ff_blocked = stuck
    if env.now + (t - env.now) == t:            # one timeout lands exactly where the steps would
        yield env.timeout(t - env.now)
    else:
        for _, sg, d, n, _, _ in pieces:
            if n == 0:                          # a step taken from the run: its swaps, then the step
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
    if not eng.inbox or min(when for when, _ in eng.inbox) > last_start:
        return                                  # (as usual: the arrival that cut the run comes after its last start)
    # arrivals during the run only join the queue behind a blocked head or while groups are swapped
    # out (start_decode_run checked that); each is added at the first step starting at or after it: in the
    # first segment whose last step starts at or after it, after the steps before it there (only those
    # segments' step starts are made)
    segs = pieces[since:]
    lasts = [p[5] for p in segs]                # (the clock never decreases: sorted)
    offs = list(accumulate((p[3] for p in segs), initial=0))      # steps in the segments before each
    starts = {}
    late = []
    for when, spec in eng.inbox:
        i = bisect_left(lasts, when)
        if i == len(segs):
            late.append((when, spec))
            continue
        if i not in starts:
            starts[i] = _starts(eng.cost, segs[i])
        j = offs[i] + bisect_left(starts[i], when)
        before = len(sched.waiting)
        sched.add_request(spec)
        log.segments.add_waiting(first_iter + j, len(sched.waiting) - before, end_iter)
    eng.inbox[:] = late
