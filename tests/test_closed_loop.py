"""Closed-loop load (workload.max_concurrency, vllm bench's --max-concurrency): the gate, the simulator,
the real engine on CPU, and the commands that cannot honour it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import kvsim
from kvsim.build import setup_run
from kvsim.core.request import RequestSpec
from kvsim.sim import SimEngine
from kvsim.workload.closed_loop import ConcurrencyGate
from tests._cli import cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
Q = str(ROOT / "scenarios" / "examples" / "quickstart.yaml")


def max_in_flight(reqs: pd.DataFrame) -> int:
    """Most requests between send (arrival_s) and finish at once; a finish at t frees its slot before a send at t."""
    events = sorted([(t, 0, -1) for t in reqs.finish_s] + [(t, 1, +1) for t in reqs.arrival_s])
    level = peak = 0
    for _, _, d in events:
        level += d
        peak = max(peak, level)
    return peak


def scheduled_arrivals(sc_data: dict, sets: list[str]) -> np.ndarray:
    """The open-loop arrival times the workload draws (the gate only ever delays them)."""
    return np.array([r.arrival_s for r in setup_run(kvsim.load_scenario(sc_data, sets)).requests])


def simulate(sets: list[str], fast_forward: bool = True):
    sc = kvsim.load_scenario(Q, sets)
    return SimEngine(setup_run(sc), fast_forward=fast_forward).run()


# ---------------------------------------------------------------- the gate

def spec(i: int, t: float) -> RequestSpec:
    return RequestSpec(i, t, 10, 10)


def test_gate_is_a_fifo_semaphore():
    g = ConcurrencyGate(2)
    assert g.arrive(spec(0, 0.0), 0.0) == [spec(0, 0.0)]          # free slot: sent as scheduled, unchanged
    assert g.arrive(spec(1, 0.5), 0.5) == [spec(1, 0.5)]
    assert g.arrive(spec(2, 1.0), 1.0) == [] and g.full             # both slots taken: waits
    assert g.arrive(spec(3, 1.5), 1.5) == []
    assert g.settle(0, 2.0) == []                                   # nobody left yet
    sent = g.settle(1, 3.0)                                         # one finished at 3.0: the oldest waiter goes
    assert [(s.request_id, s.arrival_s) for s in sent] == [(2, 3.0)]
    sent = g.settle(3, 4.0)                                         # two more left: one waiter remains to send
    assert [(s.request_id, s.arrival_s) for s in sent] == [(3, 4.0)]
    assert g.in_flight == 1 and not g.backlog
    with pytest.raises(ValueError):
        g.settle(2, 5.0)                                            # the count of those that left never falls


# ---------------------------------------------------------------- simulator

@pytest.mark.parametrize("limit", [1, 4, 16])
def test_sim_never_exceeds_the_limit_and_sends_each_request_when_a_slot_frees(limit):
    sets = ["workload.num_requests=120", "workload.rate_req_s=4", f"workload.max_concurrency={limit}"]
    res = simulate(sets)
    reqs = res.requests.sort_values("request_id")
    assert (reqs.status == "finished").all()
    assert max_in_flight(reqs) == limit                               # the cap is reached and never passed
    sched = scheduled_arrivals(kvsim.load_scenario(Q).to_dict(), sets)
    sent = reqs.arrival_s.to_numpy()
    assert (sent >= sched).all() and (np.diff(sent) >= 0).all()       # delayed only, first come first served
    delayed = sent > sched
    assert delayed.any()
    finishes = set(reqs.finish_s)
    assert all(t in finishes for t in sent[delayed])                   # a delayed request goes at a finish
    # work conserving: just before a delayed send every slot was busy
    for t in sent[delayed][:40]:
        busy = ((reqs.arrival_s < t) & (reqs.finish_s >= t)).sum()
        assert busy == limit, (t, busy)


def test_burst_with_one_slot_serialises_requests():
    res = simulate(["workload.num_requests=30", "workload.rate_req_s=inf", "workload.max_concurrency=1"])
    r = res.requests.sort_values("request_id")
    assert (r.arrival_s.to_numpy()[1:] == r.finish_s.to_numpy()[:-1]).all()
    assert res.summary["avg_batched_requests"] == pytest.approx(1.0)


def test_a_limit_above_the_load_changes_nothing():
    sets = ["workload.num_requests=150"]
    a, b = simulate(sets), simulate(sets + ["workload.max_concurrency=150"])
    pd.testing.assert_frame_equal(a.requests, b.requests)
    pd.testing.assert_frame_equal(a.iterations, b.iterations)


def test_closed_loop_fast_forward_equals_stepping():
    sets = ["workload.num_requests=100", "workload.rate_req_s=3", "workload.max_concurrency=6"]
    a, b = simulate(sets, fast_forward=True), simulate(sets, fast_forward=False)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    pd.testing.assert_frame_equal(a.iterations, b.iterations)


def test_closed_loop_lowers_the_batch_and_the_queue():
    sets = ["workload.num_requests=200", "workload.rate_req_s=6"]
    open_loop, closed = simulate(sets), simulate(sets + ["workload.max_concurrency=4"])
    assert closed.summary["avg_batched_requests"] <= 4.0 < open_loop.summary["avg_batched_requests"]
    assert closed.iterations.running.max() <= 4 and closed.iterations.waiting.max() <= 4


# ---------------------------------------------------------------- commands

def test_run_prints_the_closed_loop(capsys, tmp_path):
    rc, out, err = cli(capsys, "run", Q, "--set", "workload.num_requests=40", "--set", "workload.max_concurrency=3",
                       "--out", tmp_path / "r")
    assert rc == 0, err
    assert "closed loop: at most 3 in flight" in out
    reqs = pd.read_csv(tmp_path / "r" / "requests.csv")
    assert max_in_flight(reqs) <= 3


@pytest.mark.parametrize("value", ["0", "-2", "1.5", "abc", "true"])
def test_bad_max_concurrency_is_one_line_exit_2(capsys, tmp_path, value):
    rc, out, err = cli(capsys, "run", Q, "--set", f"workload.max_concurrency={value}", "--out", tmp_path / "x")
    assert rc == 2 and err.count("\n") == 1 and "workload.max_concurrency" in err
    assert not (tmp_path / "x").exists()


def test_plan_refuses_closed_loop_naming_the_field(capsys, tmp_path):
    rc, out, err = cli(capsys, "plan", Q, "--set", "workload.max_concurrency=8", "--out", tmp_path / "p", "--quiet")
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith("error: workload.max_concurrency:")
    assert not (tmp_path / "p").exists()


def test_fields_lists_max_concurrency(capsys):
    rc, out, _ = cli(capsys, "fields", "concurrency")
    assert rc == 0 and "workload.max_concurrency" in out and "--max-concurrency" in out


# ---------------------------------------------------------------- real engine (CPU, tiny model)

def test_engine_honours_max_concurrency_on_cpu():
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    from kvsim.engine.engine import RealEngine
    data = {"name": "closed-loop", "model": "tiny-opt", "gpu": "a100-40gb", "dtype": "fp32",
            "engine": {"block_size": 4, "num_gpu_blocks": 400, "num_cpu_blocks": 0, "swap_space_gib": 0,
                       "max_num_batched_tokens": 256, "max_num_seqs": 16},
            "workload": {"dataset": "uniform", "prompt_len_range": [3, 12], "output_len_range": [2, 8],
                         "arrival": "burst", "num_requests": 7, "max_concurrency": 2},
            "runtime": {"device": "cpu", "attention_backend": "torch", "warmup": False, "cuda_graphs": False},
            "seed": 3}
    res = RealEngine(kvsim.load_scenario(data)).run()
    reqs = res.requests.sort_values("request_id")
    assert (reqs.status == "finished").all() and len(reqs) == 7
    assert max_in_flight(reqs) == 2
    assert res.iterations.running.max() <= 2
    late = reqs.arrival_s.to_numpy()[2:]                              # all arrive at t=0; 5 wait for a slot
    assert all(t in set(reqs.finish_s) for t in late)
