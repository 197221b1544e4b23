"""Writing a plan: ``plan.csv``, ``plan.json``, ``pareto.png`` and a short text table."""
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


def plot_pareto(res: PlanResult, keys: list[str], path) -> None:
    """Total SLO rate vs normalized latency at that rate; Pareto front joined, recommendation starred."""
    from kvsim.plots import plt
    t = res.table.dropna(subset=["total_rate_req_s", "normalized_latency_s"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter(t.total_rate_req_s, t.normalized_latency_s, c="#999999", label="candidate")
    front = t[t.pareto].sort_values("total_rate_req_s")
    ax.plot(front.total_rate_req_s, front.normalized_latency_s, "o-", c="#d7191c", label="Pareto front")
    for _, r in t.iterrows():
        label = ", ".join(f"{k.split('.')[-1]}={r[k]}" for k in keys + ["replicas"] if k in r and
                          (k != "replicas" or t.replicas.nunique() > 1))
        ax.annotate(label, (r.total_rate_req_s, r.normalized_latency_s), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    rec = t[t.recommended]
    if len(rec):
        ax.scatter(rec.total_rate_req_s, rec.normalized_latency_s, marker="*", s=250, c="#fdae61",
                   edgecolors="k", zorder=5, label="recommended")
    ax.set(xlabel="max request rate meeting the SLOs (req/s, all replicas)",
           ylabel="normalized latency at that rate (s/token)", title=f"SLO: {format_slo(res.slo)}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_table(res: PlanResult, keys: list[str]) -> str:
    cols = keys + ["replicas", "max_rate_req_s", "rate_hi_req_s", "total_rate_req_s", "goodput_per_gpu",
                   "requests_per_usd", "normalized_latency_s", "runs", "requests_per_run", "stable", "pareto",
                   "recommended"]
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
    return head + (f" ({r['goodput_per_gpu']:.3g} req/s per GPU{usd}; normalized latency "
                   f"{r['normalized_latency_s']:.3g} s/token)")


def _confident_text(res: PlanResult, r: dict) -> str:
    """The replicated search's answer: confidence, metric intervals, capacity interval, runs, stability."""
    conf = res.confidence
    ivs = "; ".join(f"{k} {r[f'{k}_mean']:.3g} [{r[f'{k}_ci_lo']:.3g}, {r[f'{k}_ci_hi']:.3g}]"
                    for k in res.slo if r.get(f"{k}_mean") is not None)
    hi = r.get("total_rate_hi_req_s")
    cap = (f"capacity interval {r['total_rate_req_s']:.3g}-{hi:.3g} req/s (above {hi:.3g} the SLOs fail with "
           f"{conf:.0%} confidence)" if hi else "no rate failed with confidence")
    note = r.get("note") or "request count not grown (--max-requests = --requests)"
    return (f" with {conf:.0%} confidence ({ivs}; {int(r['runs'])} runs of {int(r['requests_per_run'])} "
            f"requests per probe); {cap}; {note}")


PLAN_FILES = ("plan.csv", "plan.json", "pareto.png")


def write_plan(res: PlanResult, keys: list[str], out: Path) -> list[Path]:
    """plan.csv, plan.json and pareto.png, written as one set into ``out`` (:class:`kvsim.outdir.OutputSet`)."""
    with OutputSet(out, PLAN_FILES) as d:
        res.table.to_csv(d / "plan.csv", index=False)
        (d / "plan.json").write_text(finite_json(plan_document(res), indent=2))
        plot_pareto(res, keys, d / "pareto.png")
    return [out / "plan.csv", out / "plan.json", out / "pareto.png"]
