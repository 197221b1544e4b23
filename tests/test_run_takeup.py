"""A plain paged decode run is built from the scheduler's groups once per simulation: every later run is the last
one taken up again (``DecodeRun.resume``: after an admitted arrival's prefill step only the groups that joined are
read, the groups finished inside runs left at their finish), never rebuilt, and the records still equal stepping's.
A guard on the speed path (outputs alone would not show a run rebuilt each time: they are the same either way);
:mod:`tests.test_kept_runs` checks each taken-up run's aggregates against a fresh run's.

A run taken up is handed to the fast-forward even where the blocks of its first ``MIN_STEPS`` steps are not free
(``start_decode_run`` no longer looks): its first segment is then that short and no run goes ahead, as where
``start_decode_run`` refused it.
"""
from __future__ import annotations

import pytest

from kvsim import fastforward
from kvsim.build import setup_run
from kvsim.core import decode_run
from kvsim.core.decode_run import MIN_STEPS
from kvsim.sim import SimEngine, simulate
from tests._scenarios import assert_same_runs
from tests.test_fastforward import CASES, scenario

PLAIN = {"paged_vllm": CASES["paged_vllm"][0], "paged_high_rate": CASES["paged_high_rate"][0],
         "paged_swap": scenario(engine={"preemption_mode": "swap"}, workload={"rate_req_s": 4.0})}


@pytest.mark.parametrize("name", sorted(PLAIN))
def test_plain_paged_runs_are_taken_up_not_rebuilt(name, monkeypatch):
    built, resumed, short = [0], [], [0]
    init, resume, start = decode_run.DecodeRun.__init__, decode_run.DecodeRun.resume, fastforward.start_decode_run

    def counting_init(self, *a):
        built[0] += 1
        init(self, *a)

    def counting_resume(self):
        resumed.append(resume(self))
        return resumed[-1]

    def noting_start(sched):
        run = start(sched)
        if run is not None and run is sched._kept_run and len(run.tracker.new_blocks(
                run.step, MIN_STEPS, sched.kv.free_blocks())) < MIN_STEPS:
            short[0] += 1                   # (its first steps' blocks not free: fast_forward must start nothing)
        return run

    monkeypatch.setattr(decode_run.DecodeRun, "__init__", counting_init)
    monkeypatch.setattr(decode_run.DecodeRun, "resume", counting_resume)
    monkeypatch.setattr(fastforward, "start_decode_run", noting_start)
    sc = PLAIN[name]
    res = SimEngine(setup_run(sc)).run()
    monkeypatch.undo()
    assert built[0] == 1, built             # the first run only
    assert len(resumed) >= sc.workload.num_requests and all(resumed)     # (at least one per admitted request)
    if name == "paged_high_rate":
        assert short[0] > 0                 # the short first segment really came (past capacity: memory runs out)
    assert_same_runs(res, simulate(sc, fast_forward=False))
