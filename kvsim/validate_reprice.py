"""Differential validation of the cost model alone: the engine's own decode steps priced one by one.

The other views compare the simulator's run with the engine's: a cell of ``step_kinds.md``, ``step_sizes.md`` or
the set's "Decode steps by batch and context" (:mod:`kvsim.validate_context`) holds the simulator's steps on one
side and the engine's on the other, and the two runs' schedules drift apart (a step of 4 rows at 80 tokens a row
in one may be 3 rows at 120 in the other). This view takes the engine's decode-only steps themselves, rebuilds each
one's rows and contexts from its requests (:func:`kvsim.calibrate.serving_runs.step_contexts`: only steps whose
rebuilt rows and KV match the step's own records, so no preemption, shared prefix or beam inside them) and prices
that exact step with the scenario's cost model (``decode_step_times``, the simulator's own decode price). What is
left is the cost model's error, with no scheduling in it.

Steps the engine prepared while the step before flew (``host_ahead``; all of a stepped run's) are the ones the
overlapped price is for; a step over :data:`kvsim.calibrate.serving_runs.ONE_OFF` times the median of its rows is
left out (a compile, a collection; counted in ``outliers``). ``kvsim validate`` writes, for the set,
``decode-repriced{-replay}.csv`` (per scenario and cell: steps, outliers, the mean measured and priced step) and a
section of ``validation{-replay}.md``: per (rows bin, context-per-row bin), pooled over scenarios, the priced mean
over the measured mean, less one; and, where a bin would hide a row count between two CUDA-graph batch sizes (a 3-row
step replays the 4-row graph; such steps ran dearer than the graph size's own in the Llama sets), the steps at up to
:data:`EXACT_ROWS` rows and :data:`EXACT_CTX` tokens a row by their exact row count, beside the batch of the default
graph ladder each replays (``decode-repriced-rows{-replay}.csv`` per scenario and row count, and a table in the same
section). Needs no torch.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from kvsim.calibrate.serving_runs import ONE_OFF, host_ahead, step_contexts
from kvsim.validate_context import ROW_BINS, binned, grid_lines, in_bin_order

CTX_BINS = ((0, 64), (65, 128), (129, 256), (257, 512), (513, 1024), (1025, 10**9))    # context tokens a row
CELL_COLUMNS = ("scenario", "rows", "ctx", "steps", "outliers", "mean_measured_s", "mean_priced_s")
SET_COLUMNS = ("rows", "ctx", "scenarios", "steps", "mean_measured_s", "rel_error")
EXACT_ROWS, EXACT_CTX = 17, 256     # the exact-rows view: row counts up to the 24-row graph's first, short contexts
ROW_COLUMNS = ("scenario", "n", "steps", "mean_measured_s", "mean_priced_s")


def priced_steps(cost, its: pd.DataFrame, reqs: pd.DataFrame) -> pd.DataFrame:
    """One row per engine decode-only step whose contexts are known and that was prepared ahead (all of them in a
    stepped run): ``n`` rows, ``ctx_per_row``, ``ctx_max`` (its longest row's context), ``measured_s``,
    ``priced_s`` (``cost.decode_step_times`` at its rows, context sum and longest context) and ``usual`` (within
    ``ONE_OFF`` times its rows' median)."""
    cols = ["n", "ctx_per_row", "ctx_max", "measured_s", "priced_s", "usual"]
    price = getattr(cost, "decode_step_times", None)
    if price is None or not len(its) or not len(reqs):
        return pd.DataFrame(columns=cols)
    ctx = step_contexts(its, reqs)
    ctx = ctx[ctx.valid] if len(ctx) else ctx
    if len(ctx):
        ahead = host_ahead(its.loc[ctx.index])
        ctx = ctx[ahead] if ahead is not None else ctx
    parts = []
    for n, g in ctx.groupby("n"):
        sums, top = g.ctx_sum.to_numpy(float), g.ctx_max.to_numpy(float)
        dur = its.loc[g.index, "duration_s"].to_numpy(float)
        parts.append(pd.DataFrame({"n": int(n), "ctx_per_row": sums / n, "ctx_max": top, "measured_s": dur,
                                   "priced_s": np.asarray(price(int(n), sums, top), dtype=float),
                                   "usual": dur <= ONE_OFF * float(np.median(dur))}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)


def scenario_line(steps: pd.DataFrame) -> str:
    """One line for a scenario's ``step_kinds.md``: its engine decode-only steps priced one by one, all cells
    together (the usual ones), or why there are none."""
    usual = steps[steps.usual.astype(bool)] if len(steps) else steps
    if not len(usual):
        return ("No decode-only step of the engine could be priced one by one (beam search, preemption or shared "
                "prefixes in them, or no requests in the records).")
    meas, priced = float(usual.measured_s.mean()), float(usual.priced_s.mean())
    return (f"The engine's own decode-only steps priced one by one at their rows and contexts "
            f"(`kvsim/validate_reprice.py`; {len(usual)} steps, {len(steps) - len(usual)} one-offs left out): "
            f"priced {priced * 1e3:.2f} ms against {meas * 1e3:.2f} ms measured on the mean, {priced / meas - 1:+.1%} "
            f"(no difference of schedule in it).")


def scenario_cells(name: str, steps: pd.DataFrame) -> pd.DataFrame:
    """Per (rows bin, context bin) of one scenario's priced steps: usual steps, outliers, mean measured and priced."""
    if not len(steps):
        return pd.DataFrame(columns=list(CELL_COLUMNS))
    t = steps.assign(rows=binned(steps.n.to_numpy(float), ROW_BINS), ctx=binned(steps.ctx_per_row.to_numpy(float),
                                                                            CTX_BINS))
    usual = t[t.usual.astype(bool)]
    out = usual.groupby(["rows", "ctx"]).agg(steps=("measured_s", "size"), mean_measured_s=("measured_s", "mean"),
                                             mean_priced_s=("priced_s", "mean"))
    odd = t[~t.usual.astype(bool)].groupby(["rows", "ctx"]).size().rename("outliers")
    out = out.join(odd, how="outer").fillna({"steps": 0, "outliers": 0}).reset_index()
    out[["steps", "outliers"]] = out[["steps", "outliers"]].astype(int)
    out.insert(0, "scenario", name)
    return out[list(CELL_COLUMNS)]


def scenario_rows(name: str, steps: pd.DataFrame) -> pd.DataFrame:
    """Per exact row count up to :data:`EXACT_ROWS`, of one scenario's usual priced steps at up to
    :data:`EXACT_CTX` tokens a row: steps, mean measured and priced."""
    if not len(steps):
        return pd.DataFrame(columns=list(ROW_COLUMNS))
    t = steps[steps.usual.astype(bool) & (steps.n <= EXACT_ROWS) & (steps.ctx_per_row <= EXACT_CTX)]
    out = t.groupby("n").agg(steps=("measured_s", "size"), mean_measured_s=("measured_s", "mean"),
                             mean_priced_s=("priced_s", "mean")).reset_index()
    out.insert(0, "scenario", name)
    return out[list(ROW_COLUMNS)].astype({"n": int, "steps": int})


def rows_markdown(cells: list[pd.DataFrame]) -> str:
    """The exact-rows table: per row count, pooled over scenarios (step-weighted), the CUDA-graph batch it replays,
    steps, the mean measured and priced step and the error; row counts with fewer than 20 steps left out."""
    from kvsim.graph_sizes import graph_batch_sizes, padded
    c = pd.concat([x for x in cells if len(x)], ignore_index=True) if any(len(x) for x in cells) else None
    lines = ["", f"By exact rows, at up to {EXACT_CTX} tokens a row (each step's graph batch beside it; "
             "`decode-repriced-rows.csv`):", ""]
    if c is None:
        return "\n".join(lines + ["No such step."]) + "\n"
    lines += ["| rows | graph batch | steps | measured (ms) | priced (ms) | error |", "|---|---|---|---|---|---|"]
    sizes = graph_batch_sizes(256)
    for n, x in c.groupby("n"):
        steps, meas, priced = _pooled(x)
        if steps < 20:
            continue
        lines.append(f"| {int(n)} | {padded(int(n), sizes)} | {steps} | {meas * 1e3:.3f} | {priced * 1e3:.3f} | "
                     f"{priced / meas - 1:+.1%} |")
    return "\n".join(lines) + "\n"


def set_table(cells: list[pd.DataFrame]) -> pd.DataFrame:
    """Per cell, pooled over scenarios (step-weighted): scenarios, steps, the mean measured step and the priced mean
    over it less one (rows and context bins in order; empty cells left out)."""
    c = pd.concat(cells, ignore_index=True) if cells else pd.DataFrame(columns=list(CELL_COLUMNS))
    c = c[c.steps > 0]
    rows = []
    for r, k, x in in_bin_order(c, "ctx", CTX_BINS):
        steps, meas, priced = _pooled(x)
        rows.append({"rows": r, "ctx": k, "scenarios": len(x), "steps": steps, "mean_measured_s": meas,
                     "rel_error": priced / meas - 1.0})
    return pd.DataFrame(rows, columns=list(SET_COLUMNS))


def _pooled(x: pd.DataFrame) -> tuple[int, float, float]:
    """(steps, mean measured, mean priced) of per-scenario rows pooled step-weighted."""
    w = x.steps.to_numpy(float)
    return int(w.sum()), float(np.dot(w, x.mean_measured_s)) / w.sum(), float(np.dot(w, x.mean_priced_s)) / w.sum()


def markdown(table: pd.DataFrame) -> str:
    lines = ["", "## Engine decode steps priced one by one", "",
             "The engine's decode-only steps (each scenario's first run), each priced by the cost model at its own "
             "rows and contexts, so no difference of schedule is in it: by rows and context tokens a row, the priced "
             "mean over the measured mean, less one, pooled over scenarios (steps in brackets; only steps whose "
             "contexts the records pin down, prepared ahead where the run overlapped, none over "
             f"{ONE_OFF:g}x its rows' median; `kvsim/validate_reprice.py`, the cells in `decode-repriced.csv`).", ""]
    if not len(table):
        return "\n".join(lines + ["No step could be priced (beam search, preemption or shared prefixes in every "
                                  "scenario, or records without requests)."]) + "\n"
    lines += grid_lines(table, "ctx", CTX_BINS, "context a row", lambda x: f"{x['rel_error']:+.1%} ({int(x['steps'])})")
    return "\n".join(lines) + "\n"
