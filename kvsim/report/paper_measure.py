"""The headline number of each ``kvsim paper`` experiment, read where the paper reads it.

* Fig. 12 — per system, the highest rate whose mean normalized latency stays under
  :data:`LATENCY_THRESHOLD_S` (interpolated between swept rates), and paged / system from those
  rates; also at the :data:`SENSITIVITY_S` thresholds, to show how much the choice matters.
* Fig. 13 — average batched requests at the paper's rates (:data:`FIG13_RATES`).
* Fig. 2 — the KV split while the cache is full (computed by :func:`kvsim.paper.fig2_full_cache`).
* Fig. 18a — the paging overhead of the project's own decode kernel
  (:mod:`kvsim.report.kernel_overhead`).

Every reading is a plain JSON-able value; a rate or ratio outside the sweep is a bound
(``{"value": v, "bound": ">="}``, see :mod:`kvsim.report.paper_readings`).
"""
from __future__ import annotations

import pandas as pd

from kvsim.report.kernel_overhead import fig18a_reading
from kvsim.report.paper_readings import Reading, ratios_at_latency, value_at_rate

LATENCY_THRESHOLD_S = 0.1        # s/token: ~3-4x the unloaded latency, where the curves of Fig. 12 turn up
SENSITIVITY_S = (0.05, 0.2)
FIG13_RATES = {"sharegpt": 2.0, "alpaca": 30.0}     # Fig. 13 caption: ShareGPT 2 req/s, Alpaca 30 req/s
RATE, SYSTEM = "workload.rate_req_s", "engine.allocator"


def _r(x: Reading) -> dict:
    return {"value": x.value, "bound": x.bound, "text": str(x)}


def fig12(df: pd.DataFrame, threshold: float = LATENCY_THRESHOLD_S) -> dict:
    """Rates at equal latency and paged / system ratios for one dataset's sweep."""
    rates, ratios = ratios_at_latency(df, threshold, SYSTEM)
    return {"threshold_s": threshold, "rates": {k: _r(v) for k, v in rates.items()},
            "ratios": {k: _r(v) for k, v in ratios.items()}}


def fig13(df: pd.DataFrame, rate: float, systems=None) -> dict:
    """Average batched requests per system at ``rate`` and paged / system; ``peak``: per system, the largest
    paged / system over the rates both swept, and where (the ratio depends on the rate it is read at)."""
    batch = {k: value_at_rate(g[RATE], g["avg_batched_requests"], rate)
             for k, g in df.groupby(SYSTEM, sort=False) if systems is None or k in systems}
    ref = batch.get("paged", float("nan"))
    b = df.pivot_table(index=RATE, columns=SYSTEM, values="avg_batched_requests")
    peak = {}
    for k in batch:
        if k != "paged" and "paged" in b:
            r = (b["paged"] / b[k]).dropna()
            if len(r):
                peak[k] = {"ratio": float(r.max()), "rate": float(r.idxmax()), "rates": len(r)}
    return {"rate": rate, "batch": batch, "ratios": {k: ref / v for k, v in batch.items() if k != "paged" and v > 0},
            "peak": peak}


def _gain(df: pd.DataFrame, col: str) -> dict:
    """Fig. 14: paged / Orca-Oracle throughput (tokens/s) at each width."""
    p = df.pivot_table(index=col, columns=SYSTEM, values="throughput_tok_s")
    return {int(k): float(r["paged"] / r["orca_oracle"]) for k, r in p.iterrows()}


def measured(res: dict, threshold: float = LATENCY_THRESHOLD_S, rate_scale: float = 1.0) -> dict:
    """Every figure's reading (see module doc) from the frames of :func:`kvsim.paper.experiments`;
    ``rate_scale`` is the one the sweeps ran with (the Fig. 13 rates are scaled by it)."""
    f2 = res["fig2"].set_index(SYSTEM)
    parts = {"used": "mem_used_frac", "internal": "mem_internal_frag_frac", "reserved": "mem_reserved_frac",
             "external": "mem_external_frag_frac", "free": "mem_free_frac"}
    par, beam = res["fig14_parallel"], res["fig14_beam"]
    pp = par[par[SYSTEM] == "paged"].set_index("workload.n").sharing_saved_frac
    bp = beam[beam[SYSTEM] == "paged"].set_index("workload.beam_width").sharing_saved_frac
    f19 = (res["fig19"].pivot_table(index="engine.block_size", columns="mode", values="normalized_latency_s")
           if "fig19" in res else pd.DataFrame(columns=["swap", "recompute"]))
    f16 = res.get("fig16", pd.DataFrame(columns=["shots", RATE, "engine.enable_prefix_caching", "throughput_tok_s"]))
    top = f16[f16[RATE] == f16[RATE].max()]
    on = lambda g, v: g[g["engine.enable_prefix_caching"] == v].throughput_tok_s.iloc[0]  # noqa: E731
    return {
        "fig2": {"rate": float(f2[RATE].iloc[0]), "free_below_frac": float(f2["free_below_frac"].iloc[0]),
                 "split": {a: {**{k: float(r[c]) for k, c in parts.items()}, "iterations": int(r["iterations"]),
                               "time_frac": float(r["time_frac"]), "run_used": float(r["run_mem_used_frac"])}
                           for a, r in f2.iterrows()}},
        "fig12": {"sharegpt": fig12(res["fig12_sharegpt"], threshold),
                  "alpaca": fig12(res["fig12_alpaca"], threshold),
                  "sensitivity": {str(t): fig12(res["fig12_sharegpt"], t)["ratios"] for t in SENSITIVITY_S}},
        "static_batch": _static_batch(res["fig12_sharegpt"], threshold),
        "fig13": {d: fig13(res[f"fig12_{d}"], round(r * rate_scale, 6),
                           systems=("paged", "orca_oracle", "orca_pow2", "orca_max"))
                  for d, r in FIG13_RATES.items()},
        "fig14": {"parallel": _gain(par, "workload.n"), "beam": _gain(beam, "workload.beam_width")},
        "fig15_parallel": {"min": float(pp.min()), "max": float(pp.max()),
                           "by_n": {int(k): float(v) for k, v in pp.items()}},
        "fig15_beam": {"min": float(bp.min()), "max": float(bp.max()),
                       "by_width": {int(k): float(v) for k, v in bp.items()}},
        "fig15_lengths": _fig15_lengths(res),
        "fig16": {s: float(on(g, True) / on(g, False)) for s, g in top.groupby("shots")},
        "fig17": fig12(res["fig17"], threshold),
        "fig18a": fig18a_reading(),
        "fig18b": {r.dataset: int(r.block_size) for r in res["fig18b_choice"].itertuples()},
        "fig18b_searched": str(res["fig18b_choice"]["searched"].iloc[0]) if "searched" in res["fig18b_choice"] else "",
        "rate_scale": rate_scale,
        "fig19": {int(b): float(r["swap"] / r["recompute"]) for b, r in f19.iterrows()},
        **_v0_v1(res, threshold),
    }


def _static_batch(df: pd.DataFrame, threshold: float) -> dict:
    """The static baseline's average batch at its rate at ``threshold`` and the largest over its sweep."""
    g = df[df[SYSTEM] == "static (FT-like)"]
    if g.empty:
        return {}
    rate = fig12(g, threshold)["rates"].get("static (FT-like)", {})
    at = value_at_rate(g[RATE], g["avg_batched_requests"], rate["value"]) if rate.get("bound") == "=" else float("nan")
    return {"at_rate": float(at), "max": float(g["avg_batched_requests"].max())}


def _fig15_lengths(res: dict) -> dict:
    """Fig. 15's prompt-share check (:mod:`kvsim.report.paper_fig15`) and the beam saving by keep probability."""
    out: dict = {}
    if "fig15_prompt_share" in res:
        t = res["fig15_prompt_share"]
        out.update({k: float(t[k].iloc[0]) for k in ("share", "mean_prompt", "mean_output", "prompt_ge_block_frac")},
                   block_size=int(t["block_size"].iloc[0]), requests=int(t["requests"].iloc[0]),
                   predicted={int(r.n): float(r.predicted) for r in t.itertuples()},
                   simulated={int(r.n): float(r.simulated) for r in t.itertuples()})
    if "fig15_beam_keep" in res:
        k = res["fig15_beam_keep"]
        out["beam_width"] = int(k["workload.beam_width"].iloc[0])
        out["beam_keep"] = {float(r["engine.beam_keep_prob"]): float(r["sharing_saved_frac"]) for _, r in k.iterrows()}
    return out


def _v0_v1(res: dict, threshold: float) -> dict:
    """V0 vs V1 (:mod:`kvsim.report.paper_v1`) and sliding window (:mod:`kvsim.report.paper_window`) readings."""
    from kvsim.report import paper_v1, paper_window
    out = {}
    if "v1_parallel" in res:
        out["v1"] = paper_v1.measure(res, threshold)
    if "window" in res:
        out["window"] = paper_window.measure(res, threshold)
    from kvsim.report.blocksize_v1 import v1_reason
    tables = {d: res[f"fig18b_rate_{d}"] for d in ("sharegpt", "alpaca") if f"fig18b_rate_{d}" in res}
    out["fig18b_v1"] = {d: {**t[["block_size", "max_rate_req_s", "max_rate_v1"]].to_dict(orient="list"),
                            "reason": v1_reason(t)} for d, t in tables.items() if "max_rate_v1" in t}
    return out
