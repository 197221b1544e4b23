"""Property tests for kvsim.core.scheduler.Scheduler over PagedKV and ContiguousKV.

Small random workloads (random n / beam width / shared prefix) run under tight
memory so that preemption happens, for every policy (vllm, chunked, static) and
preemption mode (auto, swap, recompute). The driver is a fake clock: ``t +=
0.01``, requests are added once ``arrival_s <= t``, then ``schedule(t)`` and
``complete_step(plan, t)``. Checked after every step and at the end:

* ``kv.check_invariants()`` after every schedule and every complete_step;
* a plan only decodes/prefills RUNNING groups whose KV is on the GPU, and each
  decoding sequence holds exactly ``prompt + generated`` KV slots;
* preemption victims are, in order, the latest-arrived of the groups running at
  that moment, and all of a victim's sequences leave the GPU together;
* every request ends FINISHED (each sequence generated exactly ``output_len``
  tokens) or REJECTED (with a reason), and then all KV memory is free;
* the same seed gives the same plans.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kvsim.core.kv_contiguous import ContiguousKV
from kvsim.core.kv_paged import PagedKV
from kvsim.core.request import RequestSpec
from kvsim.core.scheduler import Scheduler, SchedulerConfig
from kvsim.core.sequence import GroupStatus

MAX_ITERS = 20000
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ------------------------------------------------------------------ driver
def on_gpu(kv, seq_id: int) -> bool:
    return (kv.locate(seq_id) or ("",))[0] == "gpu"


def on_cpu(kv, seq_id: int) -> bool:
    return (kv.locate(seq_id) or ("",))[0] == "cpu"


def kv_len(kv, seq_id: int) -> int:
    where, n = kv.locate(seq_id)
    assert where == "gpu"
    return n


def check_plan(sched: Scheduler, plan, running_before: list[tuple[float, int]]) -> None:
    kv = sched.kv
    groups = sched.groups
    # preemption: all-or-nothing, latest-arrived among those still running
    remaining = list(running_before)
    preempted = set()
    for gid, mode in plan.preempted:
        assert mode in ("swap", "recompute")
        g = groups[gid]
        key = (g.arrival_s, gid)
        assert remaining and key == max(remaining), f"victim {gid} is not the latest-arrived running group"
        remaining.remove(key)
        preempted.add(gid)
        for s in g.seqs:
            assert not on_gpu(kv, s.seq_id), "a preempted group left a sequence on the GPU"
            assert on_cpu(kv, s.seq_id) == (mode == "swap")
        if mode == "swap":
            assert g.status is GroupStatus.SWAPPED and g in sched.swapped
        elif g.status is GroupStatus.WAITING:
            assert g in sched.waiting
            assert g.prefill_target == g.recompute_len() and g.prefill_done == 0
        else:   # re-admission judged it can never fit again (chunked admits in the same step)
            assert g.status is GroupStatus.REJECTED and g.reject_reason and sched.cfg.policy == "chunked"
    # decodes and prefills run only on running groups whose KV is on the GPU
    assert len(set(plan.decode_group_ids)) == len(plan.decode_group_ids)
    assert not preempted & set(plan.decode_group_ids)
    ctx = []
    static_done = sched._static_done if sched.cfg.policy == "static" else set()
    for gid in plan.decode_group_ids + plan.prefill_group_ids:
        g = groups[gid]
        assert g.status is GroupStatus.RUNNING, f"plan uses group {gid} in state {g.status}"
        assert g not in sched.swapped and g not in sched.waiting and g in sched.running
        for s in g.seqs:
            assert on_gpu(kv, s.seq_id)
    for gid in plan.decode_group_ids:
        g = groups[gid]
        assert not g.in_prefill
        for s in g.seqs:
            ctx.append(s.length)
            if gid not in static_done:
                assert kv_len(kv, s.seq_id) == s.length, "decoding sequence holds the wrong number of slots"
    assert ctx == plan.decode_context_tokens
    assert set(plan.prefill_group_ids).isdisjoint(plan.decode_group_ids)
    for gid, new in zip(plan.prefill_group_ids, plan.prefill_new_tokens):
        g = groups[gid]
        assert 0 < new <= g.prefill_target - g.prefill_done
    if sched.cfg.policy != "chunked":
        assert not (plan.prefill_group_ids and plan.decode_group_ids), "vllm/static steps never mix"
    else:
        # decodes are not budgeted (they may exceed it when max_num_seqs > the budget); prefill chunks are
        assert plan.num_prefill_tokens <= max(0, sched.cfg.max_num_batched_tokens - plan.num_decode_seqs)
    if sched.cfg.policy == "static":
        assert not plan.preempted
    assert sched.num_running_seqs() == sum(len(g.seqs) for g in sched.running) <= sched.cfg.max_num_seqs
    # group bookkeeping: each unfinished group is in exactly one queue matching its status
    for g in groups.values():
        where = [g in sched.waiting, g in sched.running, g in sched.swapped]
        if g.status in (GroupStatus.FINISHED, GroupStatus.REJECTED):
            assert not any(where)
        else:
            assert sum(where) == 1
            assert where[[GroupStatus.WAITING, GroupStatus.RUNNING, GroupStatus.SWAPPED].index(g.status)]


def drive(sched: Scheduler, specs: list[RequestSpec], record: bool = False):
    kv = sched.kv
    pending = sorted(specs, key=lambda s: (s.arrival_s, s.request_id))
    plans = []
    tick = 0
    t = 0.0       # fake clock: t advances by 0.01 per step (as tick / 100, so arrivals compare exactly)
    for _ in range(MAX_ITERS):
        while pending and pending[0].arrival_s <= t:
            sched.add_request(pending.pop(0))
        if not sched.has_unfinished:
            if not pending:
                break
            tick += 1
            t = tick / 100
            continue
        running_before = [(g.arrival_s, g.group_id) for g in sched.running]
        plan = sched.schedule(t)
        kv.check_invariants()
        check_plan(sched, plan, running_before)
        assert not plan.is_empty, "scheduler stalled with unfinished groups"
        if record:
            plans.append(plan)
        tick += 1
        t = tick / 100
        sched.complete_step(plan, t)
        kv.check_invariants()
    else:
        pytest.fail(f"not finished after {MAX_ITERS} iterations")
    return plans


def check_final(sched: Scheduler, specs: list[RequestSpec]) -> None:
    kv = sched.kv
    assert len(sched.groups) == len(specs)
    assert not sched.running and not sched.waiting and not sched.swapped
    for g in sched.groups.values():
        assert g.status in (GroupStatus.FINISHED, GroupStatus.REJECTED)
        if g.status is GroupStatus.REJECTED:
            assert g.reject_reason
            assert g in sched.rejected
        else:
            assert g.reject_reason is None and g in sched.finished
            assert all(s.generated == g.spec.output_len for s in g.seqs)
            assert g.finish_s is not None and g.first_token_s is not None
            assert g.arrival_s <= g.first_scheduled_s <= g.first_token_s <= g.finish_s
    assert len(sched.finished) + len(sched.rejected) == len(specs)
    kv.check_empty()      # each allocator asserts it holds nothing (blocks, tables, swap, caches)


# --------------------------------------------------------------- workloads
@st.composite
def workloads(draw, max_requests=10):
    k = draw(st.integers(1, max_requests))
    specs = []
    t = 0.0
    for i in range(k):
        t += draw(st.sampled_from([0.0, 0.0, 0.0, 0.01, 0.03, 0.1]))
        prompt = draw(st.integers(1, 28))
        out = draw(st.integers(1, 36))
        kind = draw(st.sampled_from(["plain", "plain", "n", "beam"]))
        width = draw(st.integers(2, 4))
        n, beam = (width, 1) if kind == "n" else ((1, width) if kind == "beam" else (1, 1))
        prefix_id, prefix_len = -1, 0
        if draw(st.booleans()):
            prefix_id = draw(st.integers(0, 1))
            prefix_len = draw(st.integers(1, prompt))
        specs.append(RequestSpec(i, round(t, 2), prompt, out, n=n, beam_width=beam,
                                 prefix_id=prefix_id, prefix_len=prefix_len))
    return specs


def make_paged(draw):
    bs = draw(st.sampled_from([1, 2, 4, 8]))
    capacity_tokens = draw(st.integers(64, 200))
    cpu = draw(st.sampled_from([0, 8, 64]))
    return PagedKV(max(2, capacity_tokens // bs), bs, num_cpu_blocks=cpu,
                   watermark=draw(st.sampled_from([0.0, 0.01, 0.1])),
                   enable_prefix_caching=draw(st.booleans()))


def make_contiguous(draw):
    cap = draw(st.integers(64, 600))
    placement = draw(st.sampled_from(["first_fit", "buddy"]))
    if placement == "buddy":
        cap = 1 << cap.bit_length()
    return ContiguousKV(cap, draw(st.sampled_from(["max", "pow2", "oracle"])), max_seq_len=64,
                        placement=placement, cpu_capacity_slots=draw(st.sampled_from([0, 100, 1000])))


def make_cfg(draw, policy, mode):
    tokens = [8, 16, 64] if policy == "chunked" else [32, 64, 128]
    return SchedulerConfig(max_num_seqs=draw(st.integers(4, 16)),
                           max_num_batched_tokens=draw(st.sampled_from(tokens)),
                           max_model_len=64, policy=policy, preemption_mode=mode)


def _run(kv, data, policy, mode):
    specs = data.draw(workloads())
    cfg = make_cfg(data.draw, policy, mode)
    sched = Scheduler(kv, cfg, np.random.default_rng(data.draw(st.integers(0, 3))))
    plans = drive(sched, specs, record=True)
    check_final(sched, specs)
    modes = {m for p in plans for _, m in p.preempted}
    for m in modes:
        event(f"preempt:{m}")
    if sched.rejected:
        event("rejected")
    if any(p.copy_pairs for p in plans):
        event("cow")
    if any(p.swap_in for p in plans):
        event("swap_in")
    if mode == "recompute":
        assert "swap" not in modes
    return sched, specs


@pytest.mark.parametrize("mode", ["auto", "swap", "recompute"])
@pytest.mark.parametrize("policy", ["vllm", "chunked", "static"])
@settings(max_examples=100, **SETTINGS)
@given(data=st.data())
def test_paged_scheduler_properties(policy, mode, data):
    kv = make_paged(data.draw)
    if mode == "swap" and kv.num_cpu_blocks == 0:
        kv = PagedKV(kv.num_gpu_blocks, kv.block_size, 16, 0.0, kv.enable_prefix_caching)
    _run(kv, data, policy, mode)


@pytest.mark.parametrize("mode", ["auto", "swap", "recompute"])
@pytest.mark.parametrize("policy", ["vllm", "chunked", "static"])
@settings(max_examples=25, **SETTINGS)
@given(data=st.data())
def test_contiguous_scheduler_properties(policy, mode, data):
    _run(make_contiguous(data.draw), data, policy, mode)


# ------------------------------------------------------------ constructed cases
def _burst(num, prompt, out, **kw):
    return [RequestSpec(i, 0.0, prompt, out, **kw) for i in range(num)]


@pytest.mark.parametrize("policy", ["vllm", "chunked"])
@pytest.mark.parametrize("kw", [dict(n=3), dict(beam_width=3)])
def test_swap_preemption_happens_for_multi_sequence_groups(policy, kw):
    kv = PagedKV(num_gpu_blocks=24, block_size=4, num_cpu_blocks=64, watermark=0.0)
    sched = Scheduler(kv, SchedulerConfig(max_num_seqs=32, max_num_batched_tokens=256, policy=policy,
                                          preemption_mode="auto"), np.random.default_rng(0))
    specs = _burst(4, 10, 20, **kw)
    plans = drive(sched, specs, record=True)
    check_final(sched, specs)
    assert all(g.status is GroupStatus.FINISHED for g in sched.groups.values())
    swaps = [(gid, m) for p in plans for gid, m in p.preempted if m == "swap"]
    assert swaps, "expected swap preemptions"
    assert all(m == "swap" for p in plans for _, m in p.preempted)   # auto: multi-seq groups swap
    assert sum(len(p.swap_out) for p in plans) > 0 and sum(len(p.swap_in) for p in plans) > 0
    assert sum(g.num_swaps for g in sched.groups.values()) == len(swaps)


def test_recompute_preemption_for_single_sequence_groups():
    kv = PagedKV(num_gpu_blocks=12, block_size=4, num_cpu_blocks=64, watermark=0.0)
    sched = Scheduler(kv, SchedulerConfig(max_num_seqs=32, policy="vllm", preemption_mode="auto"),
                      np.random.default_rng(0))
    specs = _burst(4, 10, 20)
    plans = drive(sched, specs, record=True)
    check_final(sched, specs)
    modes = [m for p in plans for _, m in p.preempted]
    assert modes and set(modes) == {"recompute"}
    assert not any(p.swap_out for p in plans)
    assert all(g.status is GroupStatus.FINISHED for g in sched.groups.values())


def test_swap_mode_falls_back_to_recompute_without_cpu_space():
    kv = PagedKV(num_gpu_blocks=24, block_size=4, num_cpu_blocks=0, watermark=0.0)
    sched = Scheduler(kv, SchedulerConfig(policy="vllm", preemption_mode="swap"), np.random.default_rng(0))
    specs = _burst(4, 10, 20, n=3)
    plans = drive(sched, specs, record=True)
    check_final(sched, specs)
    modes = [m for p in plans for _, m in p.preempted]
    assert modes and set(modes) == {"recompute"}


def test_request_that_never_fits_is_rejected_with_reason():
    kv = PagedKV(num_gpu_blocks=4, block_size=4, watermark=0.0)
    sched = Scheduler(kv, SchedulerConfig(policy="vllm"), np.random.default_rng(0))
    specs = [RequestSpec(0, 0.0, 30, 10), RequestSpec(1, 0.0, 5, 3), RequestSpec(2, 0.0, 4, 4, n=8)]
    drive(sched, specs)
    check_final(sched, specs)
    status = {g.group_id: g.status for g in sched.groups.values()}
    assert status == {0: GroupStatus.REJECTED, 1: GroupStatus.FINISHED, 2: GroupStatus.REJECTED}


def _plans_for(seed: int, policy: str):
    kv = PagedKV(num_gpu_blocks=40, block_size=4, num_cpu_blocks=64, watermark=0.0,
                 enable_prefix_caching=True)
    sched = Scheduler(kv, SchedulerConfig(max_num_seqs=16, policy=policy), np.random.default_rng(seed))
    specs = [RequestSpec(i, 0.02 * i, 9 + i, 12 + 2 * i, n=2 if i % 3 == 1 else 1,
                         beam_width=3 if i % 3 == 2 else 1, prefix_id=0, prefix_len=6) for i in range(8)]
    return drive(sched, specs, record=True)


@pytest.mark.parametrize("policy", ["vllm", "chunked", "static"])
def test_same_seed_same_plans(policy):
    a = _plans_for(3, policy)
    b = _plans_for(3, policy)
    assert len(a) == len(b) and a == b
    if policy != "static":
        assert any(p.preempted for p in a)
    # beam re-parenting draws from the rng: another seed changes the copy-on-write pattern
    c = _plans_for(4, policy)
    assert c != a


# ------------------------------------------------------------ batched appends
def _bm_state(bm) -> tuple:
    return (dict(bm.tables), dict(bm.num_tokens), list(bm.ref), list(bm.fill), list(bm._free),
            list(bm._evictable), bm.num_allocated, bm.used_slots)


@pytest.mark.parametrize("policy", ["vllm", "chunked"])
@settings(max_examples=60, **SETTINGS)
@given(data=st.data())
def test_batched_appends_equal_one_group_at_a_time(policy, data):
    """``PagedKV.append_needs`` / ``append_all`` (the decode step's batched calls) equal ``append_need`` /
    ``append`` group by group: the same needs, copy-on-write pairs and block-manager state, at every decode
    step of random workloads (forks, beams, prefix caching, preemption)."""
    import copy
    kv = make_paged(data.draw)
    calls = {"needs": 0, "all": 0}
    needs_of, append_all = kv.append_needs, kv.append_all

    def checked_needs(groups):
        got = needs_of(groups)
        assert got == [kv.append_need(g) for g in groups]
        calls["needs"] += 1
        return got

    def checked_all(groups):
        twin = copy.deepcopy(kv.bm)
        one_by_one = []
        for g in groups:
            one_by_one += twin.append_slots(g.seq_ids)
        got = append_all(groups)
        assert got == one_by_one and _bm_state(kv.bm) == _bm_state(twin)
        calls["all"] += 1
        return got

    kv.append_needs, kv.append_all = checked_needs, checked_all
    _run(kv, data, policy, "auto")
    event(f"batched needs: {min(calls['needs'], 1)}")
