"""Decode steps at short contexts measured on the engine: ``decode_serving[bs].short`` (recorded; not priced).

Why. The serving runs that set each row's ``extra_s`` hold ~600 tokens a row (:mod:`kvsim.calibrate.serving_setup`'s
lengths), and the decode grid's price falls from there to its first column (128 tokens a row) by 0.1-0.25 ms at 2-8
rows. The engine's steps did not fall with it: on one H100 (2026-12-07, ``validation/H100-async-1207``, git history
at commit 98cc84c), h08's 3-4-row steps at ~74 tokens a row took 6.76 ms against 6.82 ms for the calibration's 4-row
serving run at ~600, and v26's 4-row beam steps at under 100 tokens a row 7.16-7.29 ms against 7.21 ms for the
calibration's beam run at ~430, each priced 0.2-0.4 ms less. Over the overlapped Llama-3-8B sets, decode-only steps
of 3-8 rows whose requests held at most 256 tokens each were priced 1.2-2.5% fast (the median over scenarios, in the
H100 set and in the H200 one), those holding 512-1,024 tokens within 0.7%; at 9-16 rows the cards disagree (H100
-1.6% to -2.6%, H200 +0.3% to +1.1%), and OPT-13B on an H100 showed no such pattern. Whether the grid's short
columns or the serving extra's context is the cause needs the engine at short contexts on the card the profile
measured, which this fit records.

What. The serving fit runs :data:`SHORT_ROWS` once more on short requests (``serving_setup.SHORT_*``: prompts of
8-64 tokens, outputs of 16-64, a closed loop of n in flight), and records per row the mean of its usual decode
steps prepared ahead (all its usual steps in a stepped calibration) beyond what the profile prices them at (grid,
spread, step overhead and the row's own ``extra_s``), with their mean context a row::

    "short": {"num_seqs": [4, 16], "beyond_s": [...], "ctx_per_row": [...], "steps": [...]}

A positive ``beyond_s`` is what the profile leaves out at those contexts; the rows' own ``ctx_per_row``
(``decode_serving[bs].ctx_per_row``, the mean context a row of the runs each ``extra_s`` comes from) is the other end.

What it found. First run on another H100 (2026-12-07 05:40, ``calibrate/profiles/H100/llama-3-8b-async-1207b.json``):
+0.019 ms at 4 rows (~54 tokens a row, +0.3% of the step) and -0.104 ms at 16 (~58 tokens, -1.3%), and that card's
validation set (``validation/H100-async-1207b``) priced its short-context decode steps within ~2% either way (3-4
rows at <=128 tokens a request -1.7%, 9-16 rows +0.1% to +0.6%): the earlier set's gap went with that card and
calibration (its engine steps ran 0.5-2% slower than the second card's in the same rows and contexts, over decode
grids that matched within 0.2% at 4-16 rows), not with short contexts. So the cost model does not read ``short``:
it stays in the profile as a check a later calibration can read (a ``beyond_s`` of several percent would be the
evidence to price it).

Second run, OPT-13B on a third H100 (2026-12-07 08:05, ``calibrate/profiles/H100/opt-13b-async-1207c.json``, in git
history at commit b1d3dba):
-0.164 ms at 4 rows (~54 tokens a row, -1.5%) and -0.377 ms at 16 (~58 tokens, -3.4%). Its set
(``validation/H100-async-opt-1207c``) agrees in v09 (n = 4, Alpaca lengths: 9-16-row steps 11.15 ms in the engine,
11.70 priced; the 16-row short run 11.17) and less so in v06 (the same lengths, n = 1: 5-8 rows priced -2.5%, 9-16
+1.9%, 17-32 +0.5%, on a run whose card read 1.014x slow). Part of it is the serving extra's jump from 8 rows
(-0.32 ms) to 9 (+0.47), fitted at ~550 tokens a row, which neither scenario's engine steps show at ~60. Still not
priced: one model, one card, and the two scenarios pull apart; pricing it needs a rule for rows other than 4 and 16
and for contexts between the short runs' and the fit's, which two points a model do not pin down. So the short runs
now also take 8 and 9 rows (:data:`SHORT_ROWS`), either side of the graph ladder's 8/16 step where the fitted extra
jumps; scaling each row's extra by the step's attention instead was tried on the committed sets' steps and priced
them worse (``benchmarks/engine/extra_scaling_check.py``).

Third run, OPT-13B on a fourth H100 (2026-12-07 09:47, ``calibrate/profiles/H100/opt-13b-async-1207d.json``, the
decode grid now timed at 32 and 64 tokens a row too): +0.058 / +0.273 / -0.365 / -0.051 ms at 4 / 8 / 9 / 16 rows
(~54-58 tokens a row); Llama-3-8B on the same card right after: +0.017 / -0.061 / -0.102 / -0.111 ms. The set
(``validation/H100-async-opt-1207d``) prices v09's short steps right (mean latency -0.4%). Priced as measured -- the
row's extra moved linearly in context from the fit's ``ctx_per_row`` to the short run's, interpolated in rows, none
above the last short row -- the set's engine decode steps came out no better (mean |step error| 1.28% -> 1.20%, the
(rows, context) cells weighted by steps 0.88% -> 0.88%: 1-8 rows mended, 9-16 rows at <=128 tokens -0.1% -> -1.3%,
the 9-row point pulling 10-15 rows with it). Still recorded, not priced. Needs no torch.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from kvsim.calibrate import serving_runs as SR

SHORT_ROWS = (4, 8, 9, 16)   # 8 and 9 since 2026-12-07: OPT-13B's fitted extra jumps from -0.32 ms at 8 rows to
#                              +0.47 at 9 (at ~550 tokens a row), which its validation set's 8- and 9-16-row steps at
#                              ~200 tokens did not show (benchmarks/engine/extra_scaling_check.py's data): measured at
#                              short contexts on both sides of the graph ladder's 8/16 step, ~4 s a run
MIN_SHORT_STEPS = 20        # usual steps (prepared ahead, where the run says) at exactly n rows a row needs


def short_row(cost, its: pd.DataFrame, reqs: pd.DataFrame, n: int, overhead, extra) -> tuple | None:
    """``(n, beyond_s, ctx_per_row, steps)`` of one short run at ``n`` rows (module doc), or None when it has fewer
    than :data:`MIN_SHORT_STEPS` usual steps there. ``cost``: the bare calibrated model of the fit (grid and spread,
    no step overhead); ``overhead(n)``, ``extra(n)``: the step overhead and the row's fitted extra."""
    steps = SR.row_steps(cost, its, reqs, n, MIN_SHORT_STEPS)
    if steps is None:
        return None
    m = steps.usual if steps.ahead is None else steps.usual & steps.ahead
    if m.sum() < MIN_SHORT_STEPS:
        return None
    ref = steps.grid + steps.spread + float(overhead(n)) + float(extra(n))
    return int(n), float(np.mean((steps.dur - ref)[m])), float(np.mean(steps.sums[m])) / n, int(m.sum())


def fit_short(cost, runs: dict[int, tuple[pd.DataFrame, pd.DataFrame]], overhead, extra) -> dict | None:
    """``decode_serving[bs].short`` from ``{n: (iterations, requests)}`` of the short runs (module doc), or None when
    no row has enough steps."""
    rows = [r for n, (its, reqs) in sorted(runs.items()) if (r := short_row(cost, its, reqs, n, overhead, extra))]
    if not rows:
        return None
    return {"num_seqs": [r[0] for r in rows], "beyond_s": [r[1] for r in rows], "ctx_per_row": [r[2] for r in rows],
            "steps": [r[3] for r in rows]}
