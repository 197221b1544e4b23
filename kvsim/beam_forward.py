"""The simulator's side of beam decode runs (:mod:`kvsim.core.beam_run`): steps priced, recorded and timed as the
engine loop prices, records and times the plans ``schedule`` would have returned.

Each step is priced by the cost model's ``decode_plan_time`` (the float ``step_time`` gives a decode plan with
that many copies: no swaps, no prefill), recorded as one stepped row with ``step_state``'s values, and starts
where the last one ended (SimPy's running sum). The run stops before a step that would start at or after the next
arrival or the time limit (that step is the engine loop's: an arrival joins the scheduler first), after the step
in which groups finish, and where :meth:`BeamRun.can_step` says the next ``schedule`` would admit, swap in or
preempt. The clock is then moved by one timeout where that lands exactly where the steps' timeouts would, else
by one timeout per step.
"""
from __future__ import annotations

from kvsim.core.beam_run import start_beam_run
from kvsim.run_step import _priced_here


def beam_forward(eng, kept=None):
    """A SimPy generator for the beam steps taken now (state changed, rows recorded), or None where none is taken
    (nothing changed: the engine schedules the next step itself). ``kept``: the run the engine's last step came
    from (``eng.beam_kept`` after that call), to be taken up again (:func:`~kvsim.core.beam_run.start_beam_run`)."""
    if not _priced_here(eng):
        return None
    sched, env = eng.sched, eng.env
    run = start_beam_run(sched, kept)
    if run is None:
        return None
    limit = eng.next_arrival_s
    if eng.max_time_s is not None and eng.max_time_s < limit:
        limit = eng.max_time_s
    t0 = t = env.now
    if not t < limit:
        return None
    price, log = eng.cost.decode_plan_time, eng.log
    step, terms, release, can_step = run.step, run.record_terms, run.release, run.can_step
    nseq, ngroups = run.num_seqs, len(run.groups)
    waiting, swapped = len(sched.waiting), len(sched.swapped)
    n = len(log)
    rows, times = [], []
    while True:
        copies = step()
        dt = price(nseq, run.ctx_sum, copies)
        # (ITERATION_COLUMNS: the iteration, its timing, no prefill, every running group decoding, nothing
        # preempted or swapped, its copies and memory)
        rows.append((n, t, dt, 0.0, 0, 0, nseq, ngroups, nseq, ngroups, waiting, swapped, 0, 0, 0, copies) + terms())
        release()
        n += 1
        times.append(dt)
        t = t + dt
        if not t < limit or not can_step():
            break
    log.append_rows(rows)
    run.end(t)
    eng.beam_kept = run
    eng.beam_steps += len(times)
    return _wait(env, t0, t, times)


def _wait(env, t0: float, t: float, times: list[float]):
    """The steps' timeouts: one where it lands on ``t`` exactly, else one per step."""
    if t0 + (t - t0) == t:
        yield env.timeout(t - t0)
    else:
        for dt in times:
            yield env.timeout(dt)
