"""``kvsim sweep``'s ``report.html``: the sweep's headline, its plot and its table.

The headline (:func:`headline`):

* when the grid sweeps ``workload.rate_req_s``: the configuration (one value
  of the other grid keys) whose throughput reached the most over the rates
  swept. Past a configuration's capacity its throughput levels off at that
  capacity, so the highest throughput each reached is the sweep's estimate of it
  (a lower bound when throughput was still rising with the rate at the top of
  the sweep, :func:`rising`; the reason says so). The highest rate that meets
  latency SLOs is ``kvsim plan``'s question, not the sweep's;
* otherwise the point with the highest throughput, and the reason names the
  point with the lowest normalized latency and the spread between them.

Points that failed (an ``error`` column) are listed, not scored.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from kvsim.labels import label, words
from kvsim.report.htmlkit import esc, page, png, table

KEPT_UP = 0.9
RISING = 0.5
RATE = "workload.rate_req_s"


def _name(row, keys: list[str]) -> str:
    return ", ".join(f"{words(k)} {row[k]}" for k in keys) or "the scenario"


def rising(g: pd.DataFrame) -> bool:
    """Whether throughput still grows with the offered rate at the top of the sweep: between the two highest
    rates it grows at least half as fast (log-log slope >= ``RISING``); with one rate, it kept up (>= 90%)."""
    r = pd.to_numeric(g[RATE], errors="coerce").to_numpy(dtype=float)     # (a rate may be given as "inf")
    order = np.argsort(r, kind="stable")
    r, x = r[order], g.throughput_req_s.to_numpy(dtype=float)[order]
    if len(g) < 2 or r[-2] <= 0 or x[-2] <= 0 or r[-1] <= r[-2]:
        return bool(x[-1] >= KEPT_UP * r[-1])
    return bool(x[-1] >= x.max() and np.log(max(x[-1], 1e-300) / x[-2]) / np.log(r[-1] / r[-2]) >= RISING)


def headline(df: pd.DataFrame, grid: list[str]) -> tuple[str, str]:
    ok = df[df.error == ""] if "error" in df else df
    if not len(ok):
        return "No point of the sweep ran", "Every point failed; the errors are in the table."
    if RATE in grid and "throughput_req_s" in ok:
        others = [k for k in grid if k != RATE]
        rows = []
        for _, g in (ok.groupby(others, sort=False) if others else [((), ok)]):
            top = g.loc[g.throughput_req_s.idxmax()]
            rows.append((_name(top, others), float(top.throughput_req_s), float(pd.to_numeric(top[RATE])),
                         rising(g)))
        rows.sort(key=lambda r: r[1], reverse=True)
        text = lambda r: (f"{r[0]}: {r[1]:.3g} req/s at {r[2]:g} req/s offered"
                          + (" (still rising with the rate: its capacity is higher)" if r[3] else ""))
        best = rows[0]
        return (f"{best[0]} serves the most: up to {best[1]:.3g} req/s",
                "Throughput levels off at a configuration's capacity once the offered rate passes it, so the "
                "highest throughput each reached estimates its capacity: " + "; ".join(map(text, rows)) + ". "
                "The highest rate meeting latency SLOs is kvsim plan's answer.")
    best = ok.loc[ok.throughput_req_s.idxmax()]
    fast = ok.loc[ok.normalized_latency_s.idxmin()] if "normalized_latency_s" in ok else best
    spread = ok.throughput_req_s.max() / max(ok.throughput_req_s.min(), 1e-12)
    return (f"Highest throughput: {_name(best, grid)}, {best.throughput_req_s:.3g} req/s",
            f"Throughput ranges {spread:.2f}x across the {len(ok)} points. Lowest normalized latency: "
            f"{_name(fast, grid)}, {fast.normalized_latency_s:.3g} s/token.")


def render_sweep(df: pd.DataFrame, grid: dict, scenario: str, seeds: int = 1, confidence: float = 0.95) -> str:
    from kvsim.plots import sweep_figure
    keys = list(grid)
    head, why = headline(df, keys)
    ok = df[df.error == ""] if "error" in df else df
    axes = "; ".join(f"{label(k)} = " + ", ".join(map(str, v)) for k, v in grid.items())
    sub = (f"Grid: {axes}. "
           f"{len(df)} points" + (f", each the mean of {seeds} seeds ({confidence:.0%} intervals as error bars)"
                                  if seeds > 1 else "") + ".")
    sections = []
    if len(ok):
        sections.append(("Metrics across the grid", png(sweep_figure(ok, keys), "sweep plots")))
    metrics = (["throughput_req_s", "normalized_latency_s", "ttft_p99_s"] if seeds > 1 else
               ["throughput_req_s", "throughput_tok_s", "normalized_latency_s", "ttft_p99_s", "tpot_p99_s",
                "avg_batched_requests", "preemptions"])
    cols = keys + [c for m in metrics for c in ((m, f"{m}_ci_lo", f"{m}_ci_hi") if seeds > 1 else (m,))]
    sections.append(("All points", table(df, cols + ["runs"], max_cols=14)
                     + '<p class="note">Every column is in sweep.csv.</p>'))
    if "error" in df and (df.error != "").any():
        bad = df[df.error != ""]
        sections.append(("Failed points", "<ul>" + "".join(
            f"<li>{esc(_name(r, keys))}: {esc(r.error)}</li>" for _, r in bad.iterrows()) + "</ul>"))
    return page(f"kvsim sweep: {scenario}", sub, head, why, sections)
