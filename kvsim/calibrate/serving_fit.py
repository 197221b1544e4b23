"""Decode and lone prefill steps of serving-shaped runs, fitted on the real engine: ``decode_serving`` and ``prefill_serving``.

Why. The profile prices a decode step from its whole-step grid (equal contexts), the per-step overhead fitted
on lock-step bursts of equal requests, and, for unequal contexts, a fraction of the way from the uniform step at
the batch's mean context to the one at its longest, measured on evenly spaced contexts. On the H200 that priced
the decode steps of prefill-first serving runs of Llama-3-8B within 1.5% at 1-2 rows but 3-5% fast at 9-24
rows, on the profile's own card (``benchmarks/engine/results_H200/serving_2154/README.md``, commit 61ac596; with
this fit, ``serving_0055/README.md`` at commit eba0530: those steps within 1.5-3.5%): the engine's
steps cost 0.34 ms + 0.035 ms per row beyond the grid's GPU time, and more with more unequal contexts, while
the lock-step fit saw neither.

What. For each ``n`` in :data:`ROWS` whose worst-case KV fits the card (:data:`KV_MEMORY_SHARE`; a row that does
not runs the longest prompts that fit, down to ``serving_setup.MIN_PROMPT_HI``, recorded in
``workload.prompt_hi_by_row``), the engine
serves ``REQUESTS_PER_SLOT`` × n requests of uniform random lengths (``PROMPT_RANGE``,
``OUTPUT_RANGE``, :mod:`kvsim.calibrate.serving_setup`) in each of :data:`PASSES` passes (the rows in :func:`spread_order`, then in reverse,
so each row meets the host at two times some tens of seconds apart, symmetric about the fit's middle: on the H200 VM the host time of one workload's decode step moved
between 0.27 and 0.47 ms from run to run, and one row's single run sampled one such state,
``benchmarks/engine/results_H200/serving_1605/README.md``; the profile keeps each pass's medians, ``by_pass``),
with at most n in flight (``max_concurrency = n``,
serving's ``max_num_seqs`` and CUDA graphs, so a step of n rows replays the graph serving pads it to): as
requests finish others join, so the running contexts are as unequal as in serving while the batch stays at
n rows. Each decode-only step's contexts are rebuilt from the run's own records (:func:`step_contexts`), and
per ``n`` the steps' mean beyond ``grid(b, sum) + spread`` gives the serving overhead ``o_n``, where
``spread`` is what unequal contexts add at the spread grid's fraction (measured on evenly spaced contexts,
:mod:`kvsim.cost.decode_spread`). The profile stores, per block size::

    decode_serving: {"num_seqs": [n...], "extra_s": [o_n - step_overhead(n)...], "spread": "grid"}

and :class:`kvsim.cost.calibrated.CalibratedCostModel` prices a decode step of n rows as
``grid(b, sum) + step_overhead(n) + extra(n) + spread`` (``extra`` interpolated in n, held outside the rows).

Overlapped runs (``runtime.async_scheduling``, the engine's default): a step scheduled and prepared while the
one before it was on the GPU (``host_ahead`` in the engine's records) has its host work off the critical path;
the others do not: in the fit's closed loops the decode step after a prefill (a finished request's successor
joining), 4% of the decode steps at 4 rows and 44% at 128 on the H100 fit of 2026-12-06, 0.26-1.25 ms longer; in
open-loop serving, 3-24% of the decode steps (after a prefill or mixed step, or after one that could not overlap
because a request was due), 0.23-0.44 ms longer (``validation/H100-async`` at commit 8199515). ``extra_s`` stays the mean over all
of a row's steps, which prices open-loop serving within those shares; the steps not prepared ahead are also kept
apart, ``"stepped": {"num_seqs", "extra_s", "host_s"}`` (same reference as ``extra_s``): the price of a decode
step that can never overlap (beam search's, whose parents decide the next step). Since prefill and mixed steps
overlap too (``runtime.async_prompt_steps``), a closed loop prepares nearly every decode step ahead (the H100 fit
of 2026-12-06 17:26: 1-2 per run were not, 0.23-0.68 ms of host work on the critical path), too few to fit; so an
overlapped calibration runs :data:`STEPPED_ROWS` once more with the engine stepped, and ``stepped`` at those rows
comes from every decode step of those runs. Every calibration also runs the beam rows with beam search, on the
serving lengths and on short requests (:mod:`kvsim.calibrate.beam_fit`, ``"beam"``): a beam step measured whole
beyond the stepped step of its rows, less a saving on its beams' shared reads that the two lengths pin down; and
its short-context rows once on short requests (:mod:`kvsim.calibrate.short_fit`, ``"short"``: recorded, not priced).

Why not a fraction per row (``form="row"``): :mod:`kvsim.calibrate.spread_fit`.
The workload is kvsim's own, not a validation scenario's, so the validation set still tests the result.

The same runs' lone prefill steps (a joiner's prompt while the others wait) give ``prefill_serving``: the
measured step minus its price without ``prefill_overhead``, in up to ``PREFILL_BINS`` groups by prompt
length, each group's mean (:func:`kvsim.calibrate.prefill_serving_fit.fit_prefill_from_runs`). On the H200 such steps of 32-512 tokens cost 0.2-0.5 ms more than
the busy-engine ``prefill_overhead`` fit said (one prompt length repeated) and those of 512-1,024 tokens
0.5-0.9 ms less (that fit clamps at 0); the cost model prices prefill-only steps with it instead.

This module needs no torch: the engine run is imported inside :func:`fit_serving`.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

# the runs as records; load_runs is re-exported for refits (benchmarks/engine/serving_refit.py)
from kvsim.calibrate import engine_runs as ER
from kvsim.calibrate.engine_runs import KV_MEMORY_SHARE  # noqa: F401 (the serving runs' memory gate, re-exported)
from kvsim.calibrate import serving_runs as SR
from kvsim.calibrate import serving_setup as SS
# the runs' set-up, re-exported (benchmarks and tests reach it through this module)
from kvsim.calibrate.serving_setup import (STEPPED_MODE, serving_scenario, serving_scenario_doc,  # noqa: F401
                                           serving_workload, stripped_cost)
# the lone prefills' fit (prefill_serving), re-exported
from kvsim.calibrate.prefill_serving_fit import fit_prefill_from_runs, prefill_curve  # noqa: F401
from kvsim.calibrate.spread_fit import MAX_FRACTION, fit_rows, pooled_fractions  # noqa: F401 (the row form)
from kvsim.calibrate.beam_fit import BEAM_ROWS, BEAM_WIDTH, fit_beam
from kvsim.calibrate.short_fit import SHORT_ROWS, fit_short
from kvsim.cost.profile import interp1
from kvsim.calibrate.serving_runs import (by_pass, host_ahead, join_passes, load_runs, lone_prefills,  # noqa: F401
                                          save_runs, spread_order, step_contexts)

# both ends of the 9-16 and 17-24 graph buckets; 64 and 128 for big batches; 1 and 2, where low loads spend most
# decode steps (v01 on the H100 of 2026-12-07: 73% of them), which the fit held at the 4-row extra before: 0.20 ms
# there, where the engine's 1-2-row steps ran 0.05 ms over the grid (priced +1.4% to +2.6% in seven scenarios,
# validation/H100-async-opt, git history at commit bfecda7)
ROWS = (1, 2, 4, 8, 9, 16, 17, 24, 32, 64, 128)
# each kind of serving run: (stepped, beam width, short requests); beam runs are optional (one that fails is left out)
RUN_KINDS = {"pass": (False, 1, False), "stepped": (True, 1, False), "beam": (False, BEAM_WIDTH, False),
             "beam_short": (False, BEAM_WIDTH, True), "short": (False, 1, True)}
PASSES = 2                         # spread order, then reversed: each row meets the host at two times (module doc)

MIN_STEPS = 20                     # steps at exactly n rows a fit needs
MIN_STEPPED = 10                   # ... and the steps of an overlapped run whose host work was not hidden
STEPPED_ROWS = (4, 16, 64)         # an overlapped calibration also runs these rows stepped, once: with prompt steps
#                                    overlapped its closed loops prepare ~99% of their decode steps ahead (H100,
#                                    2026-12-06: 1-2 per run were not), too few to price a step that never overlaps


def _row_steps(cost, its: pd.DataFrame, reqs: pd.DataFrame, n: int):
    """The decode steps at exactly ``n`` rows of one run, None when fewer than :data:`MIN_STEPS`
    (:func:`kvsim.calibrate.serving_runs.row_steps`)."""
    return SR.row_steps(cost, its, reqs, n, MIN_STEPS)


def _stepped_row(n: int, steps, mask, overhead) -> tuple:
    """``(n, extra_s, host_s)`` of the steps ``mask`` selects (stepped: host work on the critical path)."""
    dur, grid, spread, cpu = steps.dur, steps.grid, steps.spread, steps.cpu
    return (int(n), float(np.mean(dur[mask] - grid[mask] - spread[mask])) - float(overhead(n)),
            None if cpu is None else float(np.median(cpu[mask])))


def fit_from_runs(cost, runs: dict[int, tuple[pd.DataFrame, pd.DataFrame]], overhead, form: str = "grid",
                  stepped_runs: dict[int, tuple[pd.DataFrame, pd.DataFrame]] | None = None,
                  beam_runs: dict[int, tuple[pd.DataFrame, pd.DataFrame]] | None = None,
                  short_runs: dict[int, tuple[pd.DataFrame, pd.DataFrame]] | None = None,
                  beam_short_runs: dict[int, tuple[pd.DataFrame, pd.DataFrame]] | None = None) -> dict:
    """``decode_serving`` for one block size from ``{n: (iterations, requests)}`` of the serving runs;
    ``cost`` is a calibrated cost model of the profile without its serving tables and step overhead (its
    ``decode_grid_and_spread`` / ``decode_grid_spread``), ``overhead(n)`` the profile's step overhead.

    ``form`` "grid" (the default): unequal contexts are priced at the spread grid's fraction and each row's
    ``extra_s`` is its mean step beyond that; "row": a spread fraction fitted per row as well (see the
    module doc for why it is not the default). Both keep each row's own fitted fraction for the record.

    ``stepped_runs``: runs of the same workload with the engine stepped (an overlapped calibration's
    :data:`STEPPED_ROWS`): every usual decode step at n rows prices ``stepped`` at that row, in place of the
    overlapped runs' few steps not prepared ahead. ``beam_runs``: runs of beam search at
    :data:`kvsim.calibrate.beam_fit.BEAM_ROWS`, priced beyond the stepped step of their rows (``beam``;
    ``beam_short_runs``: the same on short requests, for the saving on shared reads).
    ``short_runs``: runs of short requests at :data:`kvsim.calibrate.short_fit.SHORT_ROWS`, recorded beyond the
    fitted price of their rows (``short``, not priced)."""
    rows, host, stepped, ctx = [], [], {}, []
    for n, (its, reqs) in sorted(runs.items()):
        steps = _row_steps(cost, its, reqs, n)
        if steps is None:
            continue
        dur, grid, u, spread = steps.dur, steps.grid, steps.u, steps.spread
        cpu, usual, ahead = steps.cpu, steps.usual, steps.ahead
        off = None if ahead is None else usual & ~ahead    # overlapped runs: the steps not prepared ahead, apart
        if off is not None and off.sum() >= MIN_STEPPED:
            stepped[int(n)] = _stepped_row(n, steps, off, overhead)
        # the host check's reference (kvsim.card_speed): the steps of the row's own kind, prepared ahead where split
        on_host = usual if ahead is None else usual & ahead
        host.append(None if cpu is None else float(np.median(cpu[on_host])))
        y = dur[usual] - grid[usual]
        rows.append((int(n), y, u[usual], spread[usual]) + fit_rows(y, u[usual]))
        ctx.append(float(np.mean(steps.sums[usual])) / n)     # the context a row the extra was measured at
    for n, (its, reqs) in sorted((stepped_runs or {}).items()):
        steps = _row_steps(cost, its, reqs, n)
        if steps is not None:
            stepped[int(n)] = _stepped_row(n, steps, steps.usual, overhead)
    stepped = [stepped[n] for n in sorted(stepped)]
    if not rows:
        return {}
    frac, mean = pooled_fractions([(lam, se) for *_, lam, se in rows])
    if form == "grid":
        beyond = [y - g for _, y, _, g, *_ in rows]
    elif form == "row":
        beyond = [y - f * u for (_, y, u, *_), f in zip(rows, frac)]
    else:
        raise ValueError(f"form: 'grid' or 'row', not {form!r}")
    # each row's overhead: its mean step beyond the grid and the spread term. The mean, not the median: the
    # simulator adds step times up, so a row's price must be its steps' mean (a step's host part is skewed to
    # the slow side; the H200 fit of 2026-12-06 had each row's mean 0.1-1.3% above its median, and a fit of
    # medians priced every row of its own runs low: benchmarks/engine/results_H200/calib_1206/README.md)
    out = {"num_seqs": [r[0] for r in rows],
           "extra_s": [float(np.mean(b)) - float(overhead(r[0])) for r, b in zip(rows, beyond)]}
    out.update({"spread": "grid"} if form == "grid" else {"spread_frac": frac})
    if all(h is not None for h in host):     # the rows' host time per step, for kvsim.card_speed's host check
        out["host_s"] = host
    if stepped:     # overlapped runs: what a decode step whose host work was not hidden costs (beam search's)
        out["stepped"] = {"num_seqs": [r[0] for r in stepped], "extra_s": [r[1] for r in stepped]}
        if all(r[2] is not None for r in stepped):
            out["stepped"]["host_s"] = [r[2] for r in stepped]
    ref = out.get("stepped", out)       # the extra a stepped step of n rows gets (the cost model's stepped_decode)
    beam = fit_beam(cost, beam_runs or {}, overhead, lambda n: float(interp1(
        float(n), np.asarray(ref["num_seqs"], float), np.asarray(ref["extra_s"], float))), beam_short_runs)
    if beam:        # beam search's decode steps measured whole: what they cost beyond a stepped step
        out["beam"] = beam
    short = fit_short(cost, short_runs or {}, overhead, lambda n: float(np.interp(      # held outside, as priced
        float(n), out["num_seqs"], out["extra_s"])))
    if short:       # short contexts: what the engine took beyond the fitted price (recorded; not priced)
        out["short"] = short
    out.update({"spread_frac_row": [r[5] for r in rows], "spread_frac_se": [r[6] for r in rows],
                "spread_frac_mean": mean, "steps": [len(r[1]) for r in rows], "ctx_per_row": ctx,
                "workload": _workload_of(runs, rows[-1][0])})
    passes = [by_pass(runs[r[0]][0], r[0]) for r in rows]
    if any(p is not None for p in passes):        # each pass's median step and host time, per row
        out["by_pass"] = passes
    return out


def _workload_of(runs: dict, n: int) -> dict:
    """The serving workload the runs record (requests per slot and passes read from row ``n``'s own
    requests, so a refit of older runs describes them, not today's constants)."""
    reqs = runs[n][1]
    passes = int(reqs["pass"].nunique()) if "pass" in reqs.columns else 1
    return {"prompt_len_range": list(SS.PROMPT_RANGE), "output_len_range": list(SS.OUTPUT_RANGE),
            "requests_per_slot": int(round(len(reqs) / n / passes)), "passes": passes}


FITTED = ("decode_serving", "prefill_serving")
UNFITTED_PREFILL = FITTED + ("prefill_overhead", "wake_overhead")   # a lone prefill's price before either fit


def fit_serving(model, profile: dict, bs: int, device: str = "cuda", rows=ROWS, cuda_graphs: bool = True,
                log=print, save_dir=None, deadline: float | None = None, passes: int = PASSES,
                notes: dict | None = None, parts=None, stepped_rows=STEPPED_ROWS,
                beam_rows=BEAM_ROWS, short_rows=SHORT_ROWS) -> tuple[dict, dict]:
    """Run the serving workloads on the real engine; ``(decode_serving, prefill_serving)`` for block size
    ``bs`` (each {} when its steps are too few). Each row runs ``passes`` times, in :func:`spread_order` and back
    (:data:`PASSES`), its passes joined into one record (:func:`join_passes`); an overlapped calibration also
    runs ``stepped_rows`` (those of ``rows``) once with the engine stepped, after the first pass, for
    ``decode_serving.stepped``, and ``beam_rows`` (those of ``rows``) with beam search, once on the serving
    lengths and once on short requests, for ``decode_serving.beam`` (:mod:`kvsim.calibrate.beam_fit`), and
    ``short_rows`` once on short requests, for
    ``decode_serving.short`` (:mod:`kvsim.calibrate.short_fit`). ``save_dir``: also keep the runs' records there
    (:func:`save_runs`; the stepped, beam, short and short beam ones in ``save_dir/stepped``, ``beam``, ``short``,
    ``beam_short``). ``deadline`` (``time.perf_counter()`` seconds): no run starts after
    it (the rest are skipped and logged, so a calibration under a time limit still writes its profile; ``notes``,
    the profile's meta, then records how many as ``serving_fit_skipped``). ``parts``: an
    :class:`~kvsim.engine.reuse.EngineParts` the runs share (one KV cache and set of CUDA graphs for all)."""
    from kvsim.catalogue import get_model
    from kvsim.engine.engine import RealEngine
    from kvsim.errors import KvsimError
    spec = get_model(profile["model"])
    ov = profile["step_overhead"]
    per_n: dict[int, list] = {}
    kept: dict[str, dict[int, tuple]] = {k: {} for k in RUN_KINDS if k != "pass"}   # the runs apart from the passes
    refs, sc, skip, shortened = [], None, set(), {}
    free = ER.free_gpu_bytes(device)
    first = spread_order(rows)
    order = [(n, "pass") for k in range(passes) for n in (first if k % 2 == 0 else first[::-1])]
    # stepped and beam runs after the first pass: kept when a time limit cuts the second
    extra = [(n, "stepped") for n in first if n in set(stepped_rows)] if ER.async_scheduling() else []
    extra += [(n, kind) for kind in ("beam", "beam_short") for n in first if n in set(beam_rows)]
    extra += [(n, "short") for n in first if n in set(short_rows)]
    order = order[:len(first)] + extra + order[len(first):]
    for i, (n, kind) in enumerate(order):
        if deadline is not None and time.perf_counter() > deadline:
            log(f"serving n={n}: skipped, and the {len(order) - i - 1} runs after it: the calibration's time "
                "limit is near")
            if notes is not None:     # the profile says its fit is short (kvsim calibrate --resume runs it whole)
                notes["serving_fit_skipped"] = {"runs": len(order) - i, "of": len(order),
                                                "why": "the calibration's time limit"}
            break
        if n in skip:
            continue
        stepped, width, short = RUN_KINDS[kind]

        def scenario(prompt_hi=None):
            return serving_scenario(profile, bs, n, device, cuda_graphs, stepped, width, prompt_hi, short)
        try:
            sc = scenario()
        except KvsimError as e:       # beam search where the engine has none (a model or policy without it)
            log(f"serving n={n} ({kind}): skipped, {e}")
            continue
        why = ER.fits_memory(sc, spec, bs, device, parts, free) if free is not None else None
        if why and (p_hi := SS.prompt_hi_fitting(sc, bs, ER.kv_room_bytes(device, parts, free))) is not None:
            # shorter prompts rather than no row (SS.MIN_PROMPT_HI); the fit reads each step's own contexts
            sc = scenario(p_hi)
            if not ER.fits_memory(sc, spec, bs, device, parts, free):
                log(f"serving n={n} ({kind}): prompts up to {p_hi} tokens: at the full lengths {why}")
                shortened[n] = p_hi
                why = None
        if why:
            log(f"serving n={n}: skipped, {why}")
            skip.add(n)
            continue
        try:
            res = RealEngine(sc, model=model, parts=parts).run()
        except (RuntimeError, ValueError, KvsimError) as e:
            if width == 1:
                raise
            # optional: a beam run that fails leaves beam steps priced from their parts
            log(f"serving n={n} ({kind}): failed, left out: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
            continue
        if kind != "pass":
            kept[kind][n] = (res.iterations, res.requests)
        else:
            per_n.setdefault(n, []).append((res.iterations, res.requests))
            refs.append((res.info.get("reference_step") or {}).get("time_s"))     # the card's speed at each run
        at_n = res.iterations[res.iterations.decode_seqs == n]
        host = f", host {at_n.cpu_s.median() * 1e3:.2f} ms" if "cpu_s" in at_n.columns and len(at_n) else ""
        what = kind if kind != "pass" else f"pass {len(per_n[n])}"
        log(f"serving n={n} ({what}): {len(at_n)} decode steps at {n} rows (median "
            f"{at_n.duration_s.median() * 1e3:.2f} ms{host}), {len(lone_prefills(res.iterations))} lone prefills")
    runs = {n: join_passes(v) if len(v) > 1 else v[0] for n, v in sorted(per_n.items())}
    if save_dir is not None:
        save_runs(runs, save_dir)
        for sub, by_row in kept.items():
            if by_row:
                save_runs(by_row, Path(save_dir) / sub)
    if not runs:
        return {}, {}
    from kvsim.graph_sizes import engine_graph_sizes
    graphs = engine_graph_sizes(sc)
    decode = fit_from_runs(stripped_cost(profile, bs, graphs, drop=FITTED, bare=True), runs,
                           lambda n: float(interp1(float(n), np.asarray(ov["num_seqs"], float),
                                                   np.asarray(ov["time_s"], float))), stepped_runs=kept["stepped"],
                           beam_runs=kept["beam"], short_runs=kept["short"], beam_short_runs=kept["beam_short"])
    if decode:
        decode["reference_step_s"] = refs
        if shortened:          # the rows that ran shorter prompts than the workload's, and how long
            decode["workload"]["prompt_hi_by_row"] = {str(n): p for n, p in sorted(shortened.items())}
    prefill = fit_prefill_from_runs(stripped_cost(profile, bs, graphs, drop=UNFITTED_PREFILL, bare=False), runs)
    return decode, prefill
