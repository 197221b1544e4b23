"""Decode steps taken from a kept run (:mod:`kvsim.run_step`), by the engine or inside a fast-forwarded run that
goes on after them, equal stepping them.

Saturated scenarios (recompute, swap, parallel sampling with swaps, a CPU pool too small to take every victim)
are run with the shortcuts, without them (``decode_preempt.ENABLED`` off: ``schedule`` takes every step) and
stepping every iteration: records and summaries must be exactly equal, and both kinds of step (the preempting
step of :mod:`kvsim.core.decode_preempt`, the uniform step with swap-ins of :mod:`kvsim.core.decode_swap_in`)
must have been taken. Each step they take is also replayed on a deep copy of the scheduler by ``schedule`` and
``complete_step``: the block manager (tables, reference counts, fills, free-list order, CPU side), the queues,
every group's counters, the scheduler's step counts, the record row and the step's price must come out the same.
"""
from __future__ import annotations

import copy
import random

import pandas as pd
import pytest

import kvsim.core.decode_preempt as decode_preempt
import kvsim.fastforward as fastforward
import kvsim.run_step as run_step
from kvsim.build import setup_run
from tests._scenarios import overridden, assert_same_runs
from kvsim.core.decode_swap_in import SwapInStep
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
    return overridden(BASE, engine, workload)


CASES = {
    "recompute": scenario(engine={"num_gpu_blocks": 500}),
    "swap": scenario(engine={"num_gpu_blocks": 500, "preemption_mode": "swap", "num_cpu_blocks": 4000}),
    "swap_cpu_short": scenario(engine={"num_gpu_blocks": 500, "preemption_mode": "swap", "num_cpu_blocks": 60}),
    "n4_swap": scenario(engine={"num_gpu_blocks": 700, "num_cpu_blocks": 3000}, workload={"n": 4}),
    "n2_block8": scenario(engine={"num_gpu_blocks": 900, "block_size": 8, "num_cpu_blocks": 3000},
                          workload={"n": 2}),
}


KINDS = {"preempting_step": decode_preempt.PreemptingStep, "swap_in_step": SwapInStep}


def _count_taken(monkeypatch) -> dict:
    taken = {name: [] for name in KINDS}
    for name in KINDS:
        real = getattr(run_step, name)

        def counted(sched, run, real=real, name=name):
            step = real(sched, run)
            if step is not None:
                taken[name].append(step)
            return step
        monkeypatch.setattr(run_step, name, counted)
    return taken


@pytest.mark.parametrize("name", sorted(CASES))
def test_steps_from_run_equal_stepping(name, monkeypatch):
    sc = CASES[name]
    taken = _count_taken(monkeypatch)
    inside = []                                 # steps taken inside a fast-forwarded run (it goes on after them)
    real_in_run = fastforward.step_in_run
    monkeypatch.setattr(fastforward, "step_in_run", lambda *a: inside.append(real_in_run(*a)) or inside[-1])
    fast = simulate(sc)
    assert all(len(t) > 0 for t in taken.values()), {k: len(t) for k, t in taken.items()}
    assert 0 < sum(x is not None for x in inside) < sum(map(len, taken.values()))   # (and some by the engine)
    monkeypatch.setattr(decode_preempt, "ENABLED", False)
    plain = simulate(sc)
    stepped = simulate(sc, fast_forward=False)
    assert_same_runs(fast, plain, stepped)
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
def test_steps_from_run_state_equals_schedule(name, monkeypatch):
    """Every step taken from the run, replayed by ``schedule`` / ``complete_step`` on a copy: the same state."""
    twins: dict[int, tuple] = {}
    checked = {name: 0 for name in KINDS}

    def wrap(kind):
        real = getattr(run_step, kind)

        def take(sched, run):
            twin = copy.deepcopy(sched)
            step = real(sched, run)
            if step is None:
                assert _snapshot(twin) == _snapshot(sched)          # nothing changed
                return None
            plan = twin.schedule(0.0)
            assert not plan.prefill_group_ids
            assert bool(plan.preempted) == (kind == "preempting_step")
            assert step.state() == step_state(plan, twin)
            assert step.plan.preempted == plan.preempted and step.plan.swap_out == plan.swap_out
            assert step.plan.swap_in == plan.swap_in and step.plan.copy_pairs == plan.copy_pairs
            assert step.ctx_sum == sum(plan.decode_context_tokens) and step.num_seqs == len(plan.decode_context_tokens)
            assert (eng.cost.decode_plan_time(step.num_seqs, step.ctx_sum, len(plan.copy_pairs), len(plan.swap_out),
                                              len(plan.swap_in)) == eng.cost.step_time(plan))
            twins[id(step)] = (twin, plan, kind)
            return step
        return take

    def wrap_complete(cls):
        real = cls.complete

        def complete(self, now):
            real(self, now)
            twin, plan, kind = twins.pop(id(self))
            twin.complete_step(plan, now)
            assert _snapshot(twin) == _snapshot(self.run.sched)
            checked[kind] += 1
        return complete

    for kind, cls in KINDS.items():
        monkeypatch.setattr(run_step, kind, wrap(kind))
        monkeypatch.setattr(cls, "complete", wrap_complete(cls))
    eng = SimEngine(setup_run(CASES[name]))
    eng.run()
    assert all(checked.values()) and not twins, checked


@pytest.mark.parametrize("swaps_in_step", [True, False])
def test_decode_plan_time_is_step_time(swaps_in_step):
    """The roofline's ``decode_plan_time`` is ``step_time`` of the plan, bit for bit."""
    import dataclasses
    cost = setup_run(CASES["swap"]).cost
    cost.params = dataclasses.replace(cost.params, include_swaps_in_step=swaps_in_step)
    rng = random.Random(3)
    for _ in range(500):
        n = rng.choice([0, 1, 2, 7, 40, 255])
        ctx = [rng.randrange(1, 4000) for _ in range(n)]
        out, back, copies = (rng.choice([0, 0, 1, 13, 200]) for _ in range(3))
        plan = StepPlan(decode_group_ids=list(range(n)), decode_context_tokens=ctx,
                        swap_out=[(i, i) for i in range(out)], swap_in=[(i, i) for i in range(back)],
                        copy_pairs=[(i, i) for i in range(copies)])
        if plan.is_empty:
            continue
        assert cost.decode_plan_time(n, sum(ctx), copies, out, back) == cost.step_time(plan)


def test_no_step_from_run_with_another_step_time(monkeypatch):
    """A cost model whose ``step_time`` is not the roofline's own (a subclass's) takes every step by ``schedule``:
    ``decode_plan_time`` prices as the roofline's ``step_time`` does."""
    from kvsim.cost.roofline import RooflineCostModel

    class Own(RooflineCostModel):
        def step_time(self, plan):
            return super().step_time(plan)

    taken = _count_taken(monkeypatch)
    setup = setup_run(CASES["recompute"])
    setup.cost.__class__ = Own
    res = SimEngine(setup).run()
    assert not any(taken.values()) and res.summary["preemptions"] > 0
    pd.testing.assert_frame_equal(res.iterations, simulate(CASES["recompute"], fast_forward=False).iterations,
                                  check_exact=True)
