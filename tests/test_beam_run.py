"""Beam decode runs (:mod:`kvsim.core.beam_run`, :mod:`kvsim.beam_forward`) equal stepping: the request and
iteration records and the summary of a run with them are exactly those of the same run stepped
(``fast_forward=False``), through the paths where a run stops (arrivals, finishes, admissions, preemption by swap
and by recompute, swapped groups coming back, prefix-cache evictions, the time limit), and the block manager's
state is consistent wherever a run ends."""
from __future__ import annotations

import numpy as np
import pytest

from kvsim.build import setup_run
from kvsim.core import beam_run
from kvsim.sim import SimEngine
from tests._scenarios import assert_same_runs, overridden

BASE = {"model": "opt-13b", "gpu": "a100-40gb", "engine": {"allocator": "paged", "block_size": 16},
        "workload": {"dataset": "sharegpt_like", "rate_req_s": 1.0, "num_requests": 150, "beam_width": 4},
        "seed": 3}

CASES = {
    "beam4": ({}, {}, {}),
    "beam2": ({}, {"beam_width": 2}, {}),
    "beam3_swap_pressure": ({"num_gpu_blocks": 500, "num_cpu_blocks": 3000}, {"beam_width": 3, "rate_req_s": 3.0},
                            {}),
    "beam4_recompute": ({"preemption_mode": "recompute", "num_gpu_blocks": 500}, {"rate_req_s": 3.0}, {}),
    "beam4_prefix_cache": ({"enable_prefix_caching": True, "num_gpu_blocks": 700},
                           {"prefix_len": 64, "num_prefixes": 2, "rate_req_s": 2.0}, {}),
    "beam4_block8": ({"block_size": 8}, {"rate_req_s": 2.0}, {}),
    "beam4_max_time": ({}, {"rate_req_s": 2.0}, {"max_time_s": 40.0}),
    "beam20_wide": ({}, {"beam_width": 20, "num_requests": 40, "rate_req_s": 0.5}, {}),   # parent codes past int64
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_beam_runs_match_stepping(name, monkeypatch):
    engine, workload, top = CASES[name]
    sc = overridden(BASE, engine, workload, **top)
    ends = []
    end = beam_run.BeamRun.end

    def checked_end(run, end_s):                    # the manager's invariants wherever a run hands back
        end(run, end_s)
        run.bm.check_invariants()
        ends.append(run.steps)

    monkeypatch.setattr(beam_run.BeamRun, "end", checked_end)
    eng = SimEngine(setup_run(sc), fast_forward=True)
    fast = eng.run()
    slow = SimEngine(setup_run(sc), fast_forward=False).run()
    assert_same_runs(fast, slow)
    assert eng.beam_steps == sum(ends) > len(fast.iterations) // 3      # many steps taken by runs
    assert fast.iterations.cow_copies.sum() > 0
    if name in ("beam3_swap_pressure", "beam4_recompute"):
        assert fast.summary["preemptions"] > 0
    eng.kv.check_invariants()


def test_no_beam_run_for_parallel_sampling():
    """Groups that sample independently (n > 1, no beams) are not taken by beam runs."""
    sc = overridden(BASE, None, {"beam_width": 1, "n": 4, "num_requests": 40})
    eng = SimEngine(setup_run(sc), fast_forward=True)
    eng.run()
    assert eng.beam_steps == 0



@pytest.mark.parametrize("widths", [(2, 4, 3), (1, 4)])
def test_mixed_widths_match_stepping(widths):
    """Requests of different beam widths (a trace may give each its own): runs of groups of several widths draw
    parents group by group (``many_codes``' fallback) and equal stepping; a group that does not search beams
    (width 1) keeps runs from starting while it runs (here, nearly always one does)."""
    import dataclasses

    def setup():
        s = setup_run(overridden(BASE, None, {"rate_req_s": 2.0, "num_requests": 90}))
        s.requests = [dataclasses.replace(r, beam_width=widths[i % len(widths)]) for i, r in enumerate(s.requests)]
        return s

    eng = SimEngine(setup(), fast_forward=True)
    fast = eng.run()
    slow = SimEngine(setup(), fast_forward=False).run()
    assert_same_runs(fast, slow)
    if 1 not in widths:
        assert eng.beam_steps > len(fast.iterations) // 3


@pytest.mark.parametrize("k", [2, 4, 16, 17, 32, 100])
def test_parent_codes_stand_for_the_same_parents_at_any_width(k):
    """A group's parents as one code and back equal ``many``'s from the same stream, also past int64 (k >= 17:
    k**k overflowed the vectorised code and gave other parents)."""
    from kvsim.core.beam import BeamParents, parents_of_code
    a, b = BeamParents(np.random.default_rng(3)), BeamParents(np.random.default_rng(3))
    for n in (1, 5, 3):
        codes, parents = a.many_codes([k] * n), b.many([k] * n)
        assert [parents_of_code(c, k) for c in codes] == parents


@pytest.mark.parametrize("rate", [1.0, 3.0])
def test_runs_taken_up_match_stepping(rate, monkeypatch):
    """Runs cut by arrivals, finishes and prompt-only steps are taken up again (``BeamRun.take_up``: finished
    groups leave, admitted ones join, the others not read again) and still equal stepping; the manager's state is
    consistent wherever one is taken up."""
    from kvsim.core import beam_groups
    taken = {"same": 0, "left": 0, "joined": 0}
    take_up = beam_groups.RunGroupsMixin.take_up

    def counted(run, running):
        left, n = bool(run.done), len(run.groups) - len(run.done)
        ok = take_up(run, running)
        if ok:
            run.bm.check_invariants()
            taken["left" if left else "same"] += 1
            taken["joined"] += len(running) > n
        return ok

    monkeypatch.setattr(beam_groups.RunGroupsMixin, "take_up", counted)
    sc = overridden(BASE, None, {"rate_req_s": rate, "num_requests": 120})
    fast = SimEngine(setup_run(sc), fast_forward=True).run()
    slow = SimEngine(setup_run(sc), fast_forward=False).run()
    assert_same_runs(fast, slow)
    assert min(taken.values()) > 0, taken


@pytest.mark.parametrize("name", ["beam4", "beam4_block8", "beam3_swap_pressure"])
def test_run_need_is_the_ref_counts_need(name, monkeypatch):
    """After every step of a run, the blocks it says the next step's appends take (``need``, from its
    re-parenting plans) and the beams whose last block they copy are those the block manager's ref counts give
    (``shared_last``; a block each where a group's sequences end on a full block): ``can_step`` reads ``need``,
    and a count off by one either takes a block the free list lacks or ends runs early, unseen in the records."""
    from kvsim.core.beam_groups import shared_last
    engine, workload, top = CASES[name]
    sc = overridden(BASE, engine, workload, **top)
    release = beam_run.BeamRun.release
    checked = []

    def checked_release(run):
        release(run)
        bs, need = run.bm.block_size, 0
        for tabs, n, js in zip(run.tabs, run.lens, run.copy_of):
            if n % bs:
                assert list(js) == shared_last(tabs, run.bm.ref)
                need += len(js)
            else:
                need += len(tabs)
        assert run.need == need
        checked.append(run.steps)

    monkeypatch.setattr(beam_run.BeamRun, "release", checked_release)
    SimEngine(setup_run(sc), fast_forward=True).run()
    assert len(checked) > 100
