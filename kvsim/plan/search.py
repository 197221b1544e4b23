"""Highest sustainable request rate under SLOs: bracket by doubling, then bisect.

``find_max_rate(source, slo)`` simulates the scenario at its own rate, doubles
(or halves) the rate until one rate meets the SLOs and another misses them,
then bisects geometrically between the two until ``hi / lo - 1 <= rel_tol``.
Every probe goes through a :class:`ProbeCache`, so no (scenario, overrides,
rate) point is simulated twice — a later search or a latency-vs-rate curve over
the same points reuses the results.

Each probe runs ``max(requests, rate x min_duration_s)`` requests (defaults 600
and 60 s). Above capacity the queue grows with every arrival, so latency grows
with the length of the run: a probe must last long enough, in *time*, for a rate
10% above capacity to show it. 600 requests of ShareGPT at 2 req/s last 300 s,
but 600 Alpaca requests at 80 req/s last 7.5 s — shorter than the backlog takes
to build — so fast workloads get more requests. An unfinished request counts as
a violation (see :mod:`kvsim.plan.slo`). With a fixed request count the arrival
gaps of a seeded Poisson/Gamma workload scale exactly with ``1 / rate`` and the
lengths do not change, so probes see the same requests, only denser.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field

from kvsim.config import load_scenario, read_yaml
from kvsim.errors import KvsimError
from kvsim.plan.slo import violations


@dataclass
class Probe:
    rate: float
    ok: bool
    violations: list[str]
    summary: dict
    requests: int | None = None               # requests per run (replicated searches, whose effort grows)


@dataclass
class SearchResult:
    """``max_rate`` meets every SLO (None when even the lowest rate tried does not);
    ``fail_rate`` is the lowest rate seen to miss them (None if none did)."""
    max_rate: float | None
    fail_rate: float | None
    summary: dict | None                      # the run at max_rate
    probes: list[Probe] = field(default_factory=list)   # in the order asked (cached ones included)
    simulated: int = 0                        # probes actually simulated (cache misses)
    note: str = ""
    # replicated searches (kvsim.plan.confident); one run: rate_hi is fail_rate, runs 1
    rate_hi: float | None = None              # lowest rate seen to miss the SLOs with confidence
    capacity: float | None = None             # point estimate of the capacity in [max_rate, rate_hi]
    runs: int = 1                             # replications (seeds) behind every probe
    requests: int | None = None               # requests per run of the final search
    stable: bool | None = None                # the interval [max_rate, rate_hi] narrowed to within tol
    slo_intervals: dict = field(default_factory=dict)   # SLO key -> (estimate, lo, hi) at max_rate

    def curve(self) -> list[tuple[float, dict]]:
        """(rate, summary) of every distinct probe, sorted by rate."""
        seen = {p.rate: p.summary for p in self.probes}
        return sorted(seen.items())


def rate_key(rate: float) -> float:
    """Rates are rounded to 10 significant digits, so equal rates hit the cache exactly."""
    return float(f"{rate:.10g}")


class ProbeCache:
    """(base scenario, overrides, rate) -> run summary, with hit/miss counters."""

    def __init__(self):
        self._store: dict[tuple, dict] = {}
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(data: dict, overrides: list[str], rate: float) -> tuple:
        digest = hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
        return digest, tuple(overrides), rate_key(rate)

    def get(self, data: dict, overrides: list[str], rate: float):
        s = self._store.get(self.key(data, overrides, rate))
        if s is not None:
            self.hits += 1
        return s

    def put(self, data: dict, overrides: list[str], rate: float, summary: dict) -> None:
        self.misses += 1
        self._store[self.key(data, overrides, rate)] = summary

    def __len__(self) -> int:
        return len(self._store)


def probe_overrides(overrides: list[str] | None, requests: int | None) -> list[str]:
    out = list(overrides or [])
    if requests is not None:
        from kvsim import limits
        if isinstance(requests, bool) or not isinstance(requests, int) or not 1 <= requests <= limits.MAX_REQUESTS:
            raise KvsimError("--requests", f"got {requests}, expected an integer in [1, {limits.MAX_REQUESTS}]")
        out += [f"workload.num_requests={int(requests)}", "workload.duration_s=null"]
    return out


def probe_requests(requests: int | None, rate: float, min_duration_s: float | None) -> int | None:
    """Requests in a probe at ``rate``: at least ``requests`` and at least ``min_duration_s`` of arrivals."""
    if requests is None or not min_duration_s:
        return requests
    return max(int(requests), math.ceil(rate * min_duration_s))


def run_at(data: dict, overrides: list[str], rate: float, cache: ProbeCache | None = None, *,
           requests: int | None = None, min_duration_s: float | None = None, goodput: dict | None = None,
           steady: tuple | None = None) -> dict:
    """Summary of ``data`` + ``overrides`` at ``rate`` req/s (from the cache when there).

    With ``requests`` the run has ``probe_requests(requests, rate, min_duration_s)`` requests.
    With ``goodput`` (per-request SLOs in s, :func:`kvsim.latency.parse_goodput`) the summary also
    holds ``goodput_frac`` and ``goodput_miss_frac`` (the share of requests missing them). With ``steady``
    (SLO keys) it holds ``steady``: the per-request samples of the measurement window (:mod:`kvsim.plan.steady`).
    """
    from kvsim.sim import simulate
    rate = rate_key(rate)
    n = probe_requests(requests, rate, min_duration_s)
    if n is not None:
        overrides = probe_overrides(overrides, n)
    key = overrides + ([f"#goodput={sorted(goodput.items())}"] if goodput else []) + \
        ([f"#steady={sorted(steady)}"] if steady else [])
    if cache is not None:
        hit = cache.get(data, key, rate)
        if hit is not None:
            return hit
    sc = load_scenario(data, overrides + [f"workload.rate_req_s={rate!r}"])
    res = simulate(sc)
    summary = res.summary
    if goodput:
        from kvsim.latency import goodput as _goodput
        g = _goodput(res.requests, goodput)
        summary = {**summary, "goodput_frac": g["goodput_frac"], "goodput_miss_frac": 1 - g["goodput_frac"],
                   "goodput_req_s": g["goodput_req_s"]}
    if steady:
        from kvsim.plan.steady import steady_window
        summary = {**summary, "steady": steady_window(res.requests, steady)}
    if cache is not None:
        cache.put(data, key, rate, summary)
    return summary


def check_rate_driven(data: dict, overrides: list[str]) -> float:
    """The scenario's rate; error unless its arrivals are driven by a rate (poisson or gamma)."""
    return rate_driven(load_scenario(data, overrides))


def rate_driven(sc) -> float:
    """:func:`check_rate_driven` of a loaded scenario."""
    if getattr(sc.workload, "_rate_inf", False):
        raise KvsimError("workload.rate_req_s", "inf means burst arrivals (every request at t=0); the rate search "
                                                "needs a finite starting rate")
    if sc.workload.arrival not in ("poisson", "gamma"):
        if sc.workload.dataset == "trace":
            raise KvsimError("workload.arrival", "a trace replays its own arrival_s; the rate search needs it "
                                                 "re-timed (--set workload.retime_trace=true --set "
                                                 "workload.arrival=poisson)")
        raise KvsimError("workload.arrival", f"got {sc.workload.arrival!r}; the rate search needs poisson or gamma "
                                             "arrivals (set --set workload.arrival=poisson)")
    if sc.workload.max_concurrency is not None:
        raise KvsimError("workload.max_concurrency", f"{sc.workload.max_concurrency}: closed-loop load holds "
                         "latency near the cap at any arrival rate (requests wait unmeasured for a slot), so no "
                         "max rate exists to search; remove it (--set workload.max_concurrency=null)")
    return float(sc.workload.rate_req_s)


SATURATED_SERVED = 0.75     # a passing probe serving under this share of its offered rate ...
SATURATED_GROWTH = 1.10     # ... and under this much more than the probe at half its rate: past capacity


def saturated(served_lo: float | None, served_hi: float | None, rate_hi: float) -> bool:
    """Whether doubling the offered rate to ``rate_hi`` found the system past its capacity: it served
    ``served_hi`` req/s there, under SATURATED_SERVED of the offered rate and less than SATURATED_GROWTH times
    what it served at half the rate (``served_lo``). Both conditions, because one short probe below capacity
    also serves less than offered (its drain counts), but then doubling the rate still nearly doubles what
    it serves."""
    if served_lo is None or served_hi is None:        # a summary without throughput (a synthetic runner)
        return False
    return served_hi < SATURATED_SERVED * rate_hi and served_hi < SATURATED_GROWTH * served_lo


def bracket_rate(pred, r0: float, rel_tol: float, max_steps: int, served=None) -> tuple[float | None, float | None]:
    """Highest rate where ``pred`` holds and the lowest above it where it does not: double (or halve) from
    ``r0`` for at most ``max_steps`` steps, then bisect geometrically to ``rel_tol``. ``None`` on a side the
    steps never reached. ``served(rate)``: the throughput of the probe at ``rate``; doubling stops (``hi``
    None) once a passing probe is :func:`saturated` — SLOs so loose that an overloaded system meets them,
    where doubling on would only simulate ever larger queues (to 65,536x the start rate)."""
    r = rate_key(r0)
    lo = hi = None
    if pred(r):
        lo = r
        for _ in range(max_steps):
            r = rate_key(r * 2)
            if not pred(r):
                hi = r
                break
            if served is not None and past_capacity(served, lo, r):
                lo = r
                break
            lo = r
    else:
        hi = r
        for _ in range(max_steps):
            r = rate_key(r / 2)
            if pred(r):
                lo = r
                break
            hi = r
    if lo is not None and hi is not None:
        lo, hi = bisect_rate(pred, lo, hi, rel_tol)
    return lo, hi


def past_capacity(served, below: float | None, rate: float) -> bool:
    """Whether the passing probe at ``rate`` is :func:`saturated` against the one doubling came from, at ``below``
    (``served(r)``: a probe's throughput, None where none was run): why a search that never failed stopped
    doubling. ``below`` is passed, not derived: rates are rounded (:func:`rate_key`), so ``rate / 2`` is often
    not the rate probed before it."""
    return below is not None and saturated(served(below), served(rate), rate)


def past_capacity_note(rate: float, served: float) -> str:
    return (f"meets the SLOs even at {rate:g} req/s offered, where it serves only {served:.4g} req/s: past capacity, "
            f"so the SLOs are looser than the queueing they allow (stopped doubling; capacity ~{served:.4g} req/s; "
            "tighten the SLOs for a rate search)")


def bisect_rate(pred, lo: float, hi: float, rel_tol: float) -> tuple[float, float]:
    """Narrow ``pred(lo)``, ``not pred(hi)`` geometrically until ``hi / lo - 1 <= rel_tol``."""
    while hi / lo - 1 > rel_tol:
        mid = rate_key(math.sqrt(lo * hi))
        if mid in (lo, hi):
            break
        if pred(mid):
            lo = mid
        else:
            hi = mid
    return lo, hi


def bracket_near(pred, lo: float, hi: float, rel_tol: float, max_steps: int) -> tuple[float | None, float | None]:
    """:func:`bracket_rate` started from a guessed bracket ``lo < hi`` (e.g. an earlier search's answer): while
    ``pred(lo)`` fails or ``pred(hi)`` holds, move that end out by the bracket's ratio, squared at every step;
    then bisect to ``rel_tol``."""
    lo, hi = rate_key(lo), rate_key(max(hi, lo * (1 + rel_tol)))
    ratio = hi / lo
    for _ in range(max_steps):
        if pred(lo):
            break
        lo, hi, ratio = rate_key(lo / ratio), lo, ratio * ratio
    else:
        return None, lo
    ratio = hi / lo
    for _ in range(max_steps):
        if not pred(hi):
            break
        lo, hi, ratio = hi, rate_key(hi * ratio), ratio * ratio
    else:
        return hi, None
    return bisect_rate(pred, lo, hi, rel_tol)


def find_max_rate(source, slo: dict[str, float], overrides: list[str] | None = None, *,
                  requests: int | None = 600, min_duration_s: float | None = 60.0, rel_tol: float = 0.02,
                  start_rate: float | None = None, goodput: dict | None = None,
                  max_steps: int = 16, cache: ProbeCache | None = None) -> SearchResult:
    """Highest request rate of ``source`` (YAML path or dict) meeting every SLO (module doc)."""
    if not (isinstance(rel_tol, (int, float)) and 0 < rel_tol < 1):
        raise KvsimError("--tol", f"got {rel_tol!r}, expected a fraction in (0, 1)")
    data = source if isinstance(source, dict) else read_yaml(source)
    ovr = list(overrides or [])
    rate0 = check_rate_driven(data, probe_overrides(ovr, requests))
    cache = cache if cache is not None else ProbeCache()
    misses0 = cache.misses
    res = SearchResult(None, None, None)

    def ok(rate: float) -> bool:
        s = run_at(data, ovr, rate, cache, requests=requests, min_duration_s=min_duration_s, goodput=goodput)
        v = violations(s, slo)
        res.probes.append(Probe(rate_key(rate), not v, v, s))
        return not v

    def served(rate: float) -> float | None:
        return next((p.summary.get("throughput_req_s") for p in res.probes if p.rate == rate_key(rate)), None)

    lo, hi = bracket_rate(ok, start_rate or rate0, rel_tol, max_steps, served)
    if hi is None:
        below = max((p.rate for p in res.probes if p.rate < lo), default=None)     # the rate doubled from
        res.note = past_capacity_note(lo, served(lo)) if past_capacity(served, below, lo) else \
            f"meets the SLOs even at {lo:g} req/s (stopped doubling)"
    elif lo is None:
        res.note = f"misses the SLOs even at {hi:g} req/s: {'; '.join(res.probes[-1].violations)}"
    res.max_rate, res.fail_rate = lo, hi
    res.summary = (run_at(data, ovr, lo, cache, requests=requests, min_duration_s=min_duration_s, goodput=goodput)
                   if lo is not None else None)
    res.simulated = cache.misses - misses0
    return res
