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


class _Device:
    """A device timeline on a fake clock: work queued runs after what is queued before it; the host's own time
    passes as it launches; ``sync`` waits for the device."""

    def __init__(self):
        self.host = 0.0        # the host's clock
        self.free = 0.0        # when the device finishes what is queued

    def launch(self, host_s, device_s):
        self.host += host_s
        self.free = max(self.free, self.host) + device_s

    def sync(self):
        self.host = max(self.host, self.free)


def test_behind_timed_counts_what_a_call_adds_on_the_device_not_its_launches_hidden_behind_busy_work():
    from kvsim.engine.host_timing import behind_timed
    d = _Device()
    busy = lambda: d.launch(0.01, 1.0)              # noqa: E731 - a forward pass of 1 s, launched in 0.01 s
    call = lambda: d.launch(0.3, 0.05)              # noqa: E731 - a sampling call: 0.3 s of launches, 0.05 s on device
    t = behind_timed(call, 5, busy=busy, warmup=1, sync=d.sync, clock=lambda: d.host)
    assert t == pytest.approx(0.05)                 # its launches were hidden behind the busy second
    alone = behind_timed(call, 5, busy=lambda: None, sync=d.sync, clock=lambda: d.host)
    assert alone == pytest.approx(0.35)             # nothing to hide behind: launches and device time
    slow = lambda: d.launch(2.0, 0.05)              # noqa: E731 - launches longer than the busy work: they show
    assert behind_timed(slow, 3, busy=busy, sync=d.sync, clock=lambda: d.host) == pytest.approx(2.01 + 0.05 - 1.01)
