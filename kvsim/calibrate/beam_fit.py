"""Beam-search decode steps measured whole on the engine: ``decode_serving[bs].beam``.

Why. A beam step differs from the greedy decode step the grids and the serving fit time: its sampling (a
log-softmax over its beams' rows, their scores added, a top-k over width × vocabulary per group), the host work
of its parents (which beam continues which, block tables forked), and, where a beam took a parent's last
block, a copy-on-write. The profile priced them from parts: the stepped decode step, the sampling calls timed
alone (:mod:`kvsim.calibrate.sampling`) and the copy table. On the engine those steps ran longer than the parts
said, on every card and set: Llama-3-8B beam 2 (v26) decode steps −0.9% to −4.8% and copy steps −2.1% to −6.9%
on the mean, OPT-13B beam 4 (v10) down to −4.3% and −9.3% (``validation/*/v26*/step_kinds.md``); on the H200 set
of 2026-12-06 (``validation/H200-async``) a 2-row beam step took 5.36 ms where a greedy stepped step of its rows
is priced 5.01 ms and the sampling table added 0.15 ms.

What. The serving fit runs :data:`BEAM_ROWS` once more with every request searching :data:`BEAM_WIDTH` beams
(n // width requests in flight, a closed loop on the serving workload's lengths; beam search is never
overlapped, so these steps are stepped in any calibration). Each decode-only step at exactly n rows is priced as
the greedy stepped step of its contexts (grid, spread, step overhead and the stepped extra the same fit gives
that row, :func:`kvsim.calibrate.serving_fit.fit_from_runs`), and, for the steps that copy blocks, the profile's
copy table at their copies. What they cost beyond that is fitted as::

    beyond = e(n, copies or not) - shared_saving * A

``A`` is the grid's attention time of the step's shared reads: the grid at the step's context sum less the grid
at that sum without the tokens its rows read from blocks another beam of their group also reads (the shared
prompt and common history; a record gives them as the rows' blocks, about sum / block + n / 2, less
``blocks_in_use``; the simulator's plan counts them exactly, ``StepPlan.beam_shared_blocks``). Sibling beams read
those blocks at about the same time, so the card serves the second read from its cache: on an H100 (OPT-13B,
2026-12-07, ``validation/H100-async-opt/README.md``, git history at commit bfecda7) the calibration's beam steps at
16 rows of ~600-token contexts cost 0.27 ms *less* than a greedy stepped step of the same contexts, while a
validation run's beams at ~100 tokens cost 0.2-0.6 ms more at every row count; a term per row alone cannot carry
both. ``shared_saving``
(clipped to [0, 1]) comes from the steps' variation within each (row, kind): the regression of ``beyond`` on
``A`` with an intercept per row and kind; ``e`` is then each one's mean of ``beyond + shared_saving * A``::

    "beam": {"num_seqs": [n...], "extra_s": [...], "copy_extra_s": [...], "shared_saving": s, "width": 2}

``extra_s`` from the steps without copies, ``copy_extra_s`` from those with (a row missing one kind takes the
other's). :class:`kvsim.cost.calibrated.CalibratedCostModel` prices a decode step with beam rows as the stepped
step plus ``extra_s`` (``copy_extra_s`` and the copy table when it copies) at its beam rows, less
``shared_saving`` times the grid's attention time of its shared reads, in place of the sampling table's beam
call, which stays for the first beam step after a prompt. Profiles without ``shared_saving`` (before
2026-12-07) take 0: their terms are the steps' plain means. Needs no torch.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from kvsim.calibrate import serving_runs as SR

BEAM_ROWS = (4, 16)         # rows (beams) of the beam runs: 2 and 8 groups of BEAM_WIDTH
BEAM_WIDTH = 2
MIN_BEAM_STEPS = 10         # steps of a kind (with or without copies) a row's term needs


def beam_row(cost, its: pd.DataFrame, reqs: pd.DataFrame, n: int, overhead, extra) -> tuple | None:
    """``(n, beyond, A, copying, usual)`` per decode-only step of one beam run at exactly ``n`` rows (module doc),
    or None when it has fewer than :data:`MIN_BEAM_STEPS` usual steps of both kinds. ``cost``: the bare calibrated
    model of the fit (grid and spread, no step overhead); ``overhead(n)``, ``extra(n)``: the step overhead and the
    stepped extra the fit gives a row."""
    steps = SR.row_steps(cost, its, reqs, n, 1, BEAM_WIDTH)
    if steps is None:
        return None
    rows = its.loc[steps.index]
    copies = rows.cow_copies.to_numpy(int) if "cow_copies" in rows.columns else np.zeros(len(steps.dur), int)
    usual, copying = steps.usual, copies > 0
    if (usual & ~copying).sum() < MIN_BEAM_STEPS and (usual & copying).sum() < MIN_BEAM_STEPS:
        return None
    ref = steps.grid + steps.spread + float(overhead(n)) + float(extra(n))
    copy_s = np.array([cost.copy_time(int(c), 0) if c else 0.0 for c in copies])
    shared, block = np.zeros(len(ref)), cost.bs
    if "blocks_in_use" in rows.columns:
        shared = np.clip(steps.sums / block + n / 2 - rows.blocks_in_use.to_numpy(float), 0.0, None) * block
    attn = cost.shared_attention(n, steps.sums, steps.top, shared)
    return int(n), steps.dur - ref - copy_s, attn, copying, usual


def fit_beam(cost, runs: dict[int, tuple[pd.DataFrame, pd.DataFrame]], overhead, extra) -> dict | None:
    """``decode_serving[bs].beam`` from ``{n: (iterations, requests)}`` of the beam runs (module doc), or None
    when no row has enough steps."""
    rows = [r for n, (its, reqs) in sorted(runs.items()) if (r := beam_row(cost, its, reqs, n, overhead, extra))]
    if not rows:
        return None
    # (row, kind) cells with enough steps; the saving from the variation inside each
    cells = [(beyond[m], attn[m]) for _, beyond, attn, copying, usual in rows
             for m in (usual & ~copying, usual & copying) if m.sum() >= MIN_BEAM_STEPS]
    da = np.concatenate([a - a.mean() for _, a in cells])
    dy = np.concatenate([y - y.mean() for y, _ in cells])
    var = float(da @ da)
    saving = float(np.clip(-(da @ dy) / var, 0.0, 1.0)) if var > 0 else 0.0

    def term(beyond, attn, m):
        return float(np.mean((beyond + saving * attn)[m])) if m.sum() >= MIN_BEAM_STEPS else None
    plain = [term(b, a, u & ~c) for _, b, a, c, u in rows]
    copy = [term(b, a, u & c) for _, b, a, c, u in rows]
    return {"num_seqs": [r[0] for r in rows],
            "extra_s": [p if p is not None else c for p, c in zip(plain, copy)],
            "copy_extra_s": [c if c is not None else p for p, c in zip(plain, copy)],
            "shared_saving": saving, "steps": [int(r[4].sum()) for r in rows], "width": BEAM_WIDTH}
