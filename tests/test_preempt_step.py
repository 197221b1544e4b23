"""A decode run's preempting step taken from the run (:mod:`kvsim.core.decode_preempt`) equals stepping it.

Saturated scenarios (recompute, swap, parallel sampling with swaps, a CPU pool too small to take every victim)
are run with the shortcut, without it (``ENABLED`` off: ``schedule`` takes every preempting step) and stepping
every iteration: records and summaries must be exactly equal, and the shortcut must have been taken. Each
step it takes is also replayed on a deep copy of the scheduler by ``schedule`` and ``complete_step``: the
block manager (tables, reference counts, fills, free-list order, CPU side), the queues, every group's counters,
the scheduler's step counts, the record row and the step's price must come out the same.
"""
from __future__ import annotations

import copy
import random

import pandas as pd
import pytest

import kvsim.core.decode_preempt as decode_preempt
import kvsim.preempt_step as preempt_step
from kvsim.build import setup_run
from kvsim.config import load_scenario
from kvsim.core.plan import StepPlan
from kvsim.records import step_state
from kvsim.sim import SimEngine, simulate

BASE = {
    "model": "opt-13b", "gpu": "a100-40gb",
    "engine": {"allocator": "paged", "block_size": 16, "gpu_memory_utilization": 0.7, "swap_space_gib": 4},
    "workload": {"dataset": "sharegpt", "rate_req_s": 4.0, "num_requests": 150},
    "seed": 0,
}


def scenario(engine=None, workload=None):
    d = copy.deepcopy(BASE)
    d["engine"].update(engine or {})
    d["workload"].update(workload or {})
    return load_scenario(d)


CASES = {
    "recompute": scenario(engine={"num_gpu_blocks": 500}),
    "swap": scenario(engine={"num_gpu_blocks": 500, "preemption_mode": "swap", "num_cpu_blocks": 4000}),
    "swap_cpu_short": scenario(engine={"num_gpu_blocks": 500, "preemption_mode": "swap", "num_cpu_blocks": 60}),
    "n4_swap": scenario(engine={"num_gpu_blocks": 700, "num_cpu_blocks": 3000}, workload={"n": 4}),
    "n2_block8": scenario(engine={"num_gpu_blocks": 900, "block_size": 8, "num_cpu_blocks": 3000},
                          workload={"n": 2}),
}


def _count_taken(monkeypatch) -> list:
    taken = []
    real = preempt_step.preempting_step

    def counted(sched):
        step = real(sched)
        if step is not None:
            taken.append(step)
        return step
    monkeypatch.setattr(preempt_step, "preempting_step", counted)
    return taken


@pytest.mark.parametrize("name", sorted(CASES))
def test_preempting_step_equals_stepping(name, monkeypatch):
    sc = CASES[name]
    taken = _count_taken(monkeypatch)
    fast = simulate(sc)
    assert len(taken) > 0, "the shortcut was never taken"
    monkeypatch.setattr(decode_preempt, "ENABLED", False)
    plain = simulate(sc)
    stepped = simulate(sc, fast_forward=False)
    for other in (plain, stepped):
        pd.testing.assert_frame_equal(fast.requests, other.requests, check_exact=True)
        pd.testing.assert_frame_equal(fast.iterations, other.iterations, check_exact=True)
        assert fast.summary == other.summary
    kind = "preemptions_recompute" if name == "recompute" else "preemptions_swap"
    assert fast.summary[kind] > 0


def _snapshot(sched) -> tuple:
    """The scheduler's and its block manager's state (fills of held blocks only: a free block's is stale)."""
    bm = sched.kv.bm
    groups = tuple((g.group_id, g.status, tuple(s.generated for s in g.seqs), g.num_preemptions, g.num_swaps,
                    g.num_recomputes, g.prefill_target, g.prefill_done, g.finish_s) for g in sched.groups.values())
    return (dict(bm.tables), dict(bm.num_tokens), list(bm.ref), [f if r else 0 for f, r in zip(bm.fill, bm.ref)],
            list(bm._free), dict(bm.cpu_tables), dict(bm.cpu_num_tokens), list(bm.cpu_ref),
            [f if r else 0 for f, r in zip(bm.cpu_fill, bm.cpu_ref)], list(bm._cpu_free), bm.num_allocated,
            bm.used_slots, [g.group_id for g in sched.running], [g.group_id for g in sched.waiting],
            [g.group_id for g in sched.swapped], [g.group_id for g in sched.finished], groups,
            (sched.kv_steps, sched.uniform_steps, sched.tail_steps, sched.joins))


@pytest.mark.parametrize("name", ["recompute", "n4_swap", "swap_cpu_short"])
def test_preempting_step_state_equals_schedule(name, monkeypatch):
    """Every step the shortcut takes, replayed by ``schedule`` / ``complete_step`` on a copy: the same state."""
    real_take = preempt_step.preempting_step
    real_complete = decode_preempt.PreemptingStep.complete
    twins: dict[int, tuple] = {}
    checked = []

    def take(sched):
        twin = copy.deepcopy(sched)
        step = real_take(sched)
        if step is None:
            assert _snapshot(twin) == _snapshot(sched)          # nothing changed
            return None
        plan = twin.schedule(0.0)
        assert plan.preempted and not plan.prefill_group_ids and not plan.swap_in and not plan.copy_pairs
        assert step.state() == step_state(plan, twin)
        assert step.plan.preempted == plan.preempted and step.plan.swap_out == plan.swap_out
        assert step.ctx_sum == sum(plan.decode_context_tokens) and step.num_seqs == len(plan.decode_context_tokens)
        cost = eng.cost
        assert (cost.preempting_step_time(step.num_seqs, step.ctx_sum, len(plan.swap_out))
                == cost.step_time(plan))
        twins[id(step)] = (twin, plan)
        return step

    def complete(self, now):
        real_complete(self, now)
        twin, plan = twins.pop(id(self))
        twin.complete_step(plan, now)
        assert _snapshot(twin) == _snapshot(self.run.sched)
        checked.append(now)

    monkeypatch.setattr(preempt_step, "preempting_step", take)
    monkeypatch.setattr(decode_preempt.PreemptingStep, "complete", complete)
    eng = SimEngine(setup_run(CASES[name]))
    eng.run()
    assert len(checked) > 0 and not twins


@pytest.mark.parametrize("swaps_in_step", [True, False])
def test_preempting_step_time_is_step_time(swaps_in_step):
    """The roofline's ``preempting_step_time`` is ``step_time`` of the plan, bit for bit."""
    import dataclasses
    cost = setup_run(CASES["swap"]).cost
    cost.params = dataclasses.replace(cost.params, include_swaps_in_step=swaps_in_step)
    rng = random.Random(3)
    for _ in range(300):
        n = rng.choice([0, 1, 2, 7, 40, 255])
        ctx = [rng.randrange(1, 4000) for _ in range(n)]
        out = rng.choice([0, 0, 1, 13, 200])
        plan = StepPlan(decode_group_ids=list(range(n)), decode_context_tokens=ctx,
                        swap_out=[(i, i) for i in range(out)], preempted=[(0, "swap")])
        assert cost.preempting_step_time(n, sum(ctx), out) == cost.step_time(plan)
