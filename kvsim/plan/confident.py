"""The max-rate search on replications: decide each probe on a confidence interval, grow the run length.

``find_rate_interval(source, slo, seeds=[0..N-1])`` probes every rate with N
runs (one per seed) and takes the Student-t interval of each SLO metric across
them (:mod:`kvsim.stats`):

* a rate **passes** when every SLO holds with the chosen confidence — the upper
  end of each metric's interval is within its bound — and no run has
  unfinished requests;
* a rate **fails with confidence** when the lower end of some metric's interval
  is above its bound (or no run finished a request).

Two bisections (geometric) find the highest passing rate (``max_rate``: the
recommendation, to ``rel_tol / 2``) and the lowest rate failing with confidence
(``rate_hi``, to ``rel_tol``). The capacity — the rate at which the metric's
expectation meets its bound — lies above the first with the chosen confidence
and below the second, so ``[max_rate, rate_hi]`` is the stated capacity
interval. It narrows as runs are added (the metric intervals shrink as 1/√N)
and as runs get longer.

The whole search is then repeated with twice the requests per run until the
answer moves by at most ``rel_tol`` (``stable``) or the next doubling would pass
``max_requests``; each repetition starts at the last answer, and every probe is
cached by (overrides, seed, rate), so nothing is simulated twice.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

from kvsim.config import read_yaml
from kvsim.errors import KvsimError
from kvsim.plan.search import (Probe, ProbeCache, SearchResult, bracket_rate, check_rate_driven, probe_overrides,
                               rate_key, run_at)
from kvsim.plan.slo import slo_value
from kvsim.replicate import seed_override
from kvsim.stats import aggregate, check_confidence, interval


def _run(args) -> dict:
    data, ovr, rate, requests, min_duration_s, goodput = args
    return run_at(data, ovr, rate, None, requests=requests, min_duration_s=min_duration_s, goodput=goodput)


def classify(summaries: list[dict], slo: dict, confidence: float) -> tuple[bool, bool, list[str], dict]:
    """(passes, fails with confidence, reasons it does not pass, {SLO key: (mean, lo, hi)})."""
    passes, fails, why, ivs = True, False, [], {}
    unfinished = sum(1 for s in summaries if s.get("requests_unfinished"))
    if unfinished:
        passes = False
        why.append(f"{unfinished} of {len(summaries)} runs have unfinished requests")
    if not any(s.get("requests_finished") for s in summaries):
        return False, True, why + ["no request finished"], ivs
    for key, bound in slo.items():
        vals = [slo_value(s, key) for s in summaries]
        iv = interval(vals, confidence)
        ivs[key] = (iv.mean, iv.lo, iv.hi)
        if iv.n < len(vals) or iv.hi > bound:
            passes = False
            why.append(f"{key} {iv.mean:.4g} [{iv.lo:.4g}, {iv.hi:.4g}] > {bound:g}" if iv.n == len(vals)
                       else f"{key}: {len(vals) - iv.n} runs without a value")
        if iv.n == len(vals) and iv.lo > bound:
            fails = True
    return passes, fails, why, ivs


class _Prober:
    """Runs (and caches) the N-seed probes of one candidate at one request count."""

    def __init__(self, data, ovr, seeds, slo, confidence, requests, min_duration_s, cache, pool, res, goodput):
        self.goodput = goodput
        self.data, self.ovr, self.seeds, self.slo, self.conf = data, ovr, seeds, slo, confidence
        self.requests, self.min_duration_s, self.cache, self.pool, self.res = \
            requests, min_duration_s, cache, pool, res
        self.seen: dict[float, tuple] = {}

    def summaries(self, rate: float) -> list[dict]:
        ovrs = [self.ovr + [seed_override(s)] for s in self.seeds]
        from kvsim.plan.search import probe_requests
        n = probe_requests(self.requests, rate, self.min_duration_s)
        tag = [f"#goodput={sorted(self.goodput.items())}"] if self.goodput else []
        keys = [probe_overrides(o, n) + tag for o in ovrs]
        got = [self.cache.get(self.data, k, rate) for k in keys]
        todo = [i for i, g in enumerate(got) if g is None]
        tasks = [(self.data, ovrs[i], rate, self.requests, self.min_duration_s, self.goodput) for i in todo]
        outs = list(self.pool.map(_run, tasks)) if self.pool and len(tasks) > 1 else [_run(t) for t in tasks]
        for i, s in zip(todo, outs):
            self.cache.put(self.data, keys[i], rate, s)
            got[i] = s
        return got

    def judge(self, rate: float) -> tuple:
        rate = rate_key(rate)
        if rate not in self.seen:
            sums = self.summaries(rate)
            ok, fail, why, ivs = classify(sums, self.slo, self.conf)
            self.seen[rate] = (ok, fail, ivs, sums)
            self.res.probes.append(Probe(rate, ok, why, aggregate(sums, self.conf)))
        return self.seen[rate]


def find_rate_interval(source, slo: dict[str, float], overrides: list[str] | None = None, *, seeds: list[int],
                       confidence: float = 0.95, requests: int = 600, min_duration_s: float | None = 60.0,
                       rel_tol: float = 0.02, max_requests: int | None = None, start_rate: float | None = None,
                       max_steps: int = 16, cache: ProbeCache | None = None, jobs: int = 1,
                       goodput: dict | None = None) -> SearchResult:
    """Highest rate meeting every SLO with ``confidence`` over ``seeds`` (module doc)."""
    confidence = check_confidence(confidence)
    if not (isinstance(rel_tol, (int, float)) and 0 < rel_tol < 1):
        raise KvsimError("--tol", f"got {rel_tol!r}, expected a fraction in (0, 1)")
    max_requests = requests if max_requests is None else max_requests
    if max_requests < requests:
        raise KvsimError("--max-requests", f"got {max_requests}, expected at least --requests ({requests})")
    data = source if isinstance(source, dict) else read_yaml(source)
    ovr = list(overrides or [])
    rate = start_rate or check_rate_driven(data, probe_overrides(ovr, requests))
    cache = cache if cache is not None else ProbeCache()
    misses0 = cache.misses
    pool = ProcessPoolExecutor(max_workers=jobs) if jobs > 1 and len(seeds) > 1 else None
    history: list[tuple[int, float | None]] = []
    try:
        n = requests
        while True:
            res = SearchResult(None, None, None, runs=len(seeds), requests=n)
            pr = _Prober(data, ovr, seeds, slo, confidence, n, min_duration_s, cache, pool, res, goodput)
            lo, hi = bracket_rate(lambda r: pr.judge(r)[0], rate, rel_tol / 2, max_steps)
            start_hi = hi if hi is not None else (lo if lo is not None else rate)
            _, fail = bracket_rate(lambda r: not pr.judge(r)[1], start_hi, rel_tol, max_steps)
            res.max_rate, res.fail_rate, res.rate_hi = lo, hi, fail
            history.append((n, lo))
            if lo is None:
                res.note = f"misses the SLOs with {confidence:.0%} confidence even at {hi:g} req/s"
            elif hi is None:
                res.note = f"meets the SLOs even at {lo:g} req/s (stopped doubling)"
            if len(history) > 1 and lo is not None and history[-2][1] is not None:
                res.stable = abs(lo / history[-2][1] - 1) <= rel_tol
            if res.stable or lo is None or hi is None or n * 2 > max_requests:
                break
            rate, n = lo, n * 2
        if lo is not None:
            ok, fail_, ivs, sums = pr.judge(lo)
            res.summary = aggregate(sums, confidence)
            res.slo_intervals = ivs
        steps = ", ".join(f"{k} requests: {'-' if r is None else f'{r:.4g}'}" for k, r in history)
        if res.stable:
            res.note = ((res.note + "; " if res.note else "") +
                        f"answer stable to --tol {rel_tol:g} as the requests per run doubled ({steps})")
        elif len(history) > 1 or max_requests > requests:
            res.note = ((res.note + "; " if res.note else "") +
                        f"answer NOT stable to --tol {rel_tol:g} by --max-requests {max_requests} ({steps})")
    finally:
        if pool:
            pool.shutdown()
    res.simulated = cache.misses - misses0
    return res
