"""``runtime.async_scheduling``: the engine schedules and prepares the next step while a decode step is in flight
(kvsim/engine/serve_loop.py). With every request there at the start (nothing can arrive mid-flight), the
scheduler's decisions and the tokens drawn must be exactly those of stepping, on the CPU with tiny models:
prefill-first and chunked, swap and recompute preemption, parallel sampling, greedy and random draws."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import kvsim  # noqa: E402
from kvsim.engine.engine import RealEngine  # noqa: E402

DECISIONS = ["prefill_groups", "prefill_tokens", "decode_seqs", "batched_requests", "batched_tokens", "running",
             "waiting", "swapped",
             "preempted", "swap_out_blocks", "swap_in_blocks", "cow_copies", "blocks_in_use", "mem_used"]


def _run(overlap: bool, **over):
    engine = {"block_size": 8, "num_gpu_blocks": 40, "max_num_seqs": 8, "max_num_batched_tokens": 256}
    engine.update(over.pop("engine", {}))
    workload = {"dataset": "uniform", "prompt_len_range": [8, 40], "output_len_range": [6, 30],
                "num_requests": 10, "arrival": "burst"}
    workload.update(over.pop("workload", {}))
    runtime = {"device": "cpu", "cuda_graphs": False, "warmup": False, "async_scheduling": overlap}
    runtime.update(over.pop("runtime", {}))
    sc = kvsim.load_scenario({"name": "async", "model": "tiny-llama", "gpu": "a100-40gb", "seed": 4,
                              "engine": engine, "workload": workload, "runtime": runtime})
    return RealEngine(sc).run()


@pytest.mark.parametrize("prompt_steps", [True, False])
@pytest.mark.parametrize("case,preempts", [
    ({"engine": {"num_gpu_blocks": 14}}, "recompute"),                # prefill-first, recompute under pressure
    ({"engine": {"scheduler": "chunked", "max_num_batched_tokens": 24, "num_gpu_blocks": 16}}, "recompute"),
    ({"workload": {"n": 2}, "engine": {"num_gpu_blocks": 24}}, "swap"),   # parallel sampling: swap preemption
    ({"runtime": {"sampling": "random", "temperature": 0.8}}, None),
    ({"engine": {"scheduler": "static", "num_gpu_blocks": 80}}, None),    # static batches (padded finished rows)
])
def test_overlapped_steps_decide_and_draw_exactly_as_stepping(case, preempts, prompt_steps):
    stepped = _run(False, **dict(case))
    over = dict(case)
    over["runtime"] = {**over.get("runtime", {}), "async_prompt_steps": prompt_steps}
    overlapped = _run(True, **over)
    if preempts:                                                      # the case does what it is here for
        assert overlapped.summary[f"preemptions_{preempts}"] > 0
    assert overlapped.info["async_scheduling"] and not stepped.info["async_scheduling"]
    assert overlapped.info["steps_overlapped"] > 0 and overlapped.info["arrivals_deferred"] == 0
    assert stepped.info["steps_overlapped"] == 0
    # host_ahead: the steps scheduled while the one before flew, one after each overlapped step but a last one
    assert (stepped.iterations.host_ahead == 0).all()
    ahead = int(overlapped.iterations.host_ahead.sum())
    assert overlapped.info["steps_overlapped"] - 1 <= ahead <= overlapped.info["steps_overlapped"]
    its = overlapped.iterations
    after_decode = (its.prefill_tokens.shift(1).fillna(1) == 0) & (its.decode_seqs.shift(1).fillna(0) > 0)
    after_prompt = its.prefill_tokens.shift(1).fillna(0) > 0
    ahead = its.host_ahead.astype(bool)
    if prompt_steps:      # steps with prompt tokens fly too: after one of them (but the first timed), steps are ahead
        assert (ahead & after_prompt).sum() > 0 and not (ahead & ~after_decode & ~after_prompt).any()
    else:                 # only a decode-only step flies: the step after any other is never ahead
        assert not (ahead & ~after_decode).any()
    assert overlapped.outputs == stepped.outputs
    a, b = stepped.iterations, overlapped.iterations
    assert len(a) == len(b)
    assert (a[DECISIONS].to_numpy() == b[DECISIONS].to_numpy()).all()
    assert overlapped.summary["requests_finished"] == stepped.summary["requests_finished"] == 10
    assert (b.duration_s > 0).all() and (b.gpu_s >= 0).all() and (b.cpu_s >= 0).all()
    starts = b.start_s.to_numpy()
    assert (starts[1:] >= starts[:-1]).all()                          # records in time order
    r = overlapped.requests
    assert (r.finish_s >= r.first_token_s).all() and (r.first_token_s >= r.arrival_s).all()
    # a first token's time is its step's landing, not its launch: at least the step's GPU part after its record's
    # start (the step that drew it: the last one started by then)
    at = np.searchsorted(starts, r.first_token_s.to_numpy(), side="right") - 1
    assert (r.first_token_s.to_numpy() - starts[at] >= b.gpu_s.to_numpy()[at] - 1e-9).all()


def test_beam_search_is_stepped():
    beam = _run(True, workload={"beam_width": 2, "num_requests": 4}, engine={"num_gpu_blocks": 80})
    assert not beam.info["async_scheduling"] and beam.info["steps_overlapped"] == 0


@pytest.mark.parametrize("workload", [{"arrival": "burst", "max_concurrency": 3},
                                      # the first four due within microseconds: before the first step, however loaded
                                      # the host (at 1,000 req/s they spread over ~4 ms, and a slow first step on a
                                      # loaded machine saw a different number of them in the two runs)
                                      {"arrival": "poisson", "rate_req_s": 1e6, "max_concurrency": 4}])
def test_a_closed_loop_overlaps_the_steps_that_finish_nothing_and_decides_as_stepped(workload):
    """The calibration's serving fit is a closed loop: its steps overlap too, except one that finishes a request
    (the request taking its slot is sent when that step lands), so the decisions, tokens and arrival times are
    the stepped run's."""
    stepped, overlapped = _run(False, workload=dict(workload)), _run(True, workload=dict(workload))
    assert overlapped.info["async_scheduling"] and overlapped.info["steps_overlapped"] > 0
    assert overlapped.outputs == stepped.outputs
    a, b = stepped.iterations, overlapped.iterations
    assert len(a) == len(b) and (a[DECISIONS].to_numpy() == b[DECISIONS].to_numpy()).all()
    assert overlapped.summary["requests_finished"] == stepped.summary["requests_finished"] == 10
    r = overlapped.requests
    assert (r.first_token_s >= r.arrival_s).all()
    if workload["arrival"] == "burst":     # all due at 0: every later arrival is a freed slot's, sent at a landing
        landed = (b.start_s + b.duration_s).to_numpy()
        late = r.arrival_s[r.arrival_s > 0].to_numpy()
        assert len(late) == 10 - 3 and all(abs(landed - t).min() < 2e-3 for t in late)


def test_arrivals_while_steps_fly_all_finish():
    """Poisson arrivals: the loop overlaps only when the next arrival is due after the step; every request
    finishes and the counts are reported."""
    r = _run(True, workload={"arrival": "poisson", "rate_req_s": 40.0, "num_requests": 12})
    assert r.summary["requests_finished"] == 12
    assert r.info["arrivals_deferred"] >= 0 and r.info["steps_overlapped"] >= 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_overlapped_steps_on_the_gpu_with_graphs_match_stepping():
    """The GPU path: draws copied to pinned memory behind an event, decode steps replayed from CUDA graphs."""
    case = {"runtime": {"device": "cuda", "cuda_graphs": True, "warmup": True}, "engine": {"num_gpu_blocks": 14}}
    stepped, overlapped = _run(False, **dict(case)), _run(True, **dict(case))
    assert overlapped.info["steps_overlapped"] > 0 and overlapped.info["arrivals_deferred"] == 0
    assert overlapped.outputs == stepped.outputs
    a, b = stepped.iterations, overlapped.iterations
    assert len(a) == len(b) and (a[DECISIONS].to_numpy() == b[DECISIONS].to_numpy()).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("scheduler,over", [("vllm", {}), ("static", {}),
                                            ("vllm", {"workload": {"n": 2}, "engine": {"num_gpu_blocks": 24}})])
def test_a_launch_never_waits_for_the_gpu(monkeypatch, scheduler, over):
    """An overlapped step is launched without the host waiting for the GPU (PyTorch's sync debug mode raises on
    any synchronising call inside ``launch``), also in a static batch whose finished rows are padded and draw
    nothing (their draws need a gather: a blocking index copy there took the overlap away, v25 on the H100), and
    with parallel sampling under swap pressure (copy-on-write and staged swaps: their block ids were sent with
    ``torch.tensor(..., device=...)``, a stream sync, until 2026-12-06)."""
    from kvsim.engine.runner import ModelRunner
    launch, launched = ModelRunner.launch, []

    def strict(self, plan, batch):
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = launch(self, plan, batch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        launched.append(len(plan.decode_group_ids))
        return out
    monkeypatch.setattr(ModelRunner, "launch", strict)
    r = _run(True, engine={"scheduler": scheduler, "num_gpu_blocks": 80, **over.get("engine", {})},
             workload=over.get("workload", {}), runtime={"device": "cuda", "cuda_graphs": True, "warmup": True})
    assert r.info["steps_overlapped"] > 0 and len(launched) >= r.info["steps_overlapped"]
    assert r.summary["requests_finished"] == 10
    if over:                                      # the case does what it is here for
        assert r.iterations.cow_copies.sum() > 0 and r.iterations.swap_out_blocks.sum() > 0


@pytest.mark.parametrize("overlap,case", [(False, {}), (True, {}), (False, {"workload": {"beam_width": 2}})])
def test_a_steps_state_is_recorded_under_its_gpu_time(monkeypatch, overlap, case):
    """Recording a step's state (queues, blocks, memory) is instrumentation: it is read once the step's forward
    pass is queued, stepped (beam search too) or overlapped, so it adds nothing to the critical path; and each
    record spans its whole wall time (nothing subtracted), so the records tile the run."""
    import kvsim.engine.runner as R
    import kvsim.engine.serve_loop as S
    calls = []
    real_state, real_forward = S.step_state, R.ModelRunner._forward
    monkeypatch.setattr(S, "step_state", lambda *a, **k: calls.append("state") or real_state(*a, **k))
    monkeypatch.setattr(R.ModelRunner, "_forward", lambda *a, **k: calls.append("forward") or real_forward(*a, **k))
    res = _run(overlap, **case)
    assert calls and calls == ["forward", "state"] * (len(calls) // 2)
    its = res.iterations
    assert len(calls) // 2 == len(its)
    ends = (its.start_s + its.duration_s).to_numpy()
    assert (its.start_s.to_numpy()[1:] >= ends[:-1] - 1e-9).all()     # no record overlaps the next
