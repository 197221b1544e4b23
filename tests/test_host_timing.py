"""Host-clock step timing shared by the reference step and the calibration's prefill grids."""
from __future__ import annotations

import pytest

pytest.importorskip("torch")

from kvsim.engine.host_timing import host_timed  # noqa: E402


def test_warmup_between_and_timed_calls_run_in_order_and_the_median_is_returned(monkeypatch):
    import kvsim.engine.host_timing as H
    calls = []
    clock = iter([0.0, 1.0, 10.0, 13.0, 20.0, 22.0])        # timed calls of 1, 3 and 2 s
    monkeypatch.setattr(H.time, "perf_counter", lambda: next(clock))
    t = host_timed(lambda: calls.append("fn"), 3, warmup=2, between=lambda: calls.append("between"))
    assert calls == ["fn", "fn"] + ["between", "fn"] * 3
    assert t == 2.0


def test_no_between_and_no_warmup():
    calls = []
    assert host_timed(lambda: calls.append(1), 4) >= 0.0 and len(calls) == 4
