"""The simulator's side of a decode run's preempting step (:mod:`kvsim.core.decode_preempt`).

Where a fast-forwarded run stopped short of memory, the engine loop's next step preempts. Where that step is the
run's (``preempting_step`` takes it), it is priced, recorded and timed here exactly as the engine loop prices,
records and times the plan ``schedule`` would have returned: the cost model's ``preempting_step_time`` (the
float ``step_time`` gives that plan), the host-link time of its swap-outs (``SimEngine._swap_time``), one
stepped row (``step_state``'s values), the swaps on the host link, then the step, then ``complete_step``'s side.
"""
from __future__ import annotations

from kvsim.core.decode_preempt import PreemptingStep, preempting_step


def step_preempting(eng):
    """A SimPy generator taking the engine's next step where it is a kept decode run's preempting step, or None
    (nothing changed: the engine schedules the step itself)."""
    cost = eng.cost
    if getattr(cost, "preempting_step_time", None) is None or getattr(cost, "_window", None) is not None:
        return None
    if eng.gate is not None:
        return None
    step = preempting_step(eng.sched)
    if step is None:
        return None
    return _take(eng, step)


def _take(eng, step: PreemptingStep):
    env, plan = eng.env, step.plan
    if not step.num_seqs and not plan.swap_out:         # (the plan schedule returns is empty: the engine's error)
        sched = eng.sched
        raise RuntimeError(f"scheduler stalled at t={env.now}: "
                           f"{len(sched.waiting)} waiting, {len(sched.swapped)} swapped")
    swap_s = eng._swap_time(plan)
    dt = eng.cost.preempting_step_time(step.num_seqs, step.ctx_sum, len(plan.swap_out))
    eng.log.append_step(env.now, dt + swap_s, swap_s, step.state())
    if swap_s > 0:
        with eng.host_link.request() as req:
            yield req
            yield env.timeout(swap_s)
    yield env.timeout(dt)
    step.complete(env.now)
