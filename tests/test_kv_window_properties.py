"""Property tests for KV groups with sliding windows (kvsim.core.kv_window over kvsim.core.kv_groups).

Random single-sequence workloads run under the v0 scheduler (every policy and
preemption mode) on a :class:`WindowedPagedKV` with random windows, block sizes
and group layouts, under tight memory. Checked, besides the scheduler
properties of ``test_scheduler`` (``kv.check_invariants`` after every step):

* no block is leaked: after all requests finish every page is free;
* window blocks are freed exactly once (``_release`` asserts the page was held;
  each freed page is counted once and its table entry becomes -1);
* pages in use never exceed the pool, and a sequence's held pages per group
  match ``held_blocks`` once it decodes;
* with a window at least the longest context, the window model allocates exactly
  what a full-attention (one-group) model allocates, step by step;
* the same under policy v1 (``WindowedPagedKVV1`` with ``test_scheduler_v1``'s
  checks), where a chunked prefill already frees blocks behind its window.
"""
from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvsim.core.kv_groups import KVGroupLayout, held_blocks, skipped
from kvsim.core.kv_window import WindowedPagedKV
from kvsim.core.kv_window_v1 import WindowedPagedKVV1
from kvsim.core.request import RequestSpec
from kvsim.core.scheduler import Scheduler, SchedulerConfig
from kvsim.core.scheduler_v1 import SchedulerV1
from tests import test_scheduler_v1 as v1t
from tests.test_scheduler import SETTINGS, check_final, drive


@st.composite
def plain_workloads(draw, max_requests=10):
    specs, t = [], 0.0
    for i in range(draw(st.integers(1, max_requests))):
        t += draw(st.sampled_from([0.0, 0.0, 0.01, 0.03, 0.1]))
        specs.append(RequestSpec(i, round(t, 2), draw(st.integers(1, 28)), draw(st.integers(1, 36))))
    return specs


def layouts(draw, max_window=40):
    w = draw(st.integers(1, max_window))
    pattern = draw(st.sampled_from([(w,), (w, 0), (w, w, 0), (0, w, w, w, w, w), (w, 0, 0)]))
    return KVGroupLayout.from_windows(pattern * 2)


class CountingKV(WindowedPagedKV):
    """Records every page freed because it left a window (to check each is freed once per taking)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.freed_log: list[int] = []
        self.taken = 0

    def _take(self):
        self.taken += 1
        return super()._take()

    def _grow(self, seq_id, n, free_window):
        before = [list(t) for t in self.tables[seq_id]]
        super()._grow(seq_id, n, free_window)
        for old, new in zip(before, self.tables[seq_id]):
            self.freed_log.extend(b for b, c in zip(old, new) if b >= 0 and c < 0)
        assert self.num_allocated <= self.num_gpu_blocks


@pytest.mark.parametrize("mode", ["auto", "recompute"])
@pytest.mark.parametrize("policy", ["vllm", "chunked", "static"])
@settings(max_examples=60, **SETTINGS)
@given(data=st.data())
def test_window_scheduler_properties(policy, mode, data):
    layout = layouts(data.draw)
    bs = data.draw(st.sampled_from([1, 2, 4, 8]))
    pages = max(2, data.draw(st.integers(64, 200)) * layout.num_groups // bs)
    kv = CountingKV(layout, pages, bs, watermark=data.draw(st.sampled_from([0.0, 0.01, 0.1])))
    specs = data.draw(plain_workloads())
    tokens = [8, 16, 64] if policy == "chunked" else [32, 64, 128]
    cfg = SchedulerConfig(max_num_seqs=data.draw(st.integers(4, 16)),
                          max_num_batched_tokens=data.draw(st.sampled_from(tokens)),
                          max_model_len=64, policy=policy, preemption_mode=mode)
    sched = Scheduler(kv, cfg, np.random.default_rng(0))
    drive(sched, specs)
    check_final(sched, specs)                 # every page free again: nothing leaked
    assert kv.window_frees == len(kv.freed_log)
    # a page is freed by a window at most once per time it was taken
    assert len(kv.freed_log) <= kv.taken


@settings(max_examples=200, **SETTINGS)
@given(w=st.integers(1, 40), bs=st.sampled_from([1, 2, 3, 4, 8, 16]), prompt=st.integers(1, 40),
       out=st.integers(1, 60))
def test_decode_holds_the_window_blocks(w, bs, prompt, out):
    layout = KVGroupLayout.from_windows((w, 0))
    kv = WindowedPagedKV(layout, 10_000, bs, watermark=0.0)
    g = Scheduler(kv, SchedulerConfig(max_model_len=200), np.random.default_rng(0))
    spec = RequestSpec(0, 0.0, prompt, out + 1)
    g.add_request(spec)
    grp = g.waiting[0]
    kv.admit(grp)
    assert kv.blocks_in_use() == 2 * -(-prompt // bs)
    peak = kv.peak_blocks(grp)
    freed = 0
    for n in range(prompt + 1, prompt + out + 1):
        need = kv.append_need(grp)
        free0 = kv.free_blocks()
        kv.append(grp)
        assert free0 - kv.free_blocks() <= need
        win, full = kv.group_tables(grp.seq_ids[0])
        assert len(win) - win.count(-1) == held_blocks(n, w, bs)
        assert win.count(-1) == skipped(n, w, bs) and -1 not in full
        assert kv.blocks_in_use() <= peak
        freed = kv.window_frees
        kv.check_invariants()
    assert freed == skipped(prompt + out, w, bs)
    kv.free_group(grp)
    kv.check_empty()


@pytest.mark.parametrize("policy", ["v0", "v1"])
@settings(max_examples=40, **SETTINGS)
@given(data=st.data())
def test_window_past_every_context_equals_full_attention(policy, data):
    specs = data.draw(plain_workloads())
    bs = data.draw(st.sampled_from([1, 2, 4]))
    big = max(s.prompt_len + s.output_len for s in specs)
    runs = []
    for windows in ((big,) * 4, (0,) * 4):
        cfg = SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=64 if policy == "v0" else 16, max_model_len=64)
        layout, pages = KVGroupLayout.from_windows(windows), max(2, 120 // bs)
        if policy == "v0":
            kv = WindowedPagedKV(layout, pages, bs, watermark=0.0)
            sched = Scheduler(kv, cfg, np.random.default_rng(0))
        else:
            kv = WindowedPagedKVV1(layout, pages, bs)
            sched = SchedulerV1(kv, cfg, np.random.default_rng(0))
        trace = []
        orig = sched.complete_step

        def step(plan, t, orig=orig, kv=kv, trace=trace, sched=sched):
            trace.append((kv.blocks_in_use(), kv.memory_split(sched.running).values(), list(plan.decode_group_ids),
                          list(plan.preempted)))
            return orig(plan, t)
        sched.complete_step = step
        if policy == "v0":
            drive(sched, specs)
            check_final(sched, specs)
        else:
            with mock.patch.object(v1t, "check_sharing", _disjoint_tables):
                v1t.drive(sched, specs)
            v1t.check_final(sched, specs)
        assert kv.window_frees == 0
        runs.append(trace)
    assert runs[0] == runs[1]


# ------------------------------------------------------------------- policy v1
def _disjoint_tables(sched) -> None:
    """KV groups share nothing: every held page sits in exactly one table entry (check_invariants too)."""
    kv = sched.kv
    live = [b for t in kv.tables.values() for table in t for b in table if b >= 0]
    assert len(live) == len(set(live)) == kv.blocks_in_use()


@settings(max_examples=100, **SETTINGS)
@given(data=st.data())
def test_window_v1_scheduler_properties(data):
    layout = layouts(data.draw)
    bs = data.draw(st.sampled_from([1, 2, 4, 8]))
    kv = WindowedPagedKVV1(layout, max(2, data.draw(st.integers(48, 200)) * layout.num_groups // bs), bs)
    seqs = data.draw(st.integers(2, 12))
    cfg = SchedulerConfig(max_num_seqs=seqs, max_num_batched_tokens=max(seqs, data.draw(st.sampled_from([8, 16, 64]))),
                          max_model_len=64, policy="vllm", preemption_mode="recompute")
    sched = SchedulerV1(kv, cfg, np.random.default_rng(0))
    specs = [RequestSpec(s.request_id, s.arrival_s, s.prompt_len, s.output_len, n=data.draw(st.sampled_from([1, 1, 2])))
             for s in data.draw(plain_workloads(8))]
    with mock.patch.object(v1t, "check_sharing", _disjoint_tables):
        v1t.drive(sched, specs)
    v1t.check_final(sched, specs)             # every page free again: nothing leaked


def test_v1_chunked_prefill_holds_about_a_window():
    w, bs = 8, 4
    kv = WindowedPagedKVV1(KVGroupLayout.from_windows((w,)), 100, bs)
    sched = SchedulerV1(kv, SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=4, max_model_len=200),
                        np.random.default_rng(0))
    sched.add_request(RequestSpec(0, 0.0, 60, 2))
    t, peak = 0.0, 0
    while sched.has_unfinished:
        plan = sched.schedule(t)
        peak = max(peak, kv.blocks_in_use())
        t += 0.01
        sched.complete_step(plan, t)
    assert peak <= -(-w // bs) + 2          # never the prompt's 15 blocks
    kv.check_empty()


def test_v1_late_recompute_that_no_chunk_can_hold_is_rejected_not_waited_for():
    """Under V1 a request preempted late comes back as one prefill of its prompt and output so far; with a sliding
    window its life fits the GPU (``never_fits``) but that one chunk may not, even with every page free. The V1
    scheduler waited for it forever (hypothesis found it: 52 pages of 1 token, window 29, a 39-token prompt
    preempted after ~14 tokens); it is now rejected with a reason, as the V0 scheduler rejects a re-prefill that
    can never fit, and a decode run does not take such a head for blocked."""
    layout = KVGroupLayout(windows=(29,), layers_per_page=2, layer_group=(0, 0), layer_slot=(0, 1))
    specs = [RequestSpec(0, 0.0, 6, 19), RequestSpec(1, 0.0, 39, 48), RequestSpec(2, 0.0, 16, 2)] + \
        [RequestSpec(i, 0.0, 1, 2) for i in range(3, 9)]
    cfg = SchedulerConfig(max_num_seqs=2, max_num_batched_tokens=96, max_model_len=96, policy="chunked",
                          preemption_mode="recompute")
    sched = SchedulerV1(WindowedPagedKVV1(layout, 52, 1), cfg, np.random.default_rng(0))
    for s in specs:
        sched.add_request(s)
    seen_head = False
    for tick in range(500):
        if not sched.has_unfinished:
            break
        if sched.waiting and sched.waiting[0].group_id == 1 and sched.waiting[0].num_recomputes:
            head = sched.waiting[0]
            if sched.kv.chunk_never_fits(head, min(head.prefill_target, 96)) is not None:
                seen_head = True
                assert not sched.admission_stays_blocked(0)
        plan = sched.schedule(tick / 100)
        sched.complete_step(plan, tick / 100)
    assert not sched.has_unfinished and seen_head
    rejected = {g.group_id: g.reject_reason for g in sched.rejected}
    assert list(rejected) == [1] and "prefill chunk" in rejected[1] and "52 pages" in rejected[1]
    assert sorted(g.group_id for g in sched.finished) == [0, 2, 3, 4, 5, 6, 7, 8]
    assert sched.kv.free_blocks() == 52
