"""Property tests for the vLLM V1 policy: kvsim.core.scheduler_v1 over kvsim.core.kv_paged_v1.

Random workloads (n > 1 fanned out into children, shared prefixes, prefix
caching on or off) run under tight memory with a fake clock. Checked after
every step:

* ``kv.check_invariants()`` after every schedule and complete_step;
* recompute-only preemption: every victim is preempted by recompute (no swap,
  no copy-on-write), is the most recently admitted running request not yet
  scheduled in the step (LIFO), leaves the GPU, restarts its prefill and goes
  back to the front of the waiting queue; a step that preempts admits nobody;
* decode rows are never starved by prefill chunks: every running request that
  was decoding and was not preempted decodes in the step, its decode is listed
  before any prefill chunk, and decodes plus chunks stay within the budget;
* children share exactly the cached prefix: two resident tables share only a
  common leading run of full prompt blocks, each cached under that position's
  chained hash; without prefix caching siblings share nothing;
* no block leaked at the end: every request ends FINISHED (each child with
  ``output_len`` tokens) or REJECTED and the KV manager holds nothing.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kvsim.core.fanout import ChildGroup, FanOut
from kvsim.core.kv_paged_v1 import PagedKVV1
from kvsim.core.request import RequestSpec
from kvsim.core.scheduler import SchedulerConfig
from kvsim.core.scheduler_v1 import SchedulerV1
from kvsim.core.sequence import GroupStatus

MAX_ITERS = 20000
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ------------------------------------------------------------------ checks
def check_sharing(sched: SchedulerV1) -> None:
    """Resident tables share only common leading full prompt blocks, cached under their hashes."""
    kv, bm, bs = sched.kv, sched.kv.bm, sched.kv.block_size
    groups = [g for g in sched.running]
    for a in groups:
        ta = bm.tables[a.seqs[0].seq_id]
        ha = kv._prompt_hashes(a) or []
        for i, b in enumerate(ta):
            if bm.ref[b] > 1:
                assert i < len(ha) and bm._hash_of.get(b) == ha[i], "a shared block is not a cached prompt block"
        for b_ in groups:
            if b_ is a:
                continue
            tb = bm.tables[b_.seqs[0].seq_id]
            k = 0
            while k < min(len(ta), len(tb)) and ta[k] == tb[k]:
                k += 1
            assert not set(ta[k:]) & set(tb), "tables share a block outside their common prefix"
            assert k * bs <= a.spec.prompt_len
            if not kv.enable_prefix_caching:
                assert k == 0, "without prefix caching nothing is shared"


def check_step(sched: SchedulerV1, plan, before: list, decoding: set[int], waiting_before: list) -> None:
    kv, cfg = sched.kv, sched.cfg
    groups = sched.groups
    assert not plan.swap_in and not plan.swap_out and not plan.copy_pairs
    victims = [gid for gid, _ in plan.preempted]
    assert all(mode == "recompute" for _, mode in plan.preempted)
    scheduled = set(plan.decode_group_ids) | set(plan.prefill_group_ids)
    idx = {gid: i for i, gid in enumerate(before)}
    assert [idx[v] for v in victims] == sorted((idx[v] for v in victims), reverse=True), "not LIFO"
    for v in victims:
        g = groups[v]
        assert v not in scheduled
        later = [gid for gid in before[idx[v] + 1:] if gid not in victims]
        assert all(gid in scheduled for gid in later), "a later-admitted request was left running instead"
        assert g.status is GroupStatus.WAITING and kv.locate(g.seqs[0].seq_id) is None
        assert g.prefill_target == g.recompute_len() and g.prefill_done == 0
    assert [g.group_id for g in list(sched.waiting)[:len(victims)]] == victims[::-1]
    if victims:
        assert set(plan.prefill_group_ids) <= set(before), "a step that preempts admits nobody"
    # decodes first, none starved
    assert decoding - set(victims) == set(plan.decode_group_ids)
    assert plan.decode_group_ids == [gid for gid in before if gid in set(plan.decode_group_ids)]
    assert plan.num_batched_tokens <= cfg.max_num_batched_tokens
    ctx = []
    for gid in plan.decode_group_ids:
        s = groups[gid].seqs[0]
        ctx.append(s.length)
        assert kv.locate(s.seq_id) == ("gpu", s.length)
    assert ctx == plan.decode_context_tokens
    for gid, new, cached in zip(plan.prefill_group_ids, plan.prefill_new_tokens, plan.prefill_cached_tokens):
        g = groups[gid]
        assert g.status is GroupStatus.RUNNING and g in sched.running
        assert cached == g.prefill_done and 0 < new <= g.prefill_target - g.prefill_done
        assert kv.locate(g.seqs[0].seq_id) == ("gpu", cached + new)
        if gid not in before:                       # admitted now, with whole cached blocks
            assert cached % kv.block_size == 0 and cached == g.cached_tokens
    admitted = [gid for gid in plan.prefill_group_ids if gid not in before]
    # (a head that no empty GPU could hold is rejected on the way: kv_window_v1.chunk_never_fits)
    rejected = {g.group_id for g in sched.rejected}
    queue = [gid for gid in waiting_before if gid not in rejected]
    assert admitted == queue[:len(admitted)], "admission is FIFO from the waiting queue's head"
    assert len(sched.running) <= cfg.max_num_seqs
    check_sharing(sched)


def drive(sched: SchedulerV1, specs: list[RequestSpec]) -> list:
    kv = sched.kv
    pending = sorted(specs, key=lambda s: (s.arrival_s, s.request_id))
    plans, tick, t = [], 0, 0.0
    for _ in range(MAX_ITERS):
        while pending and pending[0].arrival_s <= t:
            sched.add_request(pending.pop(0))
        if not sched.has_unfinished:
            if not pending:
                break
            tick += 1
            t = tick / 100
            continue
        before = [g.group_id for g in sched.running]
        decoding = {g.group_id for g in sched.running if not g.in_prefill}
        waiting_before = [g.group_id for g in sched.waiting]
        rejected_before = len(sched.rejected)
        plan = sched.schedule(t)
        kv.check_invariants()
        check_step(sched, plan, before, decoding, waiting_before)
        # a step may do nothing but reject what can never run (a late recompute too big for any chunk)
        assert not plan.is_empty or len(sched.rejected) > rejected_before, "scheduler stalled with unfinished requests"
        plans.append(plan)
        tick += 1
        t = tick / 100
        sched.complete_step(plan, t)
        kv.check_invariants()
    else:
        pytest.fail(f"not finished after {MAX_ITERS} iterations")
    return plans


def check_final(sched: SchedulerV1, specs: list[RequestSpec]) -> None:
    assert len(sched.request_groups()) == len(specs)
    assert len(sched.groups) == sum(s.n for s in specs)
    assert not sched.running and not sched.waiting and not sched.swapped
    for rec in sched.request_groups():
        children = rec.children if isinstance(rec, FanOut) else [rec]
        assert len(children) == rec.spec.n
        assert rec.status in (GroupStatus.FINISHED, GroupStatus.REJECTED)
        for g in children:
            # a rejected child makes its request rejected; a sibling may have finished before it
            assert g.status is rec.status or (rec.status is GroupStatus.REJECTED and g.status is GroupStatus.FINISHED)
            if g.status is GroupStatus.FINISHED:
                assert len(g.seqs) == 1 and g.seqs[0].generated == g.spec.output_len
        if rec.status is GroupStatus.FINISHED:
            assert rec.spec.arrival_s <= rec.first_scheduled_s <= rec.first_token_s <= rec.finish_s
        else:
            assert rec.reject_reason
    sched.kv.check_empty()          # no block leaked: all in the free queue, no table, no hash list


# --------------------------------------------------------------- workloads
@st.composite
def workloads(draw, max_requests=8):
    specs, t = [], 0.0
    for i in range(draw(st.integers(1, max_requests))):
        t += draw(st.sampled_from([0.0, 0.0, 0.01, 0.03, 0.1]))
        prompt = draw(st.integers(1, 28))
        n = draw(st.sampled_from([1, 1, 2, 3, 4]))
        prefix_id, prefix_len = -1, 0
        if draw(st.booleans()):
            prefix_id, prefix_len = draw(st.integers(0, 1)), draw(st.integers(1, prompt))
        specs.append(RequestSpec(i, round(t, 2), prompt, draw(st.integers(1, 36)), n=n,
                                 prefix_id=prefix_id, prefix_len=prefix_len))
    return specs


def make(draw, caching=None):
    bs = draw(st.sampled_from([1, 2, 4, 8]))
    kv = PagedKVV1(max(2, draw(st.integers(48, 200)) // bs), bs,
                   enable_prefix_caching=draw(st.booleans()) if caching is None else caching)
    seqs = draw(st.integers(2, 12))
    cfg = SchedulerConfig(max_num_seqs=seqs, max_num_batched_tokens=max(seqs, draw(st.sampled_from([8, 16, 64]))),
                          max_model_len=64, policy="vllm", preemption_mode=draw(st.sampled_from(["auto", "recompute"])))
    return SchedulerV1(kv, cfg, np.random.default_rng(0))


@settings(max_examples=150, **SETTINGS)
@given(data=st.data())
def test_v1_scheduler_properties(data):
    sched = make(data.draw)
    specs = data.draw(workloads())
    plans = drive(sched, specs)
    check_final(sched, specs)
    if any(p.preempted for p in plans):
        event("preempted")
    if any(p.prefill_group_ids and p.decode_group_ids for p in plans):
        event("mixed step")
    if any(c for p in plans for c in p.prefill_cached_tokens):
        event("prefix hit")


# ------------------------------------------------------------ constructed cases
def v1(num_blocks=64, bs=4, caching=True, seqs=16, budget=64, mode="auto"):
    cfg = SchedulerConfig(max_num_seqs=seqs, max_num_batched_tokens=budget, max_model_len=256, preemption_mode=mode)
    return SchedulerV1(PagedKVV1(num_blocks, bs, enable_prefix_caching=caching), cfg, np.random.default_rng(0))


@pytest.mark.parametrize("caching", [True, False])
def test_children_share_exactly_the_cached_prompt_blocks(caching):
    sched = v1(caching=caching, budget=128)
    rec = sched.add_request(RequestSpec(0, 0.0, 23, 6, n=4))
    assert isinstance(rec, FanOut) and all(isinstance(c, ChildGroup) for c in rec.children)
    assert len({c.group_id for c in rec.children}) == 4 and rec.children[0].group_id == 0
    plan = sched.schedule(0.0)
    assert plan.prefill_group_ids == [c.group_id for c in rec.children]
    bm, first = sched.kv.bm, rec.children[0]
    t0 = bm.tables[first.seqs[0].seq_id]
    full = (23 - 1) // 4 if caching else 0            # hits leave at least one token to compute
    assert plan.prefill_cached_tokens == [0] + [full * 4] * 3
    for c in rec.children[1:]:
        t = bm.tables[c.seqs[0].seq_id]
        assert t[:full] == t0[:full] and not set(t[full:]) & set(t0)
        assert c.cached_tokens == full * 4
    sched.complete_step(plan, 0.01)
    while sched.has_unfinished:
        sched.complete_step(sched.schedule(0.02), 0.02)
    assert rec.status is GroupStatus.FINISHED and rec.cached_tokens == 3 * full * 4
    sched.kv.check_empty()


def test_preemption_is_lifo_by_admission_and_recompute_only():
    # 12 blocks of 4: three requests of 8-token prompts admitted in order 0, 1, 2, then memory runs out
    sched = v1(num_blocks=12, caching=False)
    for i in range(3):
        sched.add_request(RequestSpec(i, 0.0, 8, 40))
    plans = drive(sched, [])
    first = next(p for p in plans if p.preempted)
    assert first.preempted[0] == (2, "recompute")      # the last admitted goes first
    assert sched.groups[2].num_recomputes >= 1 and sched.groups[0].num_preemptions == 0
    check_final(sched, [RequestSpec(i, 0.0, 8, 40) for i in range(3)])


def test_decodes_come_before_a_long_prompts_chunks():
    sched = v1(budget=16, seqs=8, caching=False)
    for i in range(4):
        sched.add_request(RequestSpec(i, 0.0, 3, 30))
    sched.complete_step(sched.schedule(0.0), 0.01)      # four short prefills
    sched.add_request(RequestSpec(4, 0.01, 40, 2))
    chunks = []
    while sched.groups[4].in_prefill:
        plan = sched.schedule(0.02)
        assert plan.decode_group_ids == [0, 1, 2, 3]
        chunks.append(plan.prefill_new_tokens)
        sched.complete_step(plan, 0.02)
    assert chunks == [[12], [12], [12], [4]]            # the budget left after four decode tokens


@pytest.mark.parametrize("kw,msg", [(dict(mode="swap"), "recompute only")])
def test_swap_is_refused(kw, msg):
    with pytest.raises(ValueError, match=msg):
        v1(**kw)


def test_beam_search_is_refused():
    with pytest.raises(ValueError, match="no beam search"):
        v1().add_request(RequestSpec(0, 0.0, 5, 5, beam_width=2))


def test_same_inputs_same_plans():
    def plans():
        sched = v1(num_blocks=20)
        specs = [RequestSpec(i, 0.01 * i, 9 + i, 12 + 2 * i, n=1 + i % 3, prefix_id=0, prefix_len=6)
                 for i in range(8)]
        return drive(sched, specs)
    a, b = plans(), plans()
    assert a == b and any(p.preempted for p in a)


@pytest.mark.parametrize("caching", [True, False])
def test_fast_forward_is_refused_while_a_blocked_heads_cache_hit_sits_in_the_free_queue(caching):
    # a decode step could evict that hit and change what the head needs, so no decode run is provably
    # exact; without the queued hit the head stays blocked and the run may go ahead
    sched = v1(num_blocks=10, bs=2, caching=caching, budget=32)
    sched.add_request(RequestSpec(0, 0.0, 7, 1, prefix_id=0, prefix_len=7))     # finishes at prefill
    sched.complete_step(sched.schedule(0.0), 0.01)
    sched.add_request(RequestSpec(1, 0.01, 9, 3))
    sched.complete_step(sched.schedule(0.01), 0.02)                              # R holds 5 blocks
    assert [g.group_id for g in sched.running] == [1] and not sched.running[0].in_prefill
    head = RequestSpec(2, 0.02, 16, 4, prefix_id=0, prefix_len=7)
    sched.add_request(head)
    assert sched.kv.prefix_hits(sched.waiting[0]) == (6 if caching else 0)
    assert not sched.kv.can_allocate(sched.waiting[0], 16 - sched.kv.prefix_hits(sched.waiting[0]))
    assert sched.admission_stays_blocked(num_seqs=1) is (not caching)


@pytest.mark.parametrize("caching", [True, False])
def test_recompute_finds_its_own_blocks_in_the_prefix_cache(caching):
    # 14 blocks of 4: request 1 (admitted last) is preempted after 20 tokens; its freed blocks wait in the
    # free queue tail first, and its re-prefill (8 prompt + 21 generated tokens) hits the ones still cached
    sched = v1(num_blocks=14, bs=4, caching=caching)
    specs = [RequestSpec(0, 0.0, 8, 30), RequestSpec(1, 0.0, 8, 24)]
    plans = drive(sched, specs)
    assert [p.preempted for p in plans if p.preempted] == [[(1, "recompute")]]
    again = next(p for p in plans[1:] if 1 in p.prefill_group_ids)
    assert again.prefill_cached_tokens == [16 if caching else 0]       # 2 prompt + 2 output blocks
    assert again.prefill_new_tokens == [13 if caching else 29]
    check_final(sched, specs)
