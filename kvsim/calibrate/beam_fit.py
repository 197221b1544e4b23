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
copy table at their copies; the steps' mean beyond that is::

    "beam": {"num_seqs": [n...], "extra_s": [...], "copy_extra_s": [...], "width": 2}

``extra_s`` from the steps without copies, ``copy_extra_s`` from those with (None where a row had fewer than
:data:`MIN_BEAM_STEPS` of a kind). :class:`kvsim.cost.calibrated.CalibratedCostModel` prices a decode step with
beam rows as the stepped step plus ``extra_s`` (``copy_extra_s`` and the copy table when it copies) at its beam
rows, in place of the sampling table's beam call, which stays for the first beam step after a prompt. Needs no
torch.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from kvsim.calibrate import serving_runs as SR

BEAM_ROWS = (4, 16)         # rows (beams) of the beam runs: 2 and 8 groups of BEAM_WIDTH
BEAM_WIDTH = 2
MIN_BEAM_STEPS = 10         # steps of a kind (with or without copies) a row's term needs


def beam_row(cost, its: pd.DataFrame, reqs: pd.DataFrame, n: int, overhead, extra) -> tuple | None:
    """``(n, extra_s, copy_extra_s, steps)`` of one beam run's decode-only steps at exactly ``n`` rows, or None
    when it has fewer than :data:`MIN_BEAM_STEPS` of either kind. ``cost``: the bare calibrated model of the fit
    (grid and spread, no step overhead); ``overhead(n)``, ``extra(n)``: the step overhead and the stepped extra
    the fit gives a row."""
    steps = SR.row_steps(cost, its, reqs, n, 1, BEAM_WIDTH)
    if steps is None:
        return None
    dur, usual = steps.dur, steps.usual
    ref = steps.grid + steps.spread + float(overhead(n)) + float(extra(n))
    copies = its.loc[steps.index, "cow_copies"].to_numpy(int) if "cow_copies" in its.columns else np.zeros(len(dur), int)
    plain, copying = usual & (copies == 0), usual & (copies > 0)
    if plain.sum() < MIN_BEAM_STEPS and copying.sum() < MIN_BEAM_STEPS:
        return None
    copy_s = np.array([cost.copy_time(int(c), 0) if c else 0.0 for c in copies])

    def mean_beyond(mask):
        return float(np.mean((dur - ref - copy_s)[mask])) if mask.sum() >= MIN_BEAM_STEPS else None
    return int(n), mean_beyond(plain), mean_beyond(copying), int(usual.sum())


def fit_beam(cost, runs: dict[int, tuple[pd.DataFrame, pd.DataFrame]], overhead, extra) -> dict | None:
    """``decode_serving[bs].beam`` from ``{n: (iterations, requests)}`` of the beam runs (module doc), or None
    when no row has enough steps. A row missing one kind takes the other's term."""
    rows = [r for n, (its, reqs) in sorted(runs.items()) if (r := beam_row(cost, its, reqs, n, overhead, extra))]
    if not rows:
        return None
    plain = [r[1] if r[1] is not None else r[2] for r in rows]
    copying = [r[2] if r[2] is not None else r[1] for r in rows]
    return {"num_seqs": [r[0] for r in rows], "extra_s": plain, "copy_extra_s": copying,
            "steps": [r[3] for r in rows], "width": BEAM_WIDTH}
