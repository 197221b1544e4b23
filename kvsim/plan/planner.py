"""Capacity planning: the highest SLO-meeting rate of each candidate configuration, and a recommendation.

``plan(source, slo, candidates, replicas=(1,))`` runs :func:`find_max_rate` for
every point of the candidate grid (any scenario fields, e.g.
``{"engine.block_size": [16, 32], "gpu": ["a100-40gb", "h100-80gb"]}``), in
parallel processes, and scores each point:

* ``total_rate_req_s = replicas x max_rate_req_s`` (identical replicas behind a
  load balancer each take ``1/replicas`` of the traffic);
* ``goodput_per_gpu = total_rate_req_s / (tensor_parallel x replicas)``;
* ``requests_per_usd = goodput_per_gpu x 3600 / price_per_hour_usd`` (the
  per-GPU price from ``prices`` — ``--price gpu=usd_per_hour`` — or else the
  catalogue's; blank when neither has one, and an error with objective ``usd``);
* ``pareto``: not dominated in (higher objective, lower normalized latency at
  that rate) by another candidate — the front ``pareto.png`` draws, on which the
  recommendation therefore lies.

The recommendation maximises the objective (``gpu``: goodput per GPU,
``usd``: requests per dollar, ``rate``: total rate), ties broken by latency.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import pandas as pd

from kvsim.config import check_key, load_scenario, read_yaml
from kvsim.configtools import check_number
from kvsim.errors import KvsimError
from kvsim.plan.search import SearchResult, find_max_rate, probe_overrides, rate_driven
from kvsim.plan.slo import slo_value
from kvsim.sweeps import _point_overrides, check_point, grid_points

OBJECTIVES = {"gpu": "goodput_per_gpu", "usd": "requests_per_usd", "rate": "total_rate_req_s"}


@dataclass
class PlanResult:
    table: pd.DataFrame                      # one row per candidate x replica count
    slo: dict
    objective: str
    recommended: dict | None                 # the best row, or None when no candidate meets the SLOs
    searches: list[dict] = field(default_factory=list)   # per candidate: probes (rate, ok, violations)
    confidence: float = 0.95                 # of the intervals, when the search ran on replications

    def pareto(self) -> pd.DataFrame:
        return self.table[self.table.pareto]


def _search_point(args) -> tuple[dict, SearchResult | None, str]:
    data, overrides, point, slo, kw = args
    try:
        if kw.get("seeds"):
            from kvsim.plan.confident import find_rate_interval
            res = find_rate_interval(data, slo, overrides + _point_overrides(point), **kw)
        else:
            res = find_max_rate(data, slo, overrides + _point_overrides(point), **kw)
        return point, res, ""
    except KvsimError as e:
        return point, None, str(e)
    except Exception as e:  # noqa: BLE001 - one failing candidate keeps its row
        return point, None, f"internal error: {type(e).__name__}: {e}".splitlines()[0]


def pareto_mask(rate: pd.Series, latency: pd.Series) -> pd.Series:
    """True where no other row has rate >= and latency <= with one strictly better."""
    ok = rate.notna() & latency.notna()
    mask = []
    for i in rate.index:
        if not ok[i]:
            mask.append(False)
            continue
        dominated = ((rate[ok] >= rate[i]) & (latency[ok] <= latency[i])
                     & ((rate[ok] > rate[i]) | (latency[ok] < latency[i]))).any()
        mask.append(not dominated)
    return pd.Series(mask, index=rate.index)


def _rows(data, overrides, point, res: SearchResult | None, err: str, replicas, slo, prices) -> list[dict]:
    from kvsim.catalogue import get_gpu
    rows = []
    for n in replicas:
        row = {**point, "replicas": n}
        if res is None:
            rows.append({**row, "error": err})
            continue
        sc = load_scenario(data, overrides + _point_overrides(point))
        spec = get_gpu(sc.gpu)
        price = prices.get(spec.name, spec.price_per_hour_usd)
        gpus = sc.tensor_parallel * n
        s = res.summary or {}
        rate = res.max_rate
        total = None if rate is None else rate * n
        per_gpu = None if total is None else total / gpus
        row.update({
            "gpu": sc.gpu, "tensor_parallel": sc.tensor_parallel, "num_gpus": gpus,
            "max_rate_req_s": rate, "fail_rate_req_s": res.fail_rate, "total_rate_req_s": total,
            "goodput_per_gpu": per_gpu, "price_per_hour_usd": price,
            "requests_per_usd": None if (per_gpu is None or not price) else per_gpu * 3600 / price,
            "normalized_latency_s": s.get("normalized_latency_s"), "ttft_p99_s": s.get("ttft_p99_s"),
            "tpot_p99_s": s.get("tpot_p99_s"),
            "preemption_rate": slo_value(s, "preemption_rate") if s else None,
            **({"goodput_miss_frac": s.get("goodput_miss_frac")} if "goodput_miss_frac" in s else {}),
            "avg_batched_requests": s.get("avg_batched_requests"),
            "probes": len(res.probes), "simulated": res.simulated, "note": res.note, "error": err,
        })
        if res.runs > 1:
            row.update({"capacity_req_s": res.capacity, "rate_hi_req_s": res.rate_hi,
                        "total_capacity_req_s": None if res.capacity is None else res.capacity * n,
                        "total_rate_hi_req_s": None if res.rate_hi is None else res.rate_hi * n,
                        "runs": res.runs, "requests_per_run": res.requests, "stable": res.stable})
            for key, (est, lo, hi) in res.slo_intervals.items():
                row.update({f"{key}_est": est, f"{key}_ci_lo": lo, f"{key}_ci_hi": hi})
        rows.append(row)
    return rows


def check_prices(prices: dict | None, data, overrides: list[str], points: list[dict], objective: str) -> dict:
    """``--price`` values keyed by catalogue GPU name; with objective ``usd`` every candidate GPU needs a price."""
    from kvsim.catalogue import get_gpu
    out = {}
    for name, usd in (prices or {}).items():
        try:
            spec = get_gpu(name)
        except KvsimError as e:
            raise KvsimError("--price", e.message) from None
        out[spec.name] = check_number("--price", usd, float, (0, 1e6, True, False))
    if objective == "usd":
        for pt in points:
            try:
                gpu = get_gpu(load_scenario(data, overrides + _point_overrides(pt)).gpu)
            except KvsimError:
                continue                         # a candidate that cannot load is an error row later
            if gpu.name not in out and not gpu.price_per_hour_usd:
                raise KvsimError("--price", f"GPU {gpu.name} has no catalogue price, so --objective usd cannot "
                                            f"rank it; give one with --price {gpu.name.lower()}=USD_PER_HOUR")
    return out


def plan(source, slo: dict, candidates: dict[str, list] | None = None, *, overrides: list[str] | None = None,
         replicas=(1,), requests: int | None = 600, min_duration_s: float | None = 60.0,
         rel_tol: float = 0.02, objective: str = "gpu", jobs: int | None = None,
         progress: bool = False, seeds: int = 1, confidence: float = 0.95,
         max_requests: int | None = None, goodput: dict | None = None,
         prices: dict[str, float] | None = None) -> PlanResult:
    """Search every candidate's max SLO rate and recommend one (module doc).

    ``seeds`` > 1 searches on replications (:mod:`kvsim.plan.confident`): a rate
    passes when every SLO holds with ``confidence`` on the runs' steady-state
    windows, the capacity is stated as an interval [highest passing rate, lowest
    rate failing with confidence] around a point estimate, and the request count
    per run doubles (up to ``max_requests``, default 8 x ``requests``) until the
    interval is within ``rel_tol``.
    """
    from kvsim.replicate import check_seeds, seed_list
    from kvsim.stats import check_confidence
    seeds = check_seeds(seeds)
    confidence = check_confidence(confidence)
    if max_requests is not None:
        check_number("--max-requests", max_requests, int, (1, 1 << 30, False, False))
        if isinstance(requests, int) and max_requests < requests:
            raise KvsimError("--max-requests", f"got {max_requests}, expected at least --requests ({requests})")
    if objective not in OBJECTIVES:
        raise KvsimError("--objective", f"got {objective!r}, expected one of {', '.join(OBJECTIVES)}")
    if not (isinstance(rel_tol, (int, float)) and 0 < rel_tol < 1):
        raise KvsimError("--tol", f"got {rel_tol!r}, expected a fraction in (0, 1)")
    try:
        replicas = [check_number("--replicas", r, int, (1, 1 << 20, False, False)) for r in replicas]
    except TypeError:
        raise KvsimError("--replicas", f"got {replicas!r}, expected integers >= 1") from None
    if not replicas:
        raise KvsimError("--replicas", f"got {replicas!r}, expected integers >= 1")
    data = source if isinstance(source, dict) else read_yaml(source)
    from kvsim.config import normalize_overrides
    overrides = normalize_overrides(overrides)
    load_scenario(data, probe_overrides(overrides, requests))          # fail fast on a bad base
    candidates = candidates or {}
    for k, values in candidates.items():
        check_key(k, "--candidates")
        if not isinstance(values, (list, tuple)) or not values:
            raise KvsimError("--candidates", f"{k}: expected a non-empty list of values, got {values!r}")
    points = grid_points(candidates) if candidates else [{}]
    prices = check_prices(prices, data, overrides, points, objective)
    errors = []
    for pt in points:                  # a candidate whose scenario does not load (a misspelt GPU, a bad value)
        sc = check_point(data, probe_overrides(overrides, requests), pt, "--candidates")     # is bad input;
        try:                           # one whose load cannot be driven by a rate is kept as an error row...
            rate_driven(sc)
        except KvsimError as e:
            errors.append(e)
    if len(errors) == len(points):     # ...unless none can: then it is bad input
        raise errors[0]
    kw = dict(requests=requests, min_duration_s=min_duration_s, rel_tol=rel_tol, goodput=goodput)
    all_jobs = max(1, jobs or os.cpu_count() or 1)
    jobs = max(1, min(all_jobs, len(points)))
    if seeds > 1:
        if requests is None:
            raise KvsimError("--requests", "--seeds needs a request count per run")
        from kvsim.plan.confident import check_samples
        check_samples(slo, requests, seeds, confidence)
        base = load_scenario(data, probe_overrides(overrides, requests)).seed
        kw.update(seeds=seed_list(base, seeds), confidence=confidence,
                  max_requests=8 * requests if max_requests is None else max_requests,
                  jobs=all_jobs if len(points) == 1 else 1)
    tasks = [(data, overrides, p, slo, kw) for p in points]
    from kvsim.sweeps import map_local
    results = map_local(_search_point, tasks, jobs, progress=progress, desc="plan", unit="candidate")
    rows, searches = [], []
    for point, res, err in results:
        rows += _rows(data, overrides, point, res, err, replicas, slo, prices)
        if res is not None:
            searches.append({"candidate": point, "max_rate_req_s": res.max_rate, "fail_rate_req_s": res.fail_rate,
                             "simulated": res.simulated, "note": res.note, "runs": res.runs,
                             "capacity_req_s": res.capacity, "rate_hi_req_s": res.rate_hi,
                             "requests_per_run": res.requests,
                             "probes": [{"rate_req_s": p.rate, "requests_per_run": p.requests, "meets": p.ok,
                                         "violations": p.violations,
                                         "normalized_latency_s": p.summary.get("normalized_latency_s")}
                                        for p in res.probes]})
    failed = [r["error"] for r in rows if r.get("error")]
    if failed and len(failed) == len(rows):    # no candidate could be searched: bad input, not a plan
        raise KvsimError("--candidates" if candidates else "scenario", f"no candidate could be searched; "
                         f"the first: {failed[0]}")
    table = pd.DataFrame(rows)
    for col in ("max_rate_req_s", "total_rate_req_s", "normalized_latency_s", "goodput_per_gpu",
                "requests_per_usd"):
        if col not in table:
            table[col] = None
        table[col] = pd.to_numeric(table[col], errors="coerce")
    key = OBJECTIVES[objective]
    table["pareto"] = pareto_mask(table[key], table.normalized_latency_s)
    ok = table[table[key].notna()]
    recommended = None
    if len(ok):
        best = ok.sort_values([key, "normalized_latency_s"], ascending=[False, True]).iloc[0]
        recommended = {k: (None if pd.isna(v) else v) if not isinstance(v, (list, dict)) else v
                       for k, v in best.to_dict().items()}
    table["recommended"] = False
    if recommended is not None:
        table.loc[best.name, "recommended"] = True
    return PlanResult(table, dict(slo), objective, recommended, searches, confidence)
