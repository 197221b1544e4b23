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
other's).

Two lengths. Inside one run the shared reads vary little (on an H100, OPT-13B, 2026-12-07 09:48: that attention's sd
0.05-0.12 ms a cell), and what else grows with the context moves ``beyond`` too: that calibration's three cells each
gave a slope of 1.36-1.40, above the physical 1, so the saving sat at the top of its clip, and v10 (beam 4 at ~100
tokens a row) came out +4.5% on mean latency, where the profiles before it (0.39, 0.61) gave +1.0% and +0.5%, and
the saving held at 0 gives -4.2% (``validation/H100-async-opt-1207d/README.md``). So the serving fit also runs the
beam rows on short requests (:data:`kvsim.calibrate.serving_setup.SHORT_PROMPT_RANGE`: shared reads about a tenth
as long; ``short_runs``), and the saving is the least-squares slope, through 0, of each (row, kind)'s mean
``beyond`` at the long length less its mean at the short one on the same difference of mean ``A``: what going from
one length to the other changes, which a drift inside one run does not reach. ``e`` is then each (row, kind)'s mean
of ``beyond + shared_saving * A`` over the steps of both lengths. The profile records the short runs' steps and each
row's mean ``A`` at the two lengths (``short_steps``, ``attention_s``). Calibrations without short beam runs keep
the fit inside each run.

:class:`kvsim.cost.calibrated.CalibratedCostModel` prices a decode step with beam rows as the stepped
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


def fit_beam(cost, runs: dict[int, tuple[pd.DataFrame, pd.DataFrame]], overhead, extra,
             short_runs: dict[int, tuple[pd.DataFrame, pd.DataFrame]] | None = None) -> dict | None:
    """``decode_serving[bs].beam`` from ``{n: (iterations, requests)}`` of the beam runs (module doc), or None
    when no row has enough steps. ``short_runs``: the same rows' beam runs on short requests: the saving comes from
    the two context lengths, and their steps join their row's terms (module doc, "Two lengths")."""
    rows = [r for n, (its, reqs) in sorted(runs.items()) if (r := beam_row(cost, its, reqs, n, overhead, extra))]
    if not rows:
        return None
    shorts = {r[0]: r for n, (its, reqs) in sorted((short_runs or {}).items())
              if (r := beam_row(cost, its, reqs, n, overhead, extra))}
    joined = [_joined(r, shorts.get(r[0])) for r in rows]
    saving = _between_lengths(rows, shorts)

    def term(beyond, attn, m):
        return float(np.mean((beyond + saving * attn)[m])) if m.sum() >= MIN_BEAM_STEPS else None
    plain = [term(b, a, u & ~c) for _, b, a, c, u in joined]
    copy = [term(b, a, u & c) for _, b, a, c, u in joined]
    out = {"num_seqs": [r[0] for r in rows],
           "extra_s": [p if p is not None else c for p, c in zip(plain, copy)],
           "copy_extra_s": [c if c is not None else p for p, c in zip(plain, copy)],
           "shared_saving": saving, "steps": [int(r[4].sum()) for r in rows], "width": BEAM_WIDTH}
    if shorts:          # the short runs' usual steps per row (0 where a row has none) and their mean shared attention
        out["short_steps"] = [int(shorts[r[0]][4].sum()) if r[0] in shorts else 0 for r in rows]
        out["attention_s"] = [[float(np.mean(r[2][r[4]])), float(np.mean(shorts[r[0]][2][shorts[r[0]][4]]))
                               if r[0] in shorts else None] for r in rows]
    return out


def _cells(row: tuple):
    """A ``beam_row`` tuple's (beyond, attention) of each kind (without, with copies) with enough steps, else None."""
    _, beyond, attn, copying, usual = row
    return [(beyond[m], attn[m]) if m.sum() >= MIN_BEAM_STEPS else None for m in (usual & ~copying, usual & copying)]


def _inside_runs(rows: list[tuple]) -> float:
    """The saving from the steps' variation inside each (row, kind) of one run each (module doc), in [0, 1]."""
    cells = [c for r in rows for c in _cells(r) if c is not None]
    da = np.concatenate([a - a.mean() for _, a in cells])
    dy = np.concatenate([y - y.mean() for y, _ in cells])
    var = float(da @ da)
    return float(np.clip(-(da @ dy) / var, 0.0, 1.0)) if var > 0 else 0.0


def _between_lengths(rows: list[tuple], shorts: dict[int, tuple]) -> float:
    """The saving from each (row, kind)'s mean at the two lengths (module doc, "Two lengths"): the least-squares
    slope of the difference of mean ``beyond`` on the difference of mean attention, through 0, in [0, 1]; the
    drift inside a run leaves it alone. The fit inside each run where no cell has both lengths (no short runs)."""
    da, dy = [], []
    for r in rows:
        if r[0] not in shorts:
            continue
        for lo, sh in zip(_cells(r), _cells(shorts[r[0]])):
            if lo is not None and sh is not None:
                da.append(lo[1].mean() - sh[1].mean())
                dy.append(lo[0].mean() - sh[0].mean())
    da, dy = np.asarray(da), np.asarray(dy)
    var = float(da @ da)
    if not len(da) or var <= 0:
        return _inside_runs(rows)
    return float(np.clip(-(da @ dy) / var, 0.0, 1.0))


def _joined(row: tuple, short: tuple | None) -> tuple:
    """One row's steps of the long run and, where there is one, of the short run, as one ``beam_row`` tuple."""
    if short is None:
        return row
    return (row[0],) + tuple(np.concatenate([a, b]) for a, b in zip(row[1:], short[1:]))
