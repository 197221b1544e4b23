"""The max-rate search on replications: a capacity interval, decided on confidence, narrowed by effort.

``find_rate_interval(source, slo, seeds=[0..N-1])`` probes every rate with N
runs (one per seed, the same seeds at every rate: with a fixed request count a
seed's requests are the same at every rate, only denser, so the response is
close to monotone in the rate) and judges each SLO on the runs' steady-state
windows (:mod:`kvsim.plan.steady`, :mod:`kvsim.plan.exceedance`):

* a rate **passes** when every SLO holds with the chosen confidence and no run
  has unfinished requests;
* a rate **fails with confidence** when some SLO is broken with that confidence
  (or no run finished a request); otherwise it is undecided.

Geometric bisections find the highest passing rate
(``max_rate``, the recommendation: safe with the chosen confidence when most runs near it show the
tail, less often with short runs near a knee, :mod:`kvsim.plan.tail_bound`) and the
lowest rate failing with confidence (``rate_hi``). The capacity — the rate at
which the SLO metric meets its bound — lies in ``[max_rate, rate_hi]``, the
stated interval. Both ends are found to 10% first, then refined to a tenth of
the interval's width or ``rel_tol / 4``, whichever is coarser (a boundary needs
no more precision than the interval it bounds). ``capacity`` is the point
estimate inside it, where the
estimated metric crosses the bound (interpolated in log rate between the
probes around the crossing, no extra runs).

Effort grows until the interval is narrow: while ``rate_hi / max_rate - 1 >
rel_tol`` the search is repeated with twice the requests per run (each run's
window gains samples; a rate above capacity also shows a longer backlog),
started from the last interval, up to ``max_requests`` (also while the interval is narrow but
the runs just above it seldom show the tail: :func:`thin_tail_caution`); it is ``stable`` when
the width reached ``rel_tol`` and the runs above it show the tail, and says NOT stable — with the width it
reached, or the caution, and what would help — when the budget ran out first. More seeds narrow it too
(intervals shrink about as 1/sqrt(N)). The first replicated planner instead stopped when two
successive answers happened to agree to ``rel_tol``, which noise alone can
grant or refuse. Every run is cached by (overrides, seed, rate, requests).
"""
from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from kvsim.config import read_yaml
from kvsim.errors import KvsimError
from kvsim.plan.exceedance import QUANTILE_SLOS, Call, judge, min_samples
from kvsim.plan.search import (Probe, ProbeCache, SearchResult, bisect_rate, bracket_near, bracket_rate,
                               check_rate_driven, past_capacity, past_capacity_note, probe_overrides, probe_requests,
                               rate_key, run_at)
from kvsim.plan.steady import PER_REQUEST, window_bounds
from kvsim.plan.tail_bound import NEAR
from kvsim.replicate import seed_override
from kvsim.stats import aggregate, check_confidence


def _run(args) -> dict:
    data, ovr, rate, requests, min_duration_s, goodput, steady = args
    return run_at(data, ovr, rate, None, requests=requests, min_duration_s=min_duration_s, goodput=goodput,
                  steady=steady)


def classify(summaries: list[dict], slo: dict, confidence: float) -> tuple[bool, bool, list[str], dict[str, Call]]:
    """(passes, fails with confidence, reasons it does not pass, {SLO key: Call})."""
    passes, fails, why, calls = True, False, [], {}
    unfinished = sum(1 for s in summaries if s.get("requests_unfinished"))
    if unfinished:
        passes = False
        why.append(f"{unfinished} of {len(summaries)} runs have unfinished requests")
    if not any(s.get("requests_finished") for s in summaries):
        return False, True, why + ["no request finished"], calls
    for key, bound in slo.items():
        c = calls[key] = judge(key, bound, summaries, confidence)
        if not c.passes:
            passes = False
            why.append(f"{key} {c.estimate:.4g} [{c.lo:.4g}, {c.hi:.4g}] " +
                       ("> " if c.fails else "not confidently <= ") + f"{bound:g}")
        fails = fails or c.fails
    return passes, fails, why, calls


def capacity_estimate(seen: dict[float, tuple]) -> float | None:
    """Where the estimated SLO metrics cross their bounds: below the lowest rate whose estimate is past
    a bound, interpolated in log rate from the rate probed just below it (None when none is past)."""
    def over(v) -> float:
        ok, fail, calls, sums = v
        if any(s.get("requests_unfinished") for s in sums) or not calls:
            return math.inf
        return max(c.ratio for c in calls.values())
    g = sorted((r, over(v)) for r, v in seen.items())
    above = [i for i, (_, x) in enumerate(g) if not x <= 1]
    if not above:
        return None
    b = above[0]
    if b == 0:
        return g[0][0]
    (ra, ga), (rb, gb) = g[b - 1], g[b]
    t = 1.0 if math.isinf(gb) or gb == ga else (1 - ga) / (gb - ga)
    return float(math.exp(math.log(ra) + min(max(t, 0.0), 1.0) * (math.log(rb) - math.log(ra))))


class _Prober:
    """Runs (and caches) the N-seed probes of one candidate at one request count."""

    def __init__(self, data, ovr, seeds, slo, confidence, requests, min_duration_s, cache, pool, goodput, runner):
        self.data, self.ovr, self.seeds, self.slo, self.conf = data, ovr, seeds, slo, confidence
        self.requests, self.min_duration_s, self.cache, self.pool = requests, min_duration_s, cache, pool
        self.goodput, self.runner = goodput, runner
        self.seen: dict[float, tuple] = {}
        self.probes: list[Probe] = []

    def summaries(self, rate: float) -> list[dict]:
        ovrs = [self.ovr + [seed_override(s)] for s in self.seeds]
        n = probe_requests(self.requests, rate, self.min_duration_s)
        tag = ([f"#goodput={sorted(self.goodput.items())}"] if self.goodput else []) + [f"#steady={sorted(self.slo)}"]
        keys = [probe_overrides(o, n) + tag for o in ovrs]
        got = [self.cache.get(self.data, k, rate) for k in keys]
        todo = [i for i, g in enumerate(got) if g is None]
        if self.runner is not None:
            outs = [self.runner(ovrs[i], rate, n) for i in todo]
        else:
            tasks = [(self.data, ovrs[i], rate, self.requests, self.min_duration_s, self.goodput, tuple(self.slo))
                     for i in todo]
            outs = list(self.pool.map(_run, tasks)) if self.pool and len(tasks) > 1 else [_run(t) for t in tasks]
        for i, s in zip(todo, outs):
            self.cache.put(self.data, keys[i], rate, s)
            got[i] = s
        return got

    def served(self, rate: float) -> float | None:
        """Mean throughput of the runs at ``rate`` (None when it was not judged or its summaries have none)."""
        seen = self.seen.get(rate_key(rate))
        got = [x.get("throughput_req_s") for x in seen[3]] if seen else [None]
        return None if any(v is None for v in got) else float(np.mean(got))

    def judge(self, rate: float) -> tuple:
        rate = rate_key(rate)
        if rate not in self.seen:
            sums = self.summaries(rate)
            ok, fail, why, calls = classify(sums, self.slo, self.conf)
            self.seen[rate] = (ok, fail, calls, sums)
            self.probes.append(Probe(rate, ok, why, aggregate(sums, self.conf), self.requests))
        return self.seen[rate]


def check_samples(slo: dict, requests: int, runs: int, confidence: float) -> None:
    """Error unless a quantile SLO could pass at all: enough requests in the runs' steady windows."""
    first, last = window_bounds(requests)
    for key in slo:
        need = min_samples(QUANTILE_SLOS[key], confidence) if key in QUANTILE_SLOS else 0
        if runs * (last - first) < need:
            raise KvsimError("--requests", f"{key} needs at least {need} requests in the runs' steady windows to "
                             f"pass with {confidence:.0%} confidence; --seeds {runs} x --requests {requests} gives "
                             f"{runs * (last - first)} ({last - first} a run after the warm-up and drain): raise "
                             "--requests or --seeds")


def _check(confidence, rel_tol, requests, max_requests, slo, runs) -> tuple[float, int]:
    confidence = check_confidence(confidence)
    check_samples(slo, requests, runs, confidence)
    if not (isinstance(rel_tol, (int, float)) and 0 < rel_tol < 1):
        raise KvsimError("--tol", f"got {rel_tol!r}, expected a fraction in (0, 1)")
    max_requests = requests if max_requests is None else max_requests
    if max_requests < requests:
        raise KvsimError("--max-requests", f"got {max_requests}, expected at least --requests ({requests})")
    return confidence, max_requests


def find_rate_interval(source, slo: dict[str, float], overrides: list[str] | None = None, *, seeds: list[int],
                       confidence: float = 0.95, requests: int = 600, min_duration_s: float | None = 60.0,
                       rel_tol: float = 0.02, max_requests: int | None = None, start_rate: float | None = None,
                       max_steps: int = 16, cache: ProbeCache | None = None, jobs: int = 1,
                       goodput: dict | None = None, runner=None) -> SearchResult:
    """Capacity interval of ``source`` under ``slo`` with ``confidence`` over ``seeds`` (module doc).

    ``runner(overrides, rate, requests) -> summary`` (with a ``steady`` window) replaces the simulator,
    e.g. by a synthetic response in tests; ``source`` is then only a cache key and may be ``{}``."""
    confidence, max_requests = _check(confidence, rel_tol, requests, max_requests, slo, len(seeds))
    data = source if isinstance(source, dict) else read_yaml(source)
    ovr = list(overrides or [])
    rate = start_rate or check_rate_driven(data, probe_overrides(ovr, requests))
    cache = cache if cache is not None else ProbeCache()
    misses0 = cache.misses
    pool = ProcessPoolExecutor(max_workers=jobs) if runner is None and jobs > 1 and len(seeds) > 1 else None
    coarse, history, guess, probes = max(rel_tol / 4, 0.1), [], None, []
    try:
        n = requests
        while True:
            pr = _Prober(data, ovr, seeds, slo, confidence, n, min_duration_s, cache, pool, goodput, runner)
            passes = lambda r: pr.judge(r)[0]                                      # noqa: E731
            not_fails = lambda r: not pr.judge(r)[1]                               # noqa: E731
            lo, hi = (bracket_rate(passes, rate, coarse, max_steps, pr.served) if guess is None
                      else bracket_near(passes, guess[0], guess[1], coarse, max_steps))
            fail = None
            if lo is not None and hi is not None:
                ok_hi, fail = bracket_near(not_fails, lo, max(hi, guess[1] if guess else hi), coarse, max_steps)
                if fail is not None:                 # refine both ends to a tenth of the width, or rel_tol / 4
                    fine = max(rel_tol / 4, (fail / lo - 1) / 10)
                    lo, hi = bisect_rate(passes, lo, hi, fine)
                    _, fail = bisect_rate(not_fails, max(ok_hi, lo), fail, fine)
            probes += pr.probes
            history.append((n, lo, fail))
            narrow = fail is not None and lo is not None and fail / lo - 1 <= rel_tol
            if lo is None or hi is None or fail is None or n * 2 > max_requests or (
                    narrow and not thin_tail_caution(pr.seen, lo, slo)):
                break
            guess, n = (lo, fail), n * 2
    finally:
        if pool:
            pool.shutdown()
    res = SearchResult(lo, hi, None, probes=probes, runs=len(seeds), requests=n, rate_hi=fail)
    res.simulated = cache.misses - misses0
    res.capacity = capacity_estimate(pr.seen) if fail is not None and lo is not None else None
    if lo is not None:
        _, _, calls, sums = pr.judge(lo)
        res.summary = aggregate(sums, confidence)
        res.slo_intervals = {k: (c.estimate, c.lo, c.hi) for k, c in calls.items()}
    res.stable, res.note = _verdict(history, lo, hi, fail, rel_tol, confidence, len(seeds), max_requests,
                                    thin_tail_caution(pr.seen, lo, slo))
    if hi is None and lo is not None and past_capacity(pr.served, max((r for r in pr.seen if r < lo), default=None),
                                                       lo):
        res.note = past_capacity_note(lo, pr.served(lo))
    return res


def thin_tail_caution(seen: dict[float, tuple], lo: float | None, slo: dict) -> str:
    """A caution when, at the lowest probed rate above the recommendation ``lo``, fewer than half the runs
    come near a p99 SLO's bound ``B`` (a request above ``NEAR * B``): the upper end then rests on few runs'
    near misses, the regime where it is measured too low (at 600 requests per run a breaking rate passed in
    up to 16% of probes; with most runs showing near misses, misses were 1-6%:
    ``benchmarks/plan/interval_coverage_*.md``, :mod:`kvsim.plan.tail_bound`). Longer runs put near misses in
    more of them. "" otherwise."""
    above = sorted(r for r in seen if lo is not None and r > lo)
    if not above:
        return ""
    sums = seen[above[0]][3]
    for key, bound in slo.items():
        if key not in QUANTILE_SLOS:
            continue
        k = sum(bool((np.asarray(s["steady"][PER_REQUEST[key]]) > NEAR * bound).any()) for s in sums)
        if 2 * k < len(sums):
            return (f"at {above[0]:.4g} req/s, the first rate probed above the recommendation, only {k} of "
                    f"{len(sums)} runs have a request over {NEAR:g} x {key} {bound:g}, too few for an honest upper "
                    f"end (benchmarks/plan/interval_coverage_600.md)")
    return ""


def _verdict(history, lo, hi, fail, rel_tol, confidence, runs, max_requests, caution="") -> tuple[bool | None, str]:
    """(stable, note). Stable needs both the width within ``rel_tol`` and no :func:`thin_tail_caution`: an
    interval within --tol whose upper end the runs cannot support is not an answer to stop at, so it is NOT
    stable, and the note says what would make it so (longer runs: a higher --max-requests)."""
    steps = ", ".join(f"{k} requests: " + ("-" if a is None or b is None else f"{a:.4g}-{b:.4g}")
                      for k, a, b in history)
    longer = (f"runs of more requests put the tail in more of them: raise --max-requests to at least "
              f"{2 * history[-1][0]}" if history else "raise --max-requests")
    if lo is None:
        return None, f"misses the SLOs with {confidence:.0%} confidence even at {hi:g} req/s"
    if hi is None:
        return None, f"meets the SLOs even at {lo:g} req/s (stopped doubling)"
    if fail is None:
        text = f"no rate up to the search's limit fails the SLOs with {confidence:.0%} confidence"
        return None, f"{text}; caution: {caution}; {longer}" if caution else text
    width = fail / lo - 1
    if width <= rel_tol and not caution:
        return True, f"stable: the interval is {width:.1%} wide, within --tol {rel_tol:g} ({steps})"
    if width <= rel_tol:
        return False, (f"NOT stable: the interval is {width:.1%} wide, within --tol {rel_tol:g}, but {caution}; "
                       f"{longer} ({steps})")
    text = (f"NOT stable to --tol {rel_tol:g}: the interval is still {width:.1%} wide at --max-requests "
            f"{max_requests} and {runs} runs; more --seeds or --max-requests narrow it ({steps})")
    return False, f"{text}; caution: {caution}; {longer}" if caution else text
