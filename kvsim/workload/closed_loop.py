"""Closed-loop load: ``workload.max_concurrency`` (vLLM bench's ``--max-concurrency``).

vLLM's benchmark draws every request's send time from the arrival process and
then, before sending, acquires a semaphore of ``max_concurrency`` slots; a
request holds its slot until its response is complete. :class:`ConcurrencyGate`
is that semaphore, shared by the simulator (:mod:`kvsim.sim`) and the real
engine (:mod:`kvsim.engine.serve_loop`), which both call :func:`send_freed` after a step:

* a request reaches the gate at its scheduled (open-loop) arrival time;
* it is issued at once if fewer than ``limit`` requests are in flight, otherwise
  it waits, first come first served (asyncio's semaphore wakes waiters in order);
* a request leaves flight when it finishes or is rejected; the slot goes to the
  longest-waiting request, which is issued at that instant.

An issued request's ``arrival_s`` is its issue time: ``max(scheduled arrival,
the finish that freed its slot)``. Latencies (TTFT, E2EL) therefore count from
the send, as vLLM bench's do (its timer starts after the semaphore). A request
issued on schedule keeps its ``RequestSpec`` unchanged.

The gate never looks at the scheduler's internals: the caller passes the count
of requests that have left flight (finished + rejected, both append-only), so
it works for every scheduling policy and for fast-forwarded decode runs.
"""
from __future__ import annotations

import dataclasses
from collections import deque

from kvsim.core.request import RequestSpec


class ConcurrencyGate:
    """At most ``limit`` requests in flight; the rest wait in arrival order (module doc)."""

    def __init__(self, limit: int):
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be an integer >= 1, got {limit!r}")
        self.limit = limit
        self.issued = 0                 # requests sent so far
        self.left = 0                   # of those, finished or rejected
        self.backlog: deque[RequestSpec] = deque()

    @property
    def in_flight(self) -> int:
        return self.issued - self.left

    @property
    def full(self) -> bool:
        return self.in_flight >= self.limit

    def arrive(self, spec: RequestSpec, now: float) -> list[RequestSpec]:
        """``spec`` reached its scheduled arrival at ``now``; returns the requests to send now (maybe none).

        With a free slot and nobody waiting, ``spec`` itself is sent, unchanged (on schedule)."""
        if not self.backlog and self.in_flight < self.limit:
            self.issued += 1
            return [spec]
        self.backlog.append(spec)
        return self._drain(now)

    def settle(self, left: int, now: float) -> list[RequestSpec]:
        """``left`` requests have now finished or been rejected in total; returns the requests sent in their slots."""
        if left < self.left or left > self.issued:
            raise ValueError(f"left went from {self.left} to {left} with {self.issued} issued")
        self.left = left
        return self._drain(now)

    def _drain(self, now: float) -> list[RequestSpec]:
        out = []
        while self.backlog and self.in_flight < self.limit:
            spec = self.backlog.popleft()
            if now > spec.arrival_s:
                spec = dataclasses.replace(spec, arrival_s=now)
            self.issued += 1
            out.append(spec)
        return out


def make_gate(max_concurrency: int | None) -> ConcurrencyGate | None:
    """The gate for ``workload.max_concurrency``, or None for open-loop load."""
    return None if max_concurrency is None else ConcurrencyGate(int(max_concurrency))


def send_freed(gate: ConcurrencyGate, sched, now: float) -> None:
    """Send waiting requests into the slots of those the scheduler ``sched`` finished or rejected by ``now``
    (what the simulator and the engine do after each step)."""
    while True:
        sent = gate.settle(len(sched.finished) + len(sched.rejected), now)
        if not sent:
            return
        for spec in sent:
            sched.add_request(spec)
