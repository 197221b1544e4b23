"""Which steps the engine prepared ahead (prompt and decode): the simulator's mirror of the engine's overlap rule.

With overlapped scheduling (``runtime.async_scheduling`` and ``runtime.async_prompt_steps``), the engine launches a
step and, while the GPU runs it, schedules and prepares the next one, so that step's host work (0.4-0.5 ms for a
Llama-3-8B prompt step on an H100) is off the critical path. It does so only when the next request is due after the
step in flight's predicted end, 1.5x its predicted time (:mod:`kvsim.engine.serve_loop`, ``OVERLAP_MARGIN``): a
request due in that window must be seen by the next schedule. So a step is prepared ahead exactly when

* the step before it could fly: a decode step after some decode step had been timed, or a prompt step after some
  prompt step had been (the engine's first of each kind is stepped, having nothing to predict it from); no beam
  search and one GPU (the engine steps those runs); open loop (a closed loop's finish sends the next request when
  its step lands);
* and no request was due between that step's start and 1.5x its time after it.

A prompt step that takes requests which arrived during the step before it is therefore never prepared ahead (the
usual case in open-loop serving: 0-23% of the mixed steps of the H100 runs of 2026-12-06 were), and one that takes
requests queued earlier is, unless another is due (Orca-Max near saturation, v19: 79% of its prefill steps).

The engine predicts a step's time from the last one of its kind; the simulator knows it, and uses the time from
the step's start to the next one's. The profile's lone-prefill fit prices a prefill-only step with its host work
on the critical path (the serving fit's closed loops prepare 99% of them stepped) and records that host part by
prompt length (``prefill_serving[bs].host_s``); a prefill-only step prepared ahead is priced without it
(:meth:`kvsim.cost.calibrated.CalibratedCostModel.prompt_host_s`). Decode steps are priced as the serving fit's,
nearly all prepared ahead; one that was not pays the host part the overlapped calibration's stepped runs measured
beyond its rows (:meth:`~kvsim.cost.calibrated.CalibratedCostModel.decode_host_s`, 0.18-0.34 ms on the H200
Llama-3-8B profile of 2026-12-06). In open-loop serving those are mostly the steps in flight when a request
arrives: on the H200 (``validation/H200-async``: v13, v19, v21) 39-51% of those steps were prepared ahead against
96-97% of all decode steps, their host part on the critical path 0.16-0.22 ms against 0.02, so arrivals waited
longer than the simulator said (TTFT p50 −3.4% and −6.3% on v13 and v21). Fast-forwarded runs stop at each arrival
and leave such a step to the engine loop (:mod:`kvsim.fastforward`). Needs no torch.
"""
from __future__ import annotations

from bisect import bisect_right

OVERLAP_MARGIN = 1.5    # the engine's rule (kvsim.engine.serve_loop imports it from here)


class StepsAhead:
    """Follows the steps of one simulated run; :meth:`ahead` says whether the step starting now was prepared
    while the one before it flew. ``arrivals``: the requests' arrival times, sorted. ``prompt_steps``: steps with
    prompt tokens fly too (``runtime.async_prompt_steps``); without it only decode steps do. ``prices``: which
    steps' prices read it (``"prompt"``: prefill-only steps prepared ahead lose their host part; ``"decode"``:
    decode steps not prepared ahead pay theirs, :meth:`~kvsim.cost.calibrated.CalibratedCostModel.decode_host_s`)."""

    def __init__(self, arrivals, prompt_steps: bool = True, prices: frozenset = frozenset({"prompt"})):
        self.arrivals = list(arrivals)
        self.prompt_steps = prompt_steps
        self.prompt_priced = "prompt" in prices
        self.decode_priced = "decode" in prices
        self.last_start: float | None = None
        self.last_prompt = False        # the step before had prompt tokens
        self.could_fly = False          # ... and a step of its kind had been timed before it (its prediction)
        self.seen_decode = False
        self.seen_prompt = False

    def started(self, t: float, prompt: bool) -> None:
        """A step with (``prompt``) or without prompt tokens starts at ``t``."""
        self.could_fly = (self.seen_prompt and self.prompt_steps) if prompt else self.seen_decode
        self.last_start, self.last_prompt = t, prompt
        if prompt:
            self.seen_prompt = True
        else:
            self.seen_decode = True

    def ahead(self, now: float) -> bool:
        """Whether the step starting at ``now`` was prepared while the one before it flew: that one could fly and
        the first request due after its start came after 1.5x its time (``now`` less its start)."""
        if self.last_start is None or not self.could_fly:
            return False
        return self.flew(self.last_start, now)

    def flew(self, start: float, end: float) -> bool:
        """Whether a step that could fly, started at ``start`` and taking until ``end``, flew: no request due after
        its start and by 1.5x its time after it (the next step was then prepared ahead)."""
        i = bisect_right(self.arrivals, start)
        due = self.arrivals[i] if i < len(self.arrivals) else float("inf")
        return due > start + OVERLAP_MARGIN * (end - start)


def steps_ahead(setup, cost) -> StepsAhead | None:
    """The run's :class:`StepsAhead`, or None where no step's price depends on it: the scenario's engine does not
    overlap, runs beam search, tensor-parallel or a closed loop, or the cost model has no host part to take off a
    prompt step prepared ahead (a profile without ``prefill_serving[bs].host_s``, or prompt steps not overlapped)
    nor to add to a decode step that was not (a profile without an overlapped fit's stepped rows)."""
    sc = setup.scenario
    rt = sc.runtime
    prices = frozenset(k for k, on in (("prompt", getattr(cost, "prices_prompt_host", False)),
                                       ("decode", getattr(cost, "prices_decode_host", False))) if on)
    if not prices:                                          # first: most runs stop here, before any walk
        return None
    if not rt.async_scheduling or sc.tensor_parallel > 1:
        return None
    if not rt.async_prompt_steps:
        prices -= {"prompt"}
        if not prices:
            return None
    if sc.workload.max_concurrency is not None or any(r.beam_width > 1 for r in setup.requests):
        return None
    return StepsAhead(sorted(r.arrival_s for r in setup.requests), bool(rt.async_prompt_steps), prices)
