"""Writing a plan: ``plan.csv``, ``plan.json``, ``pareto.png`` (:mod:`kvsim.plan.pareto_plot`), ``report.html``
(:mod:`kvsim.report.plan_report`) and a short text table."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from kvsim.outdir import OutputSet, finite_json
from kvsim.plan.planner import OBJECTIVES, PlanResult
from kvsim.plan.slo import format_slo


def _jsonable(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return None if math.isnan(float(v)) else float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def _clean(obj):
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return _jsonable(obj)


def plan_document(res: PlanResult) -> dict:
    return _clean({"slo": res.slo, "objective": res.objective, "objective_column": OBJECTIVES[res.objective],
                   "recommended": res.recommended, "candidates": res.table.to_dict(orient="records"),
                   "searches": res.searches})


def format_table(res: PlanResult, keys: list[str]) -> str:
    cols = keys + ["replicas", "max_rate_req_s", "capacity_req_s", "rate_hi_req_s", "total_rate_req_s",
                   "goodput_per_gpu", "requests_per_usd", "normalized_latency_s", "runs", "requests_per_run", "stable",
                   "pareto", "recommended"]
    t = res.table[[c for c in cols if c in res.table]].copy()
    if "error" in res.table and (res.table.error != "").any():
        t["error"] = res.table.error
    return t.to_string(index=False, float_format=lambda x: f"{x:.4g}", na_rep="-")


def describe_recommendation(res: PlanResult, keys: list[str]) -> str:
    r = res.recommended
    if r is None:
        return f"no candidate meets {format_slo(res.slo)} at any rate tried"
    what = ", ".join(f"{k}={r[k]}" for k in keys) or "the scenario as is"
    usd = f", {r['requests_per_usd']:.0f} requests per $" if r.get("requests_per_usd") else ""
    head = (f"recommended: {what}, {r['replicas']} replica(s) x {r['tensor_parallel']} GPU(s): "
            f"{r['total_rate_req_s']:.3g} req/s within {format_slo(res.slo)}")
    if (r.get("runs") or 1) > 1:
        return head + _confident_text(res, r)
    stopped = f"; {r['note']}" if "stopped doubling" in (r.get("note") or "") else ""   # no rate failed the SLOs
    return head + (f" ({r['goodput_per_gpu']:.3g} req/s per GPU{usd}; normalized latency "
                   f"{r['normalized_latency_s']:.3g} s/token){stopped}")


def _confident_text(res: PlanResult, r: dict) -> str:
    """The replicated search's answer: the safe rate, the capacity and its interval, the SLO metrics' intervals,
    the runs behind them and whether the interval reached --tol."""
    conf = res.confidence
    ivs = "; ".join(f"{k} {r[f'{k}_est']:.3g} [{r[f'{k}_ci_lo']:.3g}, {r[f'{k}_ci_hi']:.3g}]"
                    for k in res.slo if r.get(f"{k}_est") is not None)
    cap, hi = r.get("total_capacity_req_s"), r.get("total_rate_hi_req_s")
    cap_text = (f"capacity {cap:.3g} req/s, {conf:.0%} interval {r['total_rate_req_s']:.3g}-{hi:.3g} req/s "
                f"(above {hi:.3g} the SLOs fail with {conf:.0%} confidence)" if cap and hi
                else "no rate failed with confidence")
    note = r.get("note") or "request count not grown (--max-requests = --requests)"
    return (f" with {conf:.0%} confidence ({ivs} at that rate, steady-state window; {int(r['runs'])} runs of "
            f"{int(r['requests_per_run'])} requests per probe); {cap_text}; {note}")


PLAN_FILES = {"csv": ("plan.csv",), "json": ("plan.json",), "png": ("pareto.png",), "html": ("report.html",)}


def write_plan(res: PlanResult, keys: list[str], out: Path, kinds=None, scenario: str = "") -> list[Path]:
    """The plan's files of ``kinds`` (default: all), written as one set into ``out``
    (:class:`kvsim.outdir.OutputSet`); returns their paths."""
    from kvsim.plan.pareto_plot import plot_pareto
    from kvsim.outdir import KINDS, files_for
    kinds = frozenset(KINDS if kinds is None else kinds)
    col = OBJECTIVES[res.objective]
    with OutputSet(out, [f for fs in PLAN_FILES.values() for f in fs]) as d:
        if "csv" in kinds:
            res.table.to_csv(d / "plan.csv", index=False)
        if "json" in kinds:
            (d / "plan.json").write_text(finite_json(plan_document(res), indent=2))
        if "png" in kinds:
            plot_pareto(res, keys, d / "pareto.png", col)
        if "html" in kinds:
            from kvsim.report.plan_report import render_plan
            (d / "report.html").write_text(render_plan(res, keys, scenario, col), encoding="utf-8")
    return [out / f for f in files_for(kinds, PLAN_FILES)]
