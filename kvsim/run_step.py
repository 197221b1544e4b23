"""The simulator's side of a step taken from a kept decode run (:mod:`kvsim.core.decode_preempt`: the step that
preempts where a run stops short of memory; :mod:`kvsim.core.decode_swap_in`: a step in which every group takes
its slot, then swapped groups come back; :mod:`kvsim.core.decode_mixed`: the chunked step in which every group
takes its slot beside the prefills admitted).

Where the engine loop's next step is such a step, it is priced, recorded and timed here exactly as the engine loop
prices, records and times the plan ``schedule`` would have returned: the cost model's ``decode_plan_time`` (the
float ``step_time`` gives that plan), the host-link time of its swaps (``SimEngine._swap_time``), one stepped row
(``step_state``'s values), the swaps on the host link, then the step, then ``complete_step``'s side.
"""
from __future__ import annotations

from kvsim.core.decode_mixed import mixed_step
from kvsim.core.decode_preempt import kept_run, preempting_step
from kvsim.cost.roofline import RooflineCostModel
from kvsim.core.decode_swap_in import swap_in_step


def _priced_here(eng) -> bool:
    """Whether this module may take the engine's steps: the roofline's own ``step_time`` (``decode_plan_time`` and
    ``mixed_plan_time`` are its body, not a subclass's), no sliding windows (a step's context sum is not the plain
    sum) and no closed-loop gate."""
    cost = eng.cost
    return type(cost).step_time is RooflineCostModel.step_time and cost._window is None and eng.gate is None


def _step(eng):
    """The next step taken from the kept run (state changed, not yet priced or recorded), or None (nothing
    changed)."""
    if not _priced_here(eng):
        return None
    sched = eng.sched
    run = kept_run(sched)
    if run is None:
        return None
    step = preempting_step(sched, run)
    return step if step is not None else swap_in_step(sched, run)


def step_from_run(eng):
    """A SimPy generator taking the engine's next step where a kept decode run can take it, or None (nothing
    changed: the engine schedules the step itself)."""
    step = _step(eng)
    return None if step is None else _take(eng, step)


def mixed_step_from_run(eng):
    """A SimPy generator taking the engine's next step where it is the chunked step after the kept decode run
    (:func:`kvsim.core.decode_mixed.mixed_step`: the run's groups decode, waiting groups are admitted beside
    them), or None (nothing changed: the engine schedules the step itself). Only the engine loop takes it: it
    admits, which ends a fast-forwarded run."""
    if not _priced_here(eng):
        return None
    step = mixed_step(eng.sched, eng.env.now)
    return None if step is None else _take(eng, step)


def step_in_run(eng, run, t: float) -> tuple[float, float, float] | None:
    """Inside a fast-forwarded ``run`` (:func:`kvsim.fastforward._advance`) whose clock reads ``t`` (the engine's
    ``env.now`` once the run's timeouts are yielded): take the engine's next step from the run where the engine
    loop would take it so at ``t`` — no request arrives by then (it would be queued before the step), ``t`` is
    before the time limit — recorded and completed at its end. Returns (swap seconds, step seconds, clock
    after), the clock ``env.now`` reads after stepping's timeouts; None where nothing was taken (nothing
    changed)."""
    if eng.next_arrival_s <= t or (eng.max_time_s is not None and t >= eng.max_time_s):
        return None
    if eng.sched._kept_run is not run:
        return None
    step = _step(eng)
    if step is None:
        return None
    swap_s, dt = _price_and_record(eng, step, t)
    t1 = t + swap_s if swap_s > 0 else t
    t1 += dt
    step.complete(t1)
    return swap_s, dt, t1


def _price_and_record(eng, step, t: float) -> tuple[float, float]:
    """The step's host-link and step seconds, as the engine loop prices its plan; its row recorded at ``t``."""
    plan = step.plan
    if not step.num_seqs and not plan.swap_out:         # (the plan schedule returns is empty: the engine's error)
        sched = eng.sched
        raise RuntimeError(f"scheduler stalled at t={t}: "
                           f"{len(sched.waiting)} waiting, {len(sched.swapped)} swapped")
    swap_s = eng._swap_time(plan)
    if plan.prefill_new_tokens:                         # (a chunked step's prefills beside the run's decode rows)
        dt = eng.cost.mixed_plan_time(plan, step.num_seqs, step.ctx_sum)
    else:
        dt = eng.cost.decode_plan_time(step.num_seqs, step.ctx_sum, len(plan.copy_pairs), len(plan.swap_out),
                                       len(plan.swap_in))
    eng.log.append_step(t, dt + swap_s, swap_s, step.state())
    if eng.overlap is not None:
        eng.overlap.started(t, bool(plan.prefill_new_tokens))
    return swap_s, dt


def _take(eng, step):
    env = eng.env
    swap_s, dt = _price_and_record(eng, step, env.now)
    if swap_s > 0:
        with eng.host_link.request() as req:
            yield req
            yield env.timeout(swap_s)
    yield env.timeout(dt)
    step.complete(env.now)
