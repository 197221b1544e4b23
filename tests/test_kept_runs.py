"""A decode run taken up again after a stepped iteration (``DecodeRun.resume``: its groups unchanged, new ones
admitted behind them) gives the same records as starting every run afresh and as stepping.

The scenarios are :mod:`tests.test_fastforward`'s single-sequence paged ones plus swap preemption; each must
really resume runs, and the per-request and per-iteration records and the summary must be exactly equal three
ways (runs kept, runs afresh, no fast-forward). After every resume the kept run's state (context aggregates,
finishing steps, the paged tracker's per-residue counts and members, memory aggregates and pending events) must
equal, shifted by the run's step, that of a run started afresh at that point.
"""
from __future__ import annotations

import pandas as pd
import pytest

from kvsim.build import setup_run
from kvsim.core import decode_run
from kvsim.core.kv_paged_run import PagedDecodeTracker
from kvsim.sim import SimEngine, simulate
from tests.test_fastforward import CASES, scenario

KEPT = {name: CASES[name][0] for name in ("paged_vllm", "paged_high_rate", "paged_prefix_cache", "paged_max_time")}
KEPT["paged_swap"] = scenario(engine={"preemption_mode": "swap"}, workload={"rate_req_s": 4.0})


def _run(sc, monkeypatch, keep: bool):
    monkeypatch.setattr(decode_run, "KEEP_RUNS", keep)
    resumed = []
    orig = decode_run.DecodeRun.resume

    def counting(self):
        ok = orig(self)
        resumed.append(ok)
        if ok:
            _check_same_as_fresh(self)
        return ok

    monkeypatch.setattr(decode_run.DecodeRun, "resume", counting)
    eng = SimEngine(setup_run(sc))
    return eng.run(), sum(resumed)


def _check_same_as_fresh(run):
    j, t = run.step, run.tracker
    fresh_t = PagedDecodeTracker(run.sched.kv, run.sched.running)
    fresh = decode_run.DecodeRun(run.sched, fresh_t)
    assert (run.ctx_sum, run.num_seqs, run.num_groups) == (fresh.ctx_sum, fresh.num_seqs, fresh.num_groups)
    assert [b + j for b in run._base] == fresh._base
    assert {f - j: [g.group_id for g in gs] for f, gs in run._done_at.items()} == \
        {f: [g.group_id for g in gs] for f, gs in fresh._done_at.items()}
    assert run._finish_steps == sorted(run._done_at) and run._groups == run.sched.running
    assert [f - j for f in run._fins] == fresh._fins
    bs = t.bs
    assert [t._cnt[(c + j) % bs] for c in range(bs)] == fresh_t._cnt
    assert [t._members[(c + j) % bs] for c in range(bs)] == fresh_t._members
    assert (t.seq_ids, t.logical, t.internal) == (fresh_t.seq_ids, fresh_t.logical, fresh_t.internal)
    assert {sid: n0 + j for sid, n0 in t._n0.items()} == fresh_t._n0
    pending = t._ev_steps[t._ev_next:]
    assert pending == sorted(t._ev) and all(s >= j for s in pending)
    assert {s - j: v for s, v in t._ev.items() if v} == fresh_t._ev


@pytest.mark.parametrize("name", sorted(KEPT))
def test_kept_runs_equal_fresh_runs_and_stepping(name, monkeypatch):
    sc = KEPT[name]
    kept, n_resumed = _run(sc, monkeypatch, True)
    fresh, n_fresh = _run(sc, monkeypatch, False)
    assert n_resumed > 0 and n_fresh == 0        # the path under test really ran (and only there)
    step = simulate(sc, fast_forward=False)
    for other in (fresh, step):
        pd.testing.assert_frame_equal(kept.requests, other.requests, check_exact=True)
        pd.testing.assert_frame_equal(kept.iterations, other.iterations, check_exact=True)
        assert kept.end_s == other.end_s
        assert kept.summary == other.summary
