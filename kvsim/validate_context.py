"""Differential validation over a whole set: decode-only steps by batch and by the context each request holds.

A scenario's ``step_sizes.md`` bins decode steps by rows alone, and a single scenario holds few steps of each
context. Pooled over a set, the cut by context shows what a per-row table hides: on the overlapped Llama-3-8B
sets (H100 and H200, 2026-12-06/07) decode steps of 3-8 rows whose requests held at most 256 tokens each were
priced 1.2-2.5% fast while those holding 512-1,024 tokens were within 0.7% (:mod:`kvsim.calibrate.short_fit` has
the story). ``kvsim validate`` writes, for the set, ``decode-context{-replay}.csv`` and a section of
``validation{-replay}.md``: per (rows bin, KV-per-request bin), over the scenarios (their first engine run) with at least
:data:`MIN_CELL_STEPS` decode-only steps there on both sides, the median of their errors of the mean step, the
scenarios counted and the steps on each side. KV per request is ``mem_used / running`` while the step ran
(:func:`kvsim.validate_sizes.kv_per_request`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from kvsim.validate_diff import classify_steps
from kvsim.validate_sizes import kv_per_request

MIN_CELL_STEPS = 20
ROW_BINS = ((1, 1), (2, 2), (3, 4), (5, 8), (9, 16), (17, 32), (33, 64), (65, 10**9))
KV_BINS = ((0, 128), (129, 256), (257, 512), (513, 1024), (1025, 10**9))
CELL_COLUMNS = ("scenario", "rows", "kv", "steps_predicted", "steps_measured", "mean_predicted_s", "mean_measured_s")
SET_COLUMNS = ("rows", "kv", "scenarios", "median_rel_error", "steps_predicted", "steps_measured")


def label(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}+" if hi >= 10**9 else f"≤{hi}" if lo == 0 else f"{lo}-{hi}"


def binned(x: np.ndarray, bins) -> np.ndarray:
    out = np.full(len(x), "", dtype=object)
    for lo, hi in bins:
        out[(x >= lo) & (x <= hi)] = label(lo, hi)
    return out


def in_bin_order(cells: pd.DataFrame, col: str, bins):
    """``(rows label, col label, its cells)`` for each (rows bin, ``col`` bin) ``cells`` holds, rows bins then
    ``bins`` in order (the set tables of this module and :mod:`kvsim.validate_reprice`)."""
    for r in (label(*b) for b in ROW_BINS):
        for k in (label(*b) for b in bins):
            x = cells[(cells.rows == r) & (cells[col] == k)]
            if len(x):
                yield r, k, x


def grid_lines(table: pd.DataFrame, col: str, bins, corner: str, cell) -> list[str]:
    """A set table as a Markdown grid: a line per rows bin, a column per ``col`` bin present, ``cell(row)`` in each
    filled one, "–" elsewhere; ``corner`` names the columns."""
    cols = [label(*b) for b in bins if label(*b) in set(table[col])]
    lines = [f"| rows \\ {corner} | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for r in dict.fromkeys(table.rows):
        part = table[table.rows == r].set_index(col)
        lines.append(f"| {r} | " + " | ".join(cell(part.loc[k]) if k in part.index else "–" for k in cols) + " |")
    return lines


def _side(its: pd.DataFrame) -> pd.DataFrame:
    sel = (classify_steps(its) == "decode-only").to_numpy()
    rows = its.decode_seqs.to_numpy(dtype=float)[sel]
    kv = kv_per_request(its)[sel]
    return pd.DataFrame({"rows": binned(rows, ROW_BINS), "kv": binned(np.nan_to_num(kv, nan=-1.0), KV_BINS),
                         "dur": its.duration_s.to_numpy(dtype=float)[sel]})


def scenario_cells(name: str, sim_its: pd.DataFrame, eng_its: pd.DataFrame) -> pd.DataFrame:
    """One row per (rows bin, KV bin) either side has decode-only steps in: steps and mean step on each side."""
    sides = []
    for side, its in (("predicted", sim_its), ("measured", eng_its)):
        t = _side(its)
        t = t[(t.rows != "") & (t.kv != "")]
        sides.append(t.groupby(["rows", "kv"]).dur.agg(["size", "mean"]).rename(
            columns={"size": f"steps_{side}", "mean": f"mean_{side}_s"}))
    out = sides[0].join(sides[1], how="outer").reset_index()
    out.insert(0, "scenario", name)
    for c in ("steps_predicted", "steps_measured"):
        out[c] = out[c].fillna(0).astype(int)
    return out[list(CELL_COLUMNS)]


def set_table(cells: list[pd.DataFrame]) -> pd.DataFrame:
    """Per cell, over the scenarios with :data:`MIN_CELL_STEPS` steps on both sides: their count, the median of
    their errors of the mean step, and their steps (rows and KV bins in order; cells no scenario fills left out)."""
    if not cells:
        return pd.DataFrame(columns=list(SET_COLUMNS))
    c = pd.concat(cells, ignore_index=True)
    c = c[(c.steps_predicted >= MIN_CELL_STEPS) & (c.steps_measured >= MIN_CELL_STEPS)]
    c = c.assign(err=c.mean_predicted_s / c.mean_measured_s - 1.0)
    rows = [{"rows": r, "kv": k, "scenarios": len(x), "median_rel_error": float(x.err.median()),
             "steps_predicted": int(x.steps_predicted.sum()), "steps_measured": int(x.steps_measured.sum())}
            for r, k, x in in_bin_order(c, "kv", KV_BINS)]
    return pd.DataFrame(rows, columns=list(SET_COLUMNS))


def markdown(table: pd.DataFrame) -> str:
    lines = ["", "## Decode steps by batch and context", "",
             "Decode-only steps of the whole set (each scenario's first engine run) by decode rows and the KV tokens "
             f"each running request held: the median over scenarios (those with {MIN_CELL_STEPS}+ such steps on "
             "both sides; their count in brackets) of the simulator's error of the mean step "
             "(`kvsim/validate_context.py`; the cells in `decode-context.csv`).", ""]
    if not len(table):
        return "\n".join(lines + ["No cell has enough steps."]) + "\n"
    lines += grid_lines(table, "kv", KV_BINS, "KV per request",
                        lambda x: f"{x['median_rel_error']:+.1%} ({int(x['scenarios'])})")
    return "\n".join(lines) + "\n"
