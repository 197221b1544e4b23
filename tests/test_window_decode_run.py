"""Decode runs over KV groups (:mod:`kvsim.core.kv_window_run`) against stepping, in core (no clock, no cost).

Random single-sequence workloads under tight memory, random windows, block sizes
and group layouts, policies v0 (vllm, chunked) and v1. Before every step the
scheduler is copied and, where a decode run starts, its first segment is applied
to the copy and checked against stepping a second copy the same number of steps:

* stepping that far neither preempts nor admits (the run ends before either);
* the segment's memory rows (``blocks_in_use`` and the memory split after each
  step) equal what the stepped manager reports;
* after the segment both managers are in the same state: the same page tables
  (same page ids: the free list is used in stepping's order), skips, lengths,
  free list and window-free count, and the invariants hold (no page leaked,
  window pages freed exactly once).
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvsim.core.decode_run import start_decode_run
from kvsim.core.kv_groups import KVGroupLayout
from kvsim.core.kv_window import WindowedPagedKV
from kvsim.core.kv_window_v1 import WindowedPagedKVV1
from kvsim.core.request import RequestSpec
from kvsim.core.scheduler import Scheduler, SchedulerConfig
from kvsim.core.scheduler_v1 import SchedulerV1
from tests.test_scheduler import SETTINGS

MAX_TICKS = 3000


def _state(kv):
    return kv.tables, kv.skips, kv.num_tokens, kv._free, kv.window_frees, kv.num_allocated


def _check_segment(sched, t: float) -> int:
    """Apply the first segment of a decode run from ``sched`` to a copy and compare with stepping; its steps."""
    ff = copy.deepcopy(sched)
    run = start_decode_run(ff)
    if run is None:
        return 0
    seg = run.next_segment()
    if seg.steps == 0:
        return 0
    blocks, mem = run.memory(seg, seg.steps).expand(seg.steps, seg.num_seqs)
    step = copy.deepcopy(sched)
    for i in range(seg.steps):
        waiting = len(step.waiting)
        plan = step.schedule(t)
        assert not plan.preempted and not plan.prefill_group_ids and len(step.waiting) == waiting, (i, seg)
        assert step.kv.blocks_in_use() == blocks[i]
        got = step.kv.memory_split(step.running)
        assert got == type(got)(*(int(v[i]) for v in mem.values())), i
        step.complete_step(plan, t)
    run.apply(seg, seg.steps, t)
    assert _state(ff.kv) == _state(step.kv)
    assert [g.group_id for g in ff.running] == [g.group_id for g in step.running]
    assert [g.generated for g in ff.running] == [g.generated for g in step.running]
    ff.kv.check_invariants()
    return seg.steps


@st.composite
def setups(draw):
    w = draw(st.integers(1, 40))
    windows = draw(st.sampled_from([(w,), (w, 0), (0, w, w), (w, 0, 0)])) * 2
    layout = KVGroupLayout.from_windows(windows)
    bs = draw(st.sampled_from([1, 2, 4, 8]))
    pages = max(2, draw(st.integers(40, 160)) * layout.num_groups // bs)
    specs, t = [], 0.0
    for i in range(draw(st.integers(1, 10))):
        t += draw(st.sampled_from([0.0, 0.01, 0.05, 0.2]))
        specs.append(RequestSpec(i, round(t, 2), draw(st.integers(1, 40)), draw(st.integers(2, 50))))
    return layout, bs, pages, specs


@pytest.mark.parametrize("policy", ["vllm", "chunked", "v1"])
@settings(max_examples=40, **SETTINGS)
@given(setup=setups(), data=st.data())
def test_window_decode_segments_equal_stepping(policy, setup, data):
    layout, bs, pages, specs = setup
    cfg = SchedulerConfig(max_num_seqs=data.draw(st.integers(2, 8)), max_num_batched_tokens=96, max_model_len=96,
                          policy="chunked" if policy == "v1" else policy, preemption_mode="recompute")
    if policy == "v1":
        sched = SchedulerV1(WindowedPagedKVV1(layout, pages, bs), cfg, np.random.default_rng(0))
    else:
        kv = WindowedPagedKV(layout, pages, bs, watermark=data.draw(st.sampled_from([0.0, 0.05])))
        sched = Scheduler(kv, cfg, np.random.default_rng(0))
    pending = sorted(specs, key=lambda s: (s.arrival_s, s.request_id))
    for tick in range(MAX_TICKS):
        t = tick / 100
        while pending and pending[0].arrival_s <= t:
            sched.add_request(pending.pop(0))
        if not sched.has_unfinished:
            if not pending:
                break
            continue
        _check_segment(sched, t)
        plan = sched.schedule(t)
        sched.complete_step(plan, t)
    else:
        pytest.fail("not finished")
    sched.kv.check_empty()
