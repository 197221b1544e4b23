"""The memory split of a step that only admits beside a kept decode run, from the run's aggregates
(:func:`kvsim.core.run_split.admitting_split`), equals ``PagedKV.memory_split`` (``ContiguousKV.memory_split``) of the
running groups.

Every split the simulator takes so is checked against ``memory_split`` read at the same moment, in scenarios with
preemptions (recompute and swap), parallel sampling (with outputs short enough that an admitted group's
shared partial prompt block holds its sequences' last slots: the split's cap at the unwritten slots binds), prefix
caching (admitted prompts sharing blocks), a light load and Orca's reservations (light, busy, n = 3); and the runs' records and summaries must equal those with the shortcut off and those of stepping every
iteration.
"""
from __future__ import annotations

import pytest

import kvsim.core.run_split as run_split
import kvsim.sim as sim
from kvsim.sim import simulate
from tests._scenarios import overridden, assert_same_runs

BASE = {
    "model": "opt-13b", "gpu": "a100-40gb",
    "engine": {"allocator": "paged", "block_size": 16, "gpu_memory_utilization": 0.7, "swap_space_gib": 4},
    "workload": {"dataset": "sharegpt_like", "rate_req_s": 4.0, "num_requests": 150},
    "seed": 0,
}

CASES = {
    "light": overridden(BASE, workload={"rate_req_s": 1.0}),
    "recompute": overridden(BASE, engine={"num_gpu_blocks": 500}),
    "swap": overridden(BASE, engine={"num_gpu_blocks": 500, "preemption_mode": "swap", "num_cpu_blocks": 4000}),
    "n4": overridden(BASE, engine={"num_gpu_blocks": 900, "num_cpu_blocks": 3000}, workload={"n": 4}),
    "n4_short": overridden(BASE, engine={"num_gpu_blocks": 900}, workload={"n": 4, "dataset": "uniform",
                           "prompt_len_range": [16, 300], "output_len_range": [1, 12], "rate_req_s": 8.0}),
    "prefix": overridden(BASE, engine={"enable_prefix_caching": True, "num_gpu_blocks": 700},
                         workload={"prefix_len": 128, "rate_req_s": 2.0}),
    # Orca's contiguous reservations (ContiguousKV.memory_split; its kept run's sums)
    "orca_light": overridden(BASE, engine={"allocator": "orca_oracle"}, workload={"rate_req_s": 1.0}),
    "orca_busy": overridden(BASE, engine={"allocator": "orca_oracle", "placement": "buddy"}),
    "orca_pow2_n3": overridden(BASE, engine={"allocator": "orca_pow2", "num_gpu_blocks": 900, "num_cpu_blocks": 3000},
                               workload={"n": 3}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_admitting_split_is_memory_split(name, monkeypatch):
    checked = []

    def split(plan, sched):
        got = run_split.admitting_split(plan, sched)
        if got is not None:
            assert got == sched.kv.memory_split(sched.running)
            checked.append(plan)
        return got
    monkeypatch.setattr(sim, "admitting_split", split)
    fast = simulate(CASES[name])
    assert len(checked) > 10
    monkeypatch.setattr(run_split, "ENABLED", False)
    plain = simulate(CASES[name])
    stepped = simulate(CASES[name], fast_forward=False)
    assert_same_runs(fast, plain, stepped)
