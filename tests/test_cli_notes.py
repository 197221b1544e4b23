"""kvsim run says when the offered load is too much (any scheduler) and what fp8 means on a card without FP8."""
from __future__ import annotations

import pytest

from tests._cli import cli

Q = "scenarios/examples/quickstart.yaml"


def test_static_batching_at_three_times_its_capacity_warns(tmp_path, capsys):
    rc, out, err = cli(capsys, "run", Q, "--set", "engine.scheduler=static", "--set", "workload.num_requests=300",
                       "--out", tmp_path / "r", "--outputs", "json")
    assert rc == 0, err
    assert "WARNING: Overloaded at 1.5 req/s offered" in out


def test_a_run_that_keeps_up_has_no_warning(tmp_path, capsys):
    rc, out, err = cli(capsys, "run", Q, "--set", "workload.num_requests=300", "--set", "workload.rate_req_s=0.5",
                       "--out", tmp_path / "r", "--outputs", "json")
    assert rc == 0, err
    assert "WARNING" not in out


def test_fp8_on_a100_is_accepted_with_a_note(tmp_path, capsys):
    rc, out, err = cli(capsys, "run", Q, "--set", "dtype=fp8", "--set", "workload.num_requests=10",
                       "--out", tmp_path / "r", "--outputs", "json")
    assert rc == 0
    assert "note: dtype fp8 on A100-40GB, which has no FP8 tensor cores" in err


def test_fp8_on_h100_has_no_note(tmp_path, capsys):
    rc, out, err = cli(capsys, "run", Q, "--set", "dtype=fp8", "--set", "gpu=h100-80gb",
                       "--set", "workload.num_requests=10", "--out", tmp_path / "r", "--outputs", "json")
    assert rc == 0
    assert "fp8" not in err


def test_waiting_thirds_read_in_chunks_equal_the_whole_frame():
    """The overload check reads a long run's log chunk by chunk; the queue averages match the whole frame's."""
    import kvsim
    from kvsim.report.run_report import REPORT_COLUMNS, waiting_thirds
    sc = kvsim.load_scenario({"model": "opt-13b", "gpu": "a100-40gb",
                              "workload": {"rate_req_s": 4, "num_requests": 300}})
    res = kvsim.simulate(sc)
    whole = waiting_thirds(res.requests, res.log.frame(REPORT_COLUMNS))
    pieces = waiting_thirds(res.requests, res.log.chunks(rows=97, columns=REPORT_COLUMNS))
    assert whole[1] > whole[0] >= 0 and whole[1] > 1     # a growing queue: the last third holds waiting requests
    assert pieces == pytest.approx(whole, rel=1e-12)
    assert res.queue_thirds is None                                  # (not asked)
    from kvsim.build import setup_run
    from kvsim.sim import SimEngine
    asked = SimEngine(setup_run(sc)).run(queue_thirds=True)
    assert asked.queue_thirds == pytest.approx(whole, rel=1e-12)     # gathered in the summary's pass
    burst = SimEngine(setup_run(kvsim.load_scenario({"model": "opt-13b", "gpu": "a100-40gb", "workload": {
        "arrival": "burst", "num_requests": 20}}))).run(queue_thirds=True)
    assert burst.queue_thirds is None                                # (no offered rate: no verdict on it)
