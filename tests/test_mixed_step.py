"""The chunked step taken after a kept decode run (:mod:`kvsim.core.decode_mixed`, by the engine loop through
:func:`kvsim.run_step.mixed_step_from_run`) equals stepping it.

Chunked-prefill scenarios (light load, memory short enough to preempt, parallel sampling, outputs short enough that
groups finish at their prompt's step beside the run's finishing groups, a token budget small enough that prompts
take several steps and decode rows alone can fill it) are run with the shortcut, without it
(``decode_mixed.ENABLED`` off: ``schedule`` takes every step) and stepping every iteration: records and summaries
must be exactly equal, and the step must have been taken. Each step it takes is also replayed on a deep copy of
the scheduler by ``schedule`` and ``complete_step``: the block manager (tables, reference counts, fills, free-list
order), the queues, every group's counters, the scheduler's step counts, the record row and the step's price must
come out the same.
"""
from __future__ import annotations

import copy
import random

import pytest

import kvsim.core.decode_mixed as decode_mixed
import kvsim.run_step as run_step
from kvsim.build import setup_run
from kvsim.core.decode_mixed import MixedStep
from kvsim.core.plan import StepPlan
from kvsim.records import step_state
from kvsim.sim import SimEngine, simulate
from tests._scenarios import overridden, assert_same_runs
from tests.test_run_step import _snapshot

BASE = {
    "model": "opt-13b", "gpu": "a100-40gb",
    "engine": {"allocator": "paged", "block_size": 16, "gpu_memory_utilization": 0.7, "scheduler": "chunked",
               "max_num_batched_tokens": 512},
    "workload": {"dataset": "sharegpt_like", "rate_req_s": 1.0, "num_requests": 150},
    "seed": 0,
}


def scenario(engine=None, workload=None):
    return overridden(BASE, engine, workload)


CASES = {
    "light": scenario(),
    "preempting": scenario(engine={"num_gpu_blocks": 500}, workload={"rate_req_s": 4.0}),
    "n2": scenario(engine={"num_gpu_blocks": 900, "num_cpu_blocks": 3000}, workload={"n": 2, "rate_req_s": 2.0}),
    "short_outputs": scenario(workload={"dataset": "uniform", "prompt_len_range": [16, 400],
                                        "output_len_range": [1, 24], "rate_req_s": 8.0, "num_requests": 300}),
    "small_budget": scenario(engine={"max_num_batched_tokens": 64, "max_num_seqs": 64},
                             workload={"rate_req_s": 3.0}),
}


def _count_taken(monkeypatch) -> list:
    taken = []
    real = run_step.mixed_step

    def counted(sched, now):
        step = real(sched, now)
        if step is not None:
            taken.append(step)
        return step
    monkeypatch.setattr(run_step, "mixed_step", counted)
    return taken


@pytest.mark.parametrize("name", sorted(CASES))
def test_mixed_steps_equal_stepping(name, monkeypatch):
    sc = CASES[name]
    taken = _count_taken(monkeypatch)
    fast = simulate(sc)
    assert taken
    assert any(s.plan.prefill_group_ids for s in taken)
    monkeypatch.setattr(decode_mixed, "ENABLED", False)
    plain = simulate(sc)
    stepped = simulate(sc, fast_forward=False)
    assert_same_runs(fast, plain, stepped)
    if name == "preempting":
        assert fast.summary["preemptions"] > 0


@pytest.mark.parametrize("name", sorted(CASES))
def test_mixed_step_state_equals_schedule(name, monkeypatch):
    """Every step taken from the run, replayed by ``schedule`` / ``complete_step`` on a copy: the same state."""
    twins: dict[int, tuple] = {}
    checked = []
    real = run_step.mixed_step

    def take(sched, now):
        twin = copy.deepcopy(sched)
        step = real(sched, now)
        if step is None:
            assert _snapshot(twin) == _snapshot(sched)          # nothing changed
            return None
        plan = twin.schedule(now)
        assert not (plan.preempted or plan.swap_out or plan.swap_in or plan.copy_pairs)
        assert step.plan.prefill_group_ids == plan.prefill_group_ids
        assert step.plan.prefill_new_tokens == plan.prefill_new_tokens
        assert step.plan.prefill_cached_tokens == plan.prefill_cached_tokens
        assert step.ctx_sum == sum(plan.decode_context_tokens) and step.num_seqs == len(plan.decode_context_tokens)
        assert step.num_groups == len(plan.decode_group_ids)
        assert step.state() == step_state(plan, twin)
        price = (eng.cost.mixed_plan_time(step.plan, step.num_seqs, step.ctx_sum) if plan.prefill_group_ids
                 else eng.cost.decode_plan_time(step.num_seqs, step.ctx_sum))
        assert price == eng.cost.step_time(plan)
        twins[id(step)] = (twin, plan)
        return step

    def complete(self, now):
        real_complete(self, now)
        twin, plan = twins.pop(id(self))
        twin.complete_step(plan, now)
        assert _snapshot(twin) == _snapshot(self.run.sched)
        checked.append(self)

    real_complete = MixedStep.complete
    monkeypatch.setattr(run_step, "mixed_step", take)
    monkeypatch.setattr(MixedStep, "complete", complete)
    eng = SimEngine(setup_run(CASES[name]))
    eng.run()
    assert checked and not twins


@pytest.mark.parametrize("swaps_in_step", [True, False])
def test_mixed_plan_time_is_step_time(swaps_in_step):
    """The roofline's ``mixed_plan_time`` of a plan without its decode lists is ``step_time`` of the plan with
    them, bit for bit."""
    import dataclasses
    cost = setup_run(CASES["light"]).cost
    cost.params = dataclasses.replace(cost.params, include_swaps_in_step=swaps_in_step)
    rng = random.Random(5)
    for _ in range(500):
        n = rng.choice([0, 1, 2, 7, 40, 255])
        ctx = [rng.randrange(1, 4000) for _ in range(n)]
        groups = rng.choice([1, 1, 2, 5])
        new = [rng.randrange(1, 600) for _ in range(groups)]
        cached = [rng.choice([0, 0, 16, 128, 300]) for _ in range(groups)]
        copies = rng.choice([0, 0, 3])
        full = StepPlan(prefill_group_ids=list(range(groups)), prefill_new_tokens=new, prefill_cached_tokens=cached,
                        decode_group_ids=list(range(n)), decode_context_tokens=ctx,
                        copy_pairs=[(i, i) for i in range(copies)])
        bare = StepPlan(prefill_group_ids=list(range(groups)), prefill_new_tokens=list(new),
                        prefill_cached_tokens=list(cached), copy_pairs=[(i, i) for i in range(copies)])
        assert cost.mixed_plan_time(bare, n, sum(ctx)) == cost.step_time(full)
