"""Differential validation by step size: the step-kind table cut by how big each step is.

A mean over all decode steps hides where the simulator departs: on the H200, decode steps of 1-4 rows were
priced within 1% while those of 9-24 rows came out 3-6% fast, and that alone made a near-saturated
scenario's latency 30% off. ``kvsim validate`` writes, per scenario, ``step_sizes.csv`` / ``step_sizes.md``:

* ``decode-only`` steps binned by decode rows (``decode_seqs``): 1, 2, 3-4, 5-8, 9-16, ... 129-256, >256;
* ``prefill-only`` and ``mixed`` steps binned by prompt tokens in the step (``prefill_tokens``): 1-64,
  65-128, ... 2,049-4,096, >4,096.

Per bin: steps on each side, median and mean duration predicted (simulator) and measured (engine), the
error of the means, and the median KV tokens held per running request (``mem_used / running``: the KV
resident while the step ran, over the requests holding it) on each side, so a bin whose two sides hold
different contexts is visible as such rather than read as a pricing error. Errors are left out (NaN, "–") when either side has fewer than :data:`MIN_STEPS` steps.
Swap and copy steps are their own kinds (:func:`kvsim.validate_diff.classify_steps`) and are not binned.

The same file lists the engine's **outlier steps** (:func:`outlier_steps`, also ``step_outliers.csv``): steps
that took more than :data:`OUTLIER_FACTOR` times the typical step of their kind and size bin (the simulator's
median there, else the engine's own). One-off work on the clock lands there rather than in a bin's mean: on
the H200, a Triton kernel compiled in the middle of a static batch (a 604 ms step priced at 51 ms) and in a
beam run's first copy-on-write step (390 ms).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from kvsim.validate_diff import classify_steps, rel_err

MIN_STEPS = 5
OUTLIER_FACTOR = 4.0
OUTLIER_ROWS = 10          # listed in the markdown (the CSV has them all)
ROW_EDGES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TOKEN_EDGES = (64, 128, 256, 512, 1024, 2048, 4096)
SIZED_KINDS = (("decode-only", "decode_seqs", "decode rows", ROW_EDGES),
               ("prefill-only", "prefill_tokens", "prompt tokens", TOKEN_EDGES),
               ("mixed", "prefill_tokens", "prompt tokens", TOKEN_EDGES))
SIZE_COLUMNS = ("kind", "size_by", "bin", "lo", "hi", "steps_predicted", "steps_measured", "p50_predicted_s",
                "p50_measured_s", "mean_predicted_s", "mean_measured_s", "rel_error_mean",
                "kv_per_running_predicted", "kv_per_running_measured")


def bin_labels(edges: tuple[int, ...]) -> list[tuple[str, int, float]]:
    """``(label, lo, hi)`` per bin: sizes ``lo..hi`` inclusive; the last bin is open (``hi`` inf)."""
    out, lo = [], 1
    for e in edges:
        out.append((str(e) if e == lo else f"{lo}-{e}", lo, float(e)))
        lo = e + 1
    out.append((f">{edges[-1]}", lo, float("inf")))
    return out


def kv_per_request(its: pd.DataFrame) -> np.ndarray:
    """Per step, the KV tokens held per running request (``mem_used / running``; NaN where none ran or the records
    lack the columns)."""
    if "mem_used" not in its.columns or "running" not in its.columns:
        return np.full(len(its), np.nan)
    req = its.running.to_numpy(dtype=float)
    return np.where(req > 0, its.mem_used.to_numpy(dtype=float) / np.where(req > 0, req, 1), np.nan)


def _in_bin(its: pd.DataFrame, kinds: pd.Series, kind: str, col: str | None, lo: float, hi: float) -> np.ndarray:
    """The steps of ``kind`` whose ``col`` lies in ``lo..hi`` (every step of the kind without ``col``; none
    when the records lack the column)."""
    sel = (kinds == kind).to_numpy()
    if col is None:
        return sel
    if col not in its.columns:
        return np.zeros(len(its), dtype=bool)
    size = its[col].to_numpy(dtype=float)
    return sel & (size >= lo) & (size <= hi)


def _side(its: pd.DataFrame, kinds: pd.Series, kind: str, col: str, lo: int, hi: float):
    sel = _in_bin(its, kinds, kind, col, lo, hi)
    return its.duration_s.to_numpy(dtype=float)[sel], kv_per_request(its)[sel]


def _median(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(np.median(x)) if len(x) else float("nan")


def step_size_table(sim_its: pd.DataFrame, eng_its: pd.DataFrame) -> pd.DataFrame:
    """One row per (kind, size bin) that either side has steps in."""
    sk, ek = classify_steps(sim_its), classify_steps(eng_its)
    rows = []
    for kind, col, by, edges in SIZED_KINDS:
        for label, lo, hi in bin_labels(edges):
            p, pc = _side(sim_its, sk, kind, col, lo, hi)
            m, mc = _side(eng_its, ek, kind, col, lo, hi)
            if not len(p) and not len(m):
                continue
            enough = len(p) >= MIN_STEPS and len(m) >= MIN_STEPS
            mp = float(p.mean()) if len(p) else float("nan")
            mm = float(m.mean()) if len(m) else float("nan")
            rows.append({"kind": kind, "size_by": by, "bin": label, "lo": lo, "hi": hi,
                         "steps_predicted": len(p), "steps_measured": len(m),
                         "p50_predicted_s": _median(p), "p50_measured_s": _median(m),
                         "mean_predicted_s": mp, "mean_measured_s": mm,
                         "rel_error_mean": rel_err(mp, mm) if enough else float("nan"),
                         "kv_per_running_predicted": _median(pc), "kv_per_running_measured": _median(mc)})
    return pd.DataFrame(rows, columns=list(SIZE_COLUMNS))


def step_size_markdown(name: str, table: pd.DataFrame) -> str:
    def ms(x) -> str:
        return "–" if pd.isna(x) else f"{1e3 * x:.2f}"

    def tok(x) -> str:
        return "–" if pd.isna(x) else f"{x:,.0f}"

    lines = [f"# Step sizes: {name}", "",
             "Step duration in ms by step size, simulator (sim) vs engine (eng); KV/req is the median KV tokens "
             f"held per running request. Errors need {MIN_STEPS} steps on both sides.", ""]
    if not len(table):
        return "\n".join(lines + ["No decode, prefill or mixed steps on either side."]) + "\n"
    for kind, part in table.groupby("kind", sort=False):
        lines += [f"## {kind} (by {part.size_by.iloc[0]})", "",
                  "| size | steps sim | steps eng | p50 sim | p50 eng | mean sim | mean eng | mean error "
                  "| KV/req sim | KV/req eng |", "|---|---|---|---|---|---|---|---|---|---|"]
        for _, r in part.iterrows():
            err = "–" if pd.isna(r.rel_error_mean) else f"{r.rel_error_mean:+.1%}"
            lines.append(f"| {r.bin} | {int(r.steps_predicted)} | {int(r.steps_measured)} | {ms(r.p50_predicted_s)} | "
                         f"{ms(r.p50_measured_s)} | {ms(r.mean_predicted_s)} | {ms(r.mean_measured_s)} | {err} | "
                         f"{tok(r.kv_per_running_predicted)} | {tok(r.kv_per_running_measured)} |")
        lines.append("")
    return "\n".join(lines)


OUTLIER_COLUMNS = ("iter", "start_s", "kind", "bin", "size", "duration_s", "typical_s", "typical_from", "ratio",
                   "excess_s")


def outlier_steps(sim_its: pd.DataFrame, eng_its: pd.DataFrame) -> pd.DataFrame:
    """Engine steps over :data:`OUTLIER_FACTOR` x the typical step of their kind and size bin (see module doc),
    largest excess first; copy and swap steps form one bin each."""
    sk, ek = classify_steps(sim_its), classify_steps(eng_its)
    dur = eng_its.duration_s.to_numpy(dtype=float)
    iters = eng_its["iter"].to_numpy() if "iter" in eng_its.columns else np.arange(len(eng_its))
    start = eng_its["start_s"].to_numpy(dtype=float) if "start_s" in eng_its.columns else np.full(len(dur), np.nan)
    groups = [(k, col, edges) for k, col, _, edges in SIZED_KINDS] + [("copy", None, None), ("swap", None, None)]
    rows = []
    for kind, col, edges in groups:
        if col is not None and col not in eng_its.columns:
            continue
        size = eng_its[col].to_numpy(dtype=float) if col is not None else np.full(len(dur), np.nan)
        for label, lo, hi in bin_labels(edges) if edges else [("all", 0, float("inf"))]:
            e_sel = _in_bin(eng_its, ek, kind, col, lo, hi)
            sim_d = sim_its.duration_s.to_numpy(dtype=float)[_in_bin(sim_its, sk, kind, col, lo, hi)]
            if len(sim_d) >= MIN_STEPS:
                typical, source = float(np.median(sim_d)), "simulator"
            elif e_sel.sum() >= MIN_STEPS:
                typical, source = float(np.median(dur[e_sel])), "engine"
            else:
                continue
            for i in np.flatnonzero(e_sel & (dur > OUTLIER_FACTOR * typical)):
                rows.append({"iter": int(iters[i]), "start_s": float(start[i]), "kind": kind, "bin": label,
                             "size": float(size[i]), "duration_s": float(dur[i]), "typical_s": typical,
                             "typical_from": source, "ratio": float(dur[i] / typical) if typical > 0 else float("inf"),
                             "excess_s": float(dur[i] - typical)})
    out = pd.DataFrame(rows, columns=list(OUTLIER_COLUMNS))
    return out.sort_values("excess_s", ascending=False, kind="stable").reset_index(drop=True)


def outlier_markdown(table: pd.DataFrame) -> str:
    head = [f"## Engine steps over {OUTLIER_FACTOR:g}x the typical step of their kind and size", ""]
    if not len(table):
        return "\n".join(head + ["None.", ""])
    head += [f"{len(table)} step(s), {table.excess_s.sum():.3f} s beyond their typical steps (the simulator's median in "
             f"the bin, else the engine's); the {min(len(table), OUTLIER_ROWS)} largest:", "",
             "| iter | start (s) | kind | bin | size | ms | typical ms | from | ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    for _, r in table.head(OUTLIER_ROWS).iterrows():
        size = "–" if pd.isna(r["size"]) else f"{r['size']:,.0f}"
        head.append(f"| {r['iter']} | {r.start_s:.3f} | {r.kind} | {r.bin} | {size} | {1e3 * r.duration_s:.1f} | "
                    f"{1e3 * r.typical_s:.2f} | {r.typical_from} | {r.ratio:.1f} |")
    return "\n".join(head + [""])
