"""The simulator's side of a step taken from a kept decode run (:mod:`kvsim.core.decode_preempt`: the step that
preempts where a run stops short of memory; :mod:`kvsim.core.decode_swap_in`: a step in which every group takes
its slot, then swapped groups come back).

Where the engine loop's next step is such a step, it is priced, recorded and timed here exactly as the engine loop
prices, records and times the plan ``schedule`` would have returned: the cost model's ``decode_plan_time`` (the
float ``step_time`` gives that plan), the host-link time of its swaps (``SimEngine._swap_time``), one stepped row
(``step_state``'s values), the swaps on the host link, then the step, then ``complete_step``'s side.
"""
from __future__ import annotations

from kvsim.core.decode_preempt import kept_run, preempting_step
from kvsim.core.decode_swap_in import swap_in_step


def step_from_run(eng):
    """A SimPy generator taking the engine's next step where a kept decode run can take it, or None (nothing
    changed: the engine schedules the step itself)."""
    cost = eng.cost
    if getattr(cost, "decode_plan_time", None) is None or getattr(cost, "_window", None) is not None:
        return None
    if eng.gate is not None:
        return None
    sched = eng.sched
    run = kept_run(sched)
    if run is None:
        return None
    step = preempting_step(sched, run)
    if step is None:
        step = swap_in_step(sched, run)
        if step is None:
            return None
    return _take(eng, step)


def _take(eng, step):
    env, plan = eng.env, step.plan
    if not step.num_seqs and not plan.swap_out:         # (the plan schedule returns is empty: the engine's error)
        sched = eng.sched
        raise RuntimeError(f"scheduler stalled at t={env.now}: "
                           f"{len(sched.waiting)} waiting, {len(sched.swapped)} swapped")
    swap_s = eng._swap_time(plan)
    dt = eng.cost.decode_plan_time(step.num_seqs, step.ctx_sum, len(plan.copy_pairs), len(plan.swap_out),
                                   len(plan.swap_in))
    eng.log.append_step(env.now, dt + swap_s, swap_s, step.state())
    if swap_s > 0:
        with eng.host_link.request() as req:
            yield req
            yield env.timeout(swap_s)
    yield env.timeout(dt)
    step.complete(env.now)
