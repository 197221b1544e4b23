"""A decode run taken up again after stepped iterations (``DecodeRun.resume``: its first groups the same steps on,
its last ones gone, new ones admitted or swapped in behind them) gives the same records as starting every run
afresh and as stepping.

The scenarios are :mod:`tests.test_fastforward`'s paged ones (vLLM-style scheduler; chunked prefill; n = 2 and 4
with swapping and recompute) plus swap preemption, and its Orca ones (contiguous reservations); each must
really resume runs, and the per-request and per-iteration records and the summary must be exactly equal three
ways (runs kept, runs afresh, no fast-forward). After every resume the kept run's state (context aggregates,
finishing steps, the paged tracker's per-residue counts and members, memory aggregates and pending events, the
Orca tracker's sums and written slots) must equal, shifted by the run's step, that of a run started afresh at
that point.
"""
from __future__ import annotations

import pandas as pd
import pytest

from kvsim.build import setup_run
from kvsim.core import decode_preempt, decode_run
from kvsim.core.decode_tracker import ContiguousTracker
from kvsim.core.kv_paged_run import PagedDecodeTracker
from kvsim.sim import SimEngine, simulate
from tests.test_fastforward import CASES, scenario

KEPT = {name: CASES[name][0] for name in ("paged_vllm", "paged_high_rate", "paged_prefix_cache", "paged_max_time",
                                          "paged_chunked", "paged_n2_swap", "paged_n4_swapped_runs",
                                          "paged_n4_recompute")}
EXPECT = {"paged_chunked": {"caught_up"}, "paged_n4_swapped_runs": {"caught_up", "dropped", "readded"},
          "paged_high_rate": {"caught_up", "dropped", "dropped_inside"},
          "paged_n4_recompute": {"caught_up", "dropped"}}
KEPT["paged_swap"] = scenario(engine={"preemption_mode": "swap"}, workload={"rate_req_s": 4.0})
# Orca's contiguous reservations (ContiguousTracker: its running sums and each sequence's written slots at step 0)
KEPT.update({name: CASES[name][0] for name in ("orca_oracle_vllm", "orca_oracle_chunked", "orca_high_rate",
                                               "orca_n3", "orca_max_time")})
EXPECT["orca_high_rate"] = {"caught_up"}


def _run(sc, monkeypatch, keep: bool):
    monkeypatch.setattr(decode_run, "KEEP_RUNS", keep)
    resumed, kinds = [], set()
    orig = decode_run.DecodeRun.resume

    def counting(self):
        before, j = list(self._groups), self.step
        drops = [0]
        drop = self.tracker.drop

        def counted(g, step):
            drops[0] += 1
            drop(g, step)

        self.tracker.drop = counted
        try:
            ok = orig(self)
        finally:
            del self.tracker.drop
        resumed.append(ok)
        if ok:
            _check_same_as_fresh(self)
            kinds.add("ok")
            k = next((i for i, (a, b) in enumerate(zip(before, self._groups)) if a is not b), len(before))
            if self.step > j:
                kinds.add("caught_up")
            if k < len(before):
                kinds.add("dropped")
                gone = [g for g in before if all(g is not h for h in self._groups)]
                if drops[0] == len(gone) and any(g is before[-1] for g in self._groups):
                    kinds.add("dropped_inside")     # gone from the middle, only they dropped: the later ones kept
                if any(g is h for g in before[k:] for h in self._groups[k:]):
                    kinds.add("readded")
        return ok

    monkeypatch.setattr(decode_run.DecodeRun, "resume", counting)
    eng = SimEngine(setup_run(sc))
    return eng.run(), sum(resumed), kinds


def _check_same_as_fresh(run):
    j, t = run.step, run.tracker
    fresh_t = type(t)(run.sched.kv, run.sched.running)
    fresh = decode_run.DecodeRun(run.sched, fresh_t)
    assert (run.ctx_sum, run.num_seqs, run.num_groups) == (fresh.ctx_sum, fresh.num_seqs, fresh.num_groups)
    assert [b + j for b in run._base] == fresh._base
    assert {f - j: [g.group_id for g in gs] for f, gs in run._done_at.items()} == \
        {f: [g.group_id for g in gs] for f, gs in fresh._done_at.items()}
    assert run._finish_steps == sorted(run._done_at) and run._groups == run.sched.running
    assert [f - j for f in run._fins] == fresh._fins
    if type(t) is ContiguousTracker:
        assert t.groups == fresh_t.groups and t._num_seqs == fresh_t._num_seqs
        assert {sid: w0 + j for sid, w0 in t._w0.items()} == fresh_t._w0
        assert t._sums == fresh_t._sums or fresh_t._sums is None
        return
    assert type(t) is PagedDecodeTracker
    bs = t.bs
    assert [t._cnt[(c + j) % bs] for c in range(bs)] == fresh_t._cnt
    assert [t._members[(c + j) % bs] for c in range(bs)] == fresh_t._members
    assert (t.seq_ids, t.logical, t.internal) == (fresh_t.seq_ids, fresh_t.logical, fresh_t.internal)
    assert {sid: n0 + j for sid, n0 in t._n0.items()} == fresh_t._n0
    pending = t._ev_steps[t._ev_next:]
    assert pending == sorted(t._ev) and all(s >= j for s in pending)
    assert {s - j: v for s, v in t._ev.items() if v} == fresh_t._ev


@pytest.mark.parametrize("from_run", [False, True])
@pytest.mark.parametrize("name", sorted(KEPT))
def test_kept_runs_equal_fresh_runs_and_stepping(name, from_run, monkeypatch):
    """``from_run``: steps that preempt or swap in taken from the kept run (:mod:`kvsim.run_step`), which then
    seldom needs catching up or dropping groups (the kinds of resume expected are those with the steps scheduled)."""
    monkeypatch.setattr(decode_preempt, "ENABLED", from_run)
    sc = KEPT[name]
    kept, n_resumed, kinds = _run(sc, monkeypatch, True)
    fresh, n_fresh, _ = _run(sc, monkeypatch, False)
    assert n_resumed > 0 and n_fresh == 0        # the path under test really ran (and only there)
    if not from_run:
        assert kinds >= EXPECT.get(name, {"ok"}), kinds
    step = simulate(sc, fast_forward=False)
    for other in (fresh, step):
        pd.testing.assert_frame_equal(kept.requests, other.requests, check_exact=True)
        pd.testing.assert_frame_equal(kept.iterations, other.iterations, check_exact=True)
        assert kept.end_s == other.end_s
        assert kept.summary == other.summary


def test_resume_refuses_groups_moved_unevenly(monkeypatch):
    """A run is not taken up where one of its groups took a step the others did not (its tokens or its block
    tables' slots): resume returns False and leaves the run as it was. (The scheduler never does this, so the
    scenarios above cannot show the check matters; this moves a group by hand before resuming, as a step the
    scheduler counts among those that touched KV: ``kv_steps``, which sends resume to its group-by-group checks;
    with no such step counted it takes the run up without them, which the test above checks against fresh runs.)"""
    orig = decode_run.DecodeRun.resume
    refused = []

    def moving(self):
        running = self.sched.running
        if len(self._groups) >= 2 and len(running) >= 2 and running[1] is self._groups[1] and len(refused) < 20:
            g, ntok = running[1], self.sched.kv.bm.num_tokens
            state = (self.step, self.ctx_sum, self.num_seqs, list(self._groups), list(self._base),
                     self.tracker.logical, self.tracker.internal, list(self.tracker._cnt), dict(self.tracker._n0))
            for field in ("generated", "num_tokens"):
                for s in g.seqs:
                    if field == "generated":
                        s.generated += 1
                    else:
                        ntok[s.seq_id] += 1
                self.sched.kv_steps += 1
                refused.append(orig(self))
                self.sched.kv_steps -= 1
                for s in g.seqs:
                    if field == "generated":
                        s.generated -= 1
                    else:
                        ntok[s.seq_id] -= 1
                assert state == (self.step, self.ctx_sum, self.num_seqs, list(self._groups), list(self._base),
                                 self.tracker.logical, self.tracker.internal, list(self.tracker._cnt),
                                 dict(self.tracker._n0))
        return orig(self)

    monkeypatch.setattr(decode_run.DecodeRun, "resume", moving)
    SimEngine(setup_run(KEPT["paged_vllm"])).run()
    assert len(refused) == 20 and not any(refused)


SHORT_OF_MEMORY = {name: CASES[name][0] for name in ("paged_n4_swapped_runs", "paged_n4_recompute", "paged_high_rate")}
# closed loop: a run stops at each finish (the request it lets in joins then), and often starts again at once
SHORT_OF_MEMORY["closed_loop_n4"] = scenario(engine={"num_gpu_blocks": 600, "num_cpu_blocks": 3000},
                                             workload={"n": 4, "rate_req_s": 3.0, "num_requests": 120,
                                                       "max_concurrency": 12})


@pytest.mark.parametrize("name", sorted(SHORT_OF_MEMORY))
def test_a_run_cut_short_of_memory_would_not_start_again(name):
    """After a run that ends where the free blocks run out, the engine skips its next fast-forward try
    (``ff_blocked``): at each skip, the try would indeed have found no run; and the records still equal
    stepping's."""
    from kvsim import fastforward

    class Checking(SimEngine):
        skipped = 0

        @property
        def ff_blocked(self):
            if self._blocked:
                assert fastforward.fast_forward(self) is None, "a skipped try would have started a run"
                Checking.skipped += 1
            return self._blocked

        @ff_blocked.setter
        def ff_blocked(self, value):
            self._blocked = value

    sc = SHORT_OF_MEMORY[name]
    res = Checking(setup_run(sc)).run()
    assert Checking.skipped > 0                     # the skip really happened
    step = simulate(sc, fast_forward=False)
    pd.testing.assert_frame_equal(res.requests, step.requests, check_exact=True)
    pd.testing.assert_frame_equal(res.iterations, step.iterations, check_exact=True)
    assert res.summary == step.summary


def test_resume_rereads_groups_where_one_left_and_came_back(monkeypatch):
    """Where groups left the run (preempted: ``tail_steps``) and one of them came back (``joins``) before the run
    was taken up again, the run's groups are read one by one, even where the running ones are a start of the
    run's own: the one that came back may stand anywhere (here it moved a token by hand, as a recompute would
    leave it) and the run must refuse it. Set up by hand: the scheduler rarely re-admits a group before the
    next resume."""
    orig = decode_run.DecodeRun.resume
    refused = []

    def leave_and_return(self):
        sched, old = self.sched, self._groups
        if len(old) >= 4 and sched.running == old and len(refused) < 20:
            keep, back = old[:-2], old[-2]
            state = (self.step, self.ctx_sum, list(self._groups), self.tracker.logical, dict(self.tracker._n0))
            saved = list(sched.running)
            sched.running = keep + [back]
            sched.tail_steps += 1
            sched.joins += 1
            for s in back.seqs:
                s.generated += 1
                sched.kv.bm.num_tokens[s.seq_id] += 1
            refused.append(orig(self))
            for s in back.seqs:
                s.generated -= 1
                sched.kv.bm.num_tokens[s.seq_id] -= 1
            sched.running = saved
            sched.tail_steps -= 1
            sched.joins -= 1
            assert state == (self.step, self.ctx_sum, list(self._groups), self.tracker.logical,
                             dict(self.tracker._n0))
        return orig(self)

    monkeypatch.setattr(decode_run.DecodeRun, "resume", leave_and_return)
    SimEngine(setup_run(KEPT["paged_high_rate"])).run()
    assert refused and not any(refused)
