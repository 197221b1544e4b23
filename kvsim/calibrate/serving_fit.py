"""Decode and lone prefill steps of serving-shaped runs, fitted on the real engine: ``decode_serving`` and ``prefill_serving``.

Why. The profile prices a decode step from its whole-step grid (equal contexts), the per-step overhead fitted
on lock-step bursts of equal requests, and, for unequal contexts, a fraction of the way from the uniform step at
the batch's mean context to the one at its longest, measured on evenly spaced contexts. On the H200 that priced
the decode steps of prefill-first serving runs of Llama-3-8B within 1.5% at 1-2 rows but 3-5% fast at 9-24
rows, on the profile's own card (``benchmarks/engine/results_H200/serving_2154/README.md``, commit 61ac596; with
this fit, ``serving_0055/README.md`` at commit eba0530: those steps within 1.5-3.5%): the engine's
steps cost 0.34 ms + 0.035 ms per row beyond the grid's GPU time, and more with more unequal contexts, while
the lock-step fit saw neither.

What. For each ``n`` in :data:`ROWS` whose worst-case KV fits the card (:data:`KV_MEMORY_SHARE`), the engine
serves :data:`REQUESTS_PER_SLOT` × n requests of uniform random lengths (:data:`PROMPT_RANGE`,
:data:`OUTPUT_RANGE`) in each of :data:`PASSES` passes (the rows in :func:`spread_order`, then in reverse,
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
because a request was due), 0.23-0.44 ms longer (``validation/H100-async``). ``extra_s`` stays the mean over all
of a row's steps, which prices open-loop serving within those shares; the steps not prepared ahead are also kept
apart, ``"stepped": {"num_seqs", "extra_s", "host_s"}`` (same reference as ``extra_s``): the price of a decode
step that can never overlap (beam search's, whose parents decide the next step).

Why not a fraction per row (``form="row"``): :mod:`kvsim.calibrate.spread_fit`.
The workload is kvsim's own, not a validation scenario's, so the validation set still tests the result.

The same runs' lone prefill steps (a joiner's prompt while the others wait) give ``prefill_serving``: the
measured step minus its price without ``prefill_overhead``, in up to :data:`PREFILL_BINS` groups by prompt
length, each group's mean (:func:`fit_prefill_from_runs`). On the H200 such steps of 32-512 tokens cost 0.2-0.5 ms more than
the busy-engine ``prefill_overhead`` fit said (one prompt length repeated) and those of 512-1,024 tokens
0.5-0.9 ms less (that fit clamps at 0); the cost model prices prefill-only steps with it instead.

This module needs no torch: the engine run is imported inside :func:`fit_serving`.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

# the runs as records; load_runs is re-exported for refits (benchmarks/engine/serving_refit.py)
from kvsim.calibrate import engine_runs as ER
from kvsim.calibrate.engine_runs import KV_MEMORY_SHARE  # noqa: F401 (the serving runs' memory gate, re-exported)
from kvsim.calibrate.spread_fit import MAX_FRACTION, fit_rows, pooled_fractions  # noqa: F401 (the row form)
from kvsim.calibrate.serving_runs import (by_pass, join_passes, load_runs, lone_prefills, spread_order,  # noqa: F401
                                          save_runs, step_contexts)

ROWS = (4, 8, 9, 16, 17, 24, 32, 64, 128)   # both ends of the 9-16 and 17-24 graph buckets; 64 and 128 for big batches
REQUESTS_PER_SLOT = 2              # per pass
PASSES = 2                         # spread order, then reversed: each row meets the host at two times (module doc)

PROMPT_RANGE = (16, 1024)          # capped at half the model's longest sequence
OUTPUT_RANGE = (16, 256)
MIN_STEPS = 20                     # steps at exactly n rows a fit needs
MIN_STEPPED = 10                   # ... and the steps of an overlapped run whose host work was not hidden
PREFILL_BINS, PREFILL_BIN_STEPS = 8, 15   # lone prefill steps: at most 8 length groups of >= 15 steps
ONE_OFF = 4.0                      # a step over this many times its row's median is one-off work (a kernel compiled
#                                    on the clock), left out of the row's mean as kvsim validate lists such steps apart


def host_ahead(its: pd.DataFrame) -> np.ndarray | None:
    """Which of these engine steps were scheduled and prepared while the step before them was in flight
    (``host_ahead``, :mod:`kvsim.engine.serve_loop`); None for stepped runs and records without the column."""
    if "host_ahead" not in its.columns:
        return None
    a = its.host_ahead.to_numpy() == 1
    return a if a.any() else None


def fit_from_runs(cost, runs: dict[int, tuple[pd.DataFrame, pd.DataFrame]], overhead, form: str = "grid") -> dict:
    """``decode_serving`` for one block size from ``{n: (iterations, requests)}`` of the serving runs;
    ``cost`` is a calibrated cost model of the profile without its serving tables and step overhead (its
    ``decode_grid_and_spread`` / ``decode_grid_spread``), ``overhead(n)`` the profile's step overhead.

    ``form`` "grid" (the default): unequal contexts are priced at the spread grid's fraction and each row's
    ``extra_s`` is its mean step beyond that; "row": a spread fraction fitted per row as well (see the
    module doc for why it is not the default). Both keep each row's own fitted fraction for the record."""
    rows, host, stepped = [], [], []
    for n, (its, reqs) in sorted(runs.items()):
        ctx = step_contexts(its, reqs)
        ctx = ctx[ctx.valid & (ctx.n == n)] if len(ctx) else ctx
        if len(ctx) < MIN_STEPS:
            continue
        sums, top = ctx.ctx_sum.to_numpy(float), ctx.ctx_max.to_numpy(float)
        grid, u = cost.decode_grid_and_spread(n, sums, top)
        spread = cost.decode_grid_spread(n, sums, top)
        dur = its.loc[ctx.index, "duration_s"].to_numpy(float)
        cpu = its.loc[ctx.index, "cpu_s"].to_numpy(float) if "cpu_s" in its.columns else None
        usual = dur <= ONE_OFF * float(np.median(dur))
        ahead = host_ahead(its.loc[ctx.index])
        off = None if ahead is None else usual & ~ahead    # overlapped runs: the steps not prepared ahead, apart
        if off is not None and off.sum() >= MIN_STEPPED:
            stepped.append((int(n), float(np.mean(dur[off] - grid[off] - spread[off])) - float(overhead(n)),
                            None if cpu is None else float(np.median(cpu[off]))))
        # the host check's reference (kvsim.card_speed): the steps of the row's own kind, prepared ahead where split
        on_host = usual if ahead is None else usual & ahead
        host.append(None if cpu is None else float(np.median(cpu[on_host])))
        y = dur[usual] - grid[usual]
        rows.append((int(n), y, u[usual], spread[usual]) + fit_rows(y, u[usual]))
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
    out.update({"spread_frac_row": [r[5] for r in rows], "spread_frac_se": [r[6] for r in rows],
                "spread_frac_mean": mean, "steps": [len(r[1]) for r in rows],
                "workload": _workload_of(runs, rows[-1][0])})
    passes = [by_pass(runs[r[0]][0], r[0]) for r in rows]
    if any(p is not None for p in passes):        # each pass's median step and host time, per row
        out["by_pass"] = passes
    return out


def prefill_curve(tokens: np.ndarray, extra: np.ndarray) -> dict:
    """``{"tokens", "extra_s"}``: the steps cut into up to :data:`PREFILL_BINS` groups of at least
    :data:`PREFILL_BIN_STEPS` by prompt length, each group's median length and mean extra ({} when too few): the
    mean, as the decode rows' (:func:`fit_from_runs`); on the H200 of 2026-12-06 these steps' extras had a long
    slow tail, group means 0.06-0.50 ms above the medians, and a fit of medians priced the validation runs'
    prefill-only steps 3.1% low (step-weighted), of means 1.7% (validation/H200-1206/README.md)."""
    tokens, extra = np.asarray(tokens, float), np.asarray(extra, float)
    k = min(PREFILL_BINS, len(tokens) // PREFILL_BIN_STEPS)
    if k < 1:
        return {}
    xs, ys = [], []
    for g in np.array_split(np.argsort(tokens, kind="stable"), k):
        x, y = float(np.median(tokens[g])), float(np.mean(extra[g]))
        if xs and x <= xs[-1]:           # equal lengths: one point
            continue
        xs.append(x)
        ys.append(y)
    return {"tokens": xs, "extra_s": ys}


def _workload_of(runs: dict, n: int) -> dict:
    """The serving workload the runs record (requests per slot and passes read from row ``n``'s own
    requests, so a refit of older runs describes them, not today's constants)."""
    reqs = runs[n][1]
    passes = int(reqs["pass"].nunique()) if "pass" in reqs.columns else 1
    return {"prompt_len_range": list(PROMPT_RANGE), "output_len_range": list(OUTPUT_RANGE),
            "requests_per_slot": int(round(len(reqs) / n / passes)), "passes": passes}


def fit_prefill_from_runs(cost, runs: dict[int, tuple[pd.DataFrame, pd.DataFrame]]) -> dict:
    """``prefill_serving`` from the lone prefill steps of the serving runs: measured minus ``cost``'s price
    (a calibrated cost model of the profile without ``prefill_overhead``: grid + step overhead), by length; a step
    over :data:`ONE_OFF` times its price is one-off work and left out."""
    from kvsim.core.plan import StepPlan
    toks, extra = [], []
    for its, _ in runs.values():
        for t, d in zip(*(lone_prefills(its)[c].to_numpy() for c in ("prefill_tokens", "duration_s"))):
            plan = StepPlan(prefill_group_ids=[0], prefill_new_tokens=[int(t)], prefill_cached_tokens=[0])
            price = cost.step_time(plan)
            if float(d) > ONE_OFF * price:
                continue
            toks.append(float(t))
            extra.append(float(d) - price)
    out = prefill_curve(np.array(toks), np.array(extra))
    return dict(out, steps=len(toks)) if out else {}


def serving_workload(n: int, max_seq_len: int) -> tuple[dict, dict]:
    """``(engine, workload)`` settings of the serving run at ``n`` rows (see module doc)."""
    p_hi = min(PROMPT_RANGE[1], max_seq_len // 2)
    o_hi = min(OUTPUT_RANGE[1], max_seq_len - p_hi - 8)
    # serving's engine limits (its CUDA graphs, so n rows replay the graph a serving engine pads them to),
    # with at most n requests in flight (a closed loop: the next one arrives when one finishes)
    engine = {"scheduler": "vllm", "max_num_seqs": 256, "max_num_batched_tokens": max(p_hi, 2048)}
    workload = {"dataset": "uniform", "prompt_len_range": [PROMPT_RANGE[0], p_hi],
                "output_len_range": [OUTPUT_RANGE[0], o_hi], "arrival": "burst",
                "num_requests": REQUESTS_PER_SLOT * n, "max_concurrency": n}
    return engine, workload


def stripped_cost(profile: dict, bs: int, graphs: dict, *, drop: tuple[str, ...], bare: bool):
    """A calibrated cost model of ``profile`` without the tables ``drop`` (and without step overhead when
    ``bare``), at the CUDA-graph sizes ``graphs`` (:func:`kvsim.graph_sizes.engine_graph_sizes`)."""
    from kvsim.cost.calibrated import CalibratedCostModel, Profile
    doc = {k: v for k, v in profile.items() if k not in drop}
    if bare:
        doc["step_overhead"] = {"num_seqs": [1.0], "time_s": [0.0]}
    return CalibratedCostModel(Profile(doc), model_name=profile["model"], dtype=profile["dtype"], block_size_tokens=bs,
                               **graphs)


FITTED = ("decode_serving", "prefill_serving")
UNFITTED_PREFILL = FITTED + ("prefill_overhead", "wake_overhead")   # a lone prefill's price before either fit


def serving_scenario_doc(profile: dict, bs: int, n: int, device: str = "cuda", cuda_graphs: bool = True) -> dict:
    """The scenario document of the serving run at ``n`` rows (:func:`serving_workload`), with a KV pool for its
    worst case."""
    from kvsim.catalogue import get_model
    engine, workload = serving_workload(n, get_model(profile["model"]).max_seq_len)
    per_seq = -(-(workload["prompt_len_range"][1] + workload["output_len_range"][1] + 8) // bs)
    return {"name": f"calibrate-serving-{n}", "model": profile["model"], "gpu": "h100-80gb", "dtype": profile["dtype"],
            "seed": 0, "engine": {"block_size": bs, "num_gpu_blocks": n * per_seq + 64, "swap_space_gib": 0, **engine},
            "workload": workload, "runtime": {"device": device, "cuda_graphs": cuda_graphs, **ER.runtime_mode()}}


def serving_scenario(profile: dict, bs: int, n: int, device: str = "cuda", cuda_graphs: bool = True):
    """The scenario of the serving run at ``n`` rows (:func:`serving_scenario_doc`)."""
    import kvsim
    return kvsim.load_scenario(serving_scenario_doc(profile, bs, n, device, cuda_graphs))


def fit_serving(model, profile: dict, bs: int, device: str = "cuda", rows=ROWS, cuda_graphs: bool = True,
                log=print, save_dir=None, deadline: float | None = None, passes: int = PASSES,
                notes: dict | None = None, parts=None) -> tuple[dict, dict]:
    """Run the serving workloads on the real engine; ``(decode_serving, prefill_serving)`` for block size
    ``bs`` (each {} when its steps are too few). Each row runs ``passes`` times, in :func:`spread_order` and back
    (:data:`PASSES`), its passes joined into one record (:func:`join_passes`). ``save_dir``: also keep the
    runs' records there (:func:`save_runs`). ``deadline`` (``time.perf_counter()`` seconds): no run starts after
    it (the rest are skipped and logged, so a calibration under a time limit still writes its profile; ``notes``,
    the profile's meta, then records how many as ``serving_fit_skipped``). ``parts``: an
    :class:`~kvsim.engine.reuse.EngineParts` the runs share (one KV cache and set of CUDA graphs for all)."""
    import kvsim
    from kvsim.catalogue import get_model
    from kvsim.cost.profile import interp1
    from kvsim.engine.engine import RealEngine
    spec = get_model(profile["model"])
    ov = profile["step_overhead"]
    per_n: dict[int, list] = {}
    refs, sc, skip = [], None, set()
    free = ER.free_gpu_bytes(device)
    first = spread_order(rows)
    order = [n for k in range(passes) for n in (first if k % 2 == 0 else first[::-1])]
    for i, n in enumerate(order):
        if deadline is not None and time.perf_counter() > deadline:
            log(f"serving n={n}: skipped, and the {len(order) - i - 1} runs after it: the calibration's time "
                "limit is near")
            if notes is not None:     # the profile says its fit is short (kvsim calibrate --resume runs it whole)
                notes["serving_fit_skipped"] = {"runs": len(order) - i, "of": len(order),
                                                "why": "the calibration's time limit"}
            break
        if n in skip:
            continue
        sc = serving_scenario(profile, bs, n, device, cuda_graphs)
        why = ER.fits_memory(sc, spec, bs, device, parts, free) if free is not None else None
        if why:
            log(f"serving n={n}: skipped, {why}")
            skip.add(n)
            continue
        res = RealEngine(sc, model=model, parts=parts).run()
        per_n.setdefault(n, []).append((res.iterations, res.requests))
        refs.append((res.info.get("reference_step") or {}).get("time_s"))     # the card's speed at each run
        at_n = res.iterations[res.iterations.decode_seqs == n]
        host = f", host {at_n.cpu_s.median() * 1e3:.2f} ms" if "cpu_s" in at_n.columns and len(at_n) else ""
        log(f"serving n={n} (pass {len(per_n[n])}): {len(at_n)} decode steps at {n} rows (median "
            f"{at_n.duration_s.median() * 1e3:.2f} ms{host}), {len(lone_prefills(res.iterations))} lone prefills")
    runs = {n: join_passes(v) if len(v) > 1 else v[0] for n, v in sorted(per_n.items())}
    if save_dir is not None:
        save_runs(runs, save_dir)
    if not runs:
        return {}, {}
    from kvsim.graph_sizes import engine_graph_sizes
    graphs = engine_graph_sizes(sc)
    decode = fit_from_runs(stripped_cost(profile, bs, graphs, drop=FITTED, bare=True), runs,
                           lambda n: float(interp1(float(n), np.asarray(ov["num_seqs"], float),
                                                   np.asarray(ov["time_s"], float))))
    if decode:
        decode["reference_step_s"] = refs
    prefill = fit_prefill_from_runs(stripped_cost(profile, bs, graphs, drop=UNFITTED_PREFILL, bare=False), runs)
    return decode, prefill
