"""The engine's host-part instrumentation (kvsim.engine.host_probe): each step's serving-thread CPU time over
``cpu_s``'s spans and its core, stepped and overlapped, on the CPU with a tiny model."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from kvsim.engine.host_probe import current_cpu, host_summary


def test_the_summary_counts_core_changes_and_the_threads_share():
    got = host_summary([1e-3, 2e-3, 1e-3, 1e-3], [1e-3, 1e-3, 0.5e-3, 1e-3], [3, 3, 5, 3])
    assert got == {"host_thread_share": pytest.approx(3.5 / 5), "host_cpu_changes": 2, "host_cpus": 2}
    assert host_summary([], [], []) == {} and host_summary([1e-3], [], [0]) == {}
    assert host_summary([1e-3, 1e-3], [1e-3, 1e-3], [-1, -1])["host_cpus"] == 0      # cores unknown


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/thread-self/stat")
def test_the_core_is_one_this_process_may_run_on():
    import os
    assert current_cpu() in os.sched_getaffinity(0)


@pytest.mark.parametrize("overlap", [False, True])
def test_engine_records_the_host_threads_time_and_core_per_step(overlap):
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    from tests.test_engine_async import _run
    res = _run(overlap)
    its = res.iterations
    assert {"host_thread_s", "host_cpu"} <= set(its.columns) and len(its) > 10
    thr, cpu = its.host_thread_s.to_numpy(), its.cpu_s.to_numpy()
    assert (thr >= 0).all() and thr.sum() > 0
    # CPU time of one thread within a span cannot exceed the span (clock granularity aside)
    assert (thr <= cpu + 2e-4).all() and thr.sum() <= cpu.sum() * 1.05
    if sys.platform.startswith("linux"):
        assert (its.host_cpu >= 0).all()
    info = res.info
    assert 0 < info["host_thread_share"] <= 1.05 and info["host_cpus"] == len(np.unique(its.host_cpu))
    assert info["steps_overlapped"] > 0 if overlap else info["steps_overlapped"] == 0
