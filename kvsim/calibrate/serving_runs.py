"""The serving fit's engine runs as records (:mod:`kvsim.calibrate.serving_fit`): each decode step's contexts
rebuilt from a run's requests, a row's passes joined into one record, lone prefill steps picked out, and the runs
saved and loaded (``kvsim calibrate --serving-runs DIR``) so a fit can be redone on a CPU, and the order the rows
run in (:func:`spread_order`)."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

ONE_OFF = 4.0      # a serving run's step over this many times its row's median (a decode step) or its price (a lone
#                    prefill) is one-off work (a kernel compiled on the clock), left out of the serving fits' means
#                    as kvsim validate lists such steps apart


def step_contexts(its: pd.DataFrame, reqs: pd.DataFrame, width: int = 1) -> pd.DataFrame:
    """Per decode-only step of a run without preemption: rows, context sum and longest context rebuilt from
    the requests' first-token and finish times, and whether they match the step's own ``decode_seqs`` and
    ``mem_used`` (``valid``; only those steps should be used). Index: the iteration's row in ``its``.
    ``width``: every request searches that many beams (one row each, all of its context; ``mem_used`` counts
    the blocks the beams share once, so only the rows are checked).

    A request decodes in every decode-bearing step that starts after its first token and before its finish;
    its context in a step is its prompt, the token its prefill sampled and one more per earlier decode step
    (the step's new token included, as ``mem_used`` counts it)."""
    cols = ["n", "ctx_sum", "ctx_max", "valid"]
    out = {}
    for i, ctx in decode_step_rows(its, reqs):
        n, total = width * len(ctx), width * float(ctx.sum())
        ok = n == int(its.decode_seqs.iloc[i]) and n > 0 and \
            (width > 1 or "mem_used" not in its.columns or abs(total - float(its.mem_used.iloc[i])) < 0.5)
        out[its.index[i]] = (n, total, float(ctx.max()) if n else 0.0, ok)
    return pd.DataFrame.from_dict(out, orient="index", columns=cols)


def decode_step_rows(its: pd.DataFrame, reqs: pd.DataFrame):
    """``(position in its, contexts)`` per decode-only step: the context of each request decoding in it (its
    prompt, the token its prefill sampled and one more per decode step up to this one's), in the requests'
    order (:func:`step_contexts` says how, and checks them against the step's own columns)."""
    if not len(its) or not len(reqs):
        return
    done = reqs[reqs.first_token_s.notna() & reqs.finish_s.notna()]
    ft = done.first_token_s.to_numpy(float)
    fin = done.finish_s.to_numpy(float)
    prompt = done.prompt_len.to_numpy(float)
    starts = its.start_s.to_numpy(float)
    bearing = its.decode_seqs.to_numpy() > 0
    dstarts = starts[bearing]
    first = np.searchsorted(dstarts, ft, side="left")       # each request's first decode-bearing step
    for i in np.nonzero(bearing & (its.prefill_tokens.to_numpy() == 0))[0]:
        t = starts[i]
        live = (ft <= t) & (fin > t)
        yield int(i), prompt[live] + 1 + (np.searchsorted(dstarts, t, side="left") - first[live])


class RowSteps(NamedTuple):
    """One run's decode steps at one row count, per step: measured, the grid's price and spread unit, the spread
    term, host time on the critical path (None without ``cpu_s``), not one-off work, prepared ahead (None when the
    run does not say), their rows in the run's iterations, and their rows' context sums and longest contexts."""
    dur: np.ndarray
    grid: np.ndarray
    u: np.ndarray
    spread: np.ndarray
    cpu: np.ndarray | None
    usual: np.ndarray
    ahead: np.ndarray | None
    index: pd.Index
    sums: np.ndarray
    top: np.ndarray


def row_steps(cost, its: pd.DataFrame, reqs: pd.DataFrame, n: int, min_steps: int, width: int = 1) -> RowSteps | None:
    """The decode-only steps at exactly ``n`` rows of one run (contexts from :func:`step_contexts`, ``width`` beams
    a request), priced by ``cost``'s grid and spread, or None when fewer than ``min_steps``; a step over
    :data:`ONE_OFF` times the median is not ``usual``."""
    ctx = step_contexts(its, reqs, width)
    ctx = ctx[ctx.valid & (ctx.n == n)] if len(ctx) else ctx
    if len(ctx) < min_steps:
        return None
    sums, top = ctx.ctx_sum.to_numpy(float), ctx.ctx_max.to_numpy(float)
    grid, u = cost.decode_grid_and_spread(n, sums, top)
    spread = cost.decode_grid_spread(n, sums, top)
    dur = its.loc[ctx.index, "duration_s"].to_numpy(float)
    cpu = its.loc[ctx.index, "cpu_s"].to_numpy(float) if "cpu_s" in its.columns else None
    usual = dur <= ONE_OFF * float(np.median(dur))
    return RowSteps(dur, grid, u, spread, cpu, usual, host_ahead(its.loc[ctx.index]), ctx.index, sums, top)


def host_ahead(its: pd.DataFrame) -> np.ndarray | None:
    """Which of these engine steps were scheduled and prepared while the step before them was in flight
    (``host_ahead``, :mod:`kvsim.engine.serve_loop`); None for stepped runs and records without the column."""
    if "host_ahead" not in its.columns:
        return None
    a = its.host_ahead.to_numpy() == 1
    return a if a.any() else None


def by_pass(its: pd.DataFrame, n: int) -> dict | None:
    """``{"step_s": [...], "host_s": [...]}``: the median decode step at ``n`` rows and its host time, per pass
    of a joined record (:func:`join_passes`); None for a single run."""
    if "pass" not in its.columns:
        return None
    d = its[(its.decode_seqs == n) & (its.prefill_tokens == 0)]
    g = d.groupby("pass")
    return {"step_s": [float(x) for x in g.duration_s.median()],
            "host_s": [float(x) for x in g.cpu_s.median()] if "cpu_s" in d.columns else None}


def lone_prefills(its: pd.DataFrame) -> pd.DataFrame:
    """The prefill-only steps of one fresh prompt taken while other requests were running (a serving run's
    joiners; the opening burst's multi-prompt steps and a prompt reaching an idle engine are left out)."""
    need = {"prefill_tokens", "decode_seqs", "prefill_groups", "running"}
    if not need <= set(its.columns):
        return its.iloc[:0]
    sel = (its.prefill_tokens > 0) & (its.decode_seqs == 0) & (its.prefill_groups == 1) & (its.running > 1)
    return its[sel]


def join_passes(passes: list[tuple[pd.DataFrame, pd.DataFrame]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row's runs from several passes as one record: each later pass shifted in time after the one before
    (a second's gap) and its request ids after the earlier ones', so :func:`step_contexts` rebuilds each
    pass's steps from its own requests; ``pass`` says which pass a step or request came from."""
    its_all, reqs_all, t0, id0 = [], [], 0.0, 0
    for k, (its, reqs) in enumerate(passes):
        its, reqs = its.copy(), reqs.copy()
        its["start_s"] = its.start_s + t0
        for c in ("arrival_s", "first_scheduled_s", "first_token_s", "finish_s"):
            if c in reqs.columns:
                reqs[c] = reqs[c] + t0
        if "request_id" in reqs.columns:
            reqs["request_id"] = reqs.request_id + id0
            id0 = int(reqs.request_id.max()) + 1 if len(reqs) else id0
        its["pass"], reqs["pass"] = k, k
        its_all.append(its)
        reqs_all.append(reqs)
        if len(its):
            t0 = float((its.start_s + its.duration_s).max()) + 1.0
    its, reqs = pd.concat(its_all, ignore_index=True), pd.concat(reqs_all, ignore_index=True)
    if "iter" in its.columns:
        its["iter"] = np.arange(len(its))
    return its, reqs


def save_runs(runs: dict[int, tuple[pd.DataFrame, pd.DataFrame]], out_dir) -> None:
    """The serving runs' engine records, ``out_dir/n<N>/{iterations,requests}.csv``, for :func:`load_runs`."""
    from pathlib import Path
    for n, (its, reqs) in runs.items():
        d = Path(out_dir) / f"n{n}"
        d.mkdir(parents=True, exist_ok=True)
        its.to_csv(d / "iterations.csv", index=False)
        reqs.to_csv(d / "requests.csv", index=False)


def load_runs(out_dir) -> dict[int, tuple[pd.DataFrame, pd.DataFrame]]:
    """The runs :func:`save_runs` wrote, by ``n``: refit them on the CPU with :func:`fit_from_runs` /
    :func:`fit_prefill_from_runs` (e.g. another fit form, checked against the same GPU data). Each csv may be
    kept gzip-compressed (``iterations.csv.gz``, ``requests.csv.gz``; :func:`kvsim.validate_records.record_file`)."""
    from pathlib import Path

    from kvsim.validate_records import record_file
    runs = {}
    for d in sorted(Path(out_dir).glob("n*"), key=lambda p: int(p.name[1:]) if p.name[1:].isdigit() else -1):
        its = record_file(d, "iterations.csv")
        if d.name[1:].isdigit() and its.is_file():
            runs[int(d.name[1:])] = (pd.read_csv(its), pd.read_csv(record_file(d, "requests.csv")))
    return runs


def spread_order(rows) -> list[int]:
    """``rows`` sorted, then ordered ends first and halves after (0, n-1, the middle, the quarters, ...), so a fit
    cut short by a time limit after k runs has rows spread over the range (interpolated) rather than its k
    smallest (the rest extrapolated from the last, held flat)."""
    rows = sorted(rows)
    if len(rows) <= 2:
        return rows
    order, spans = [0, len(rows) - 1], [(0, len(rows) - 1)]
    while spans:
        nxt = []
        for lo, hi in spans:
            if hi - lo > 1:
                mid = (lo + hi) // 2
                order.append(mid)
                nxt += [(lo, mid), (mid, hi)]
        spans = nxt
    return [rows[i] for i in order]
