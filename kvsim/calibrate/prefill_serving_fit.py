"""The serving fit's lone prefill steps (a closed loop's joiner prompt while the others wait): ``prefill_serving``,
what such a step of T prompt tokens costs beyond its grid price, by length, and its host work on the critical path
(:mod:`kvsim.calibrate.serving_fit` runs the engine and fits the decode rows). Needs no torch."""
from __future__ import annotations

import numpy as np
import pandas as pd

from kvsim.calibrate import serving_runs as SR
from kvsim.calibrate.serving_runs import lone_prefills

PREFILL_BINS, PREFILL_BIN_STEPS = 8, 15   # lone prefill steps: at most 8 length groups of >= 15 steps


def prefill_curve(tokens: np.ndarray, extra: np.ndarray, host: np.ndarray | None = None) -> dict:
    """``{"tokens", "extra_s"}``: the steps cut into up to :data:`PREFILL_BINS` groups of at least
    :data:`PREFILL_BIN_STEPS` by prompt length, each group's median length and mean extra ({} when too few): the
    mean, as the decode rows' (:func:`kvsim.calibrate.serving_fit.fit_from_runs`); on the H200 of 2026-12-06 these
    steps' extras had a long slow tail, group means 0.06-0.50 ms above the medians, and a fit of medians priced the
    validation runs' prefill-only steps 3.1% low (step-weighted), of means 1.7% (validation/H200-1206/README.md at commit 040af3a). ``host``: each
    step's host time on the critical path (NaN for a step prepared ahead), giving ``host_s``, each group's mean
    over its other steps, where every group has some."""
    tokens, extra = np.asarray(tokens, float), np.asarray(extra, float)
    k = min(PREFILL_BINS, len(tokens) // PREFILL_BIN_STEPS)
    if k < 1:
        return {}
    xs, ys, hs = [], [], []
    for g in np.array_split(np.argsort(tokens, kind="stable"), k):
        x, y = float(np.median(tokens[g])), float(np.mean(extra[g]))
        if xs and x <= xs[-1]:           # equal lengths: one point
            continue
        xs.append(x)
        ys.append(y)
        if host is not None:
            h = np.asarray(host, float)[g]
            hs.append(float(np.mean(h[np.isfinite(h)])) if np.isfinite(h).any() else None)
    out = {"tokens": xs, "extra_s": ys}
    if hs and all(h is not None for h in hs):
        out["host_s"] = hs
    return out


def fit_prefill_from_runs(cost, runs: dict[int, tuple[pd.DataFrame, pd.DataFrame]]) -> dict:
    """``prefill_serving`` from the lone prefill steps of the serving runs: measured minus ``cost``'s price
    (a calibrated cost model of the profile without ``prefill_overhead``: grid + step overhead), by length; a step
    over ``serving_runs.ONE_OFF`` times its price is one-off work and left out. Runs that record the host time on the
    critical path (``cpu_s``) also give ``host_s`` by length, over the steps not prepared ahead: what a prompt
    step prepared ahead does not pay (:mod:`kvsim.overlap`)."""
    from kvsim.core.plan import StepPlan
    toks, extra, host = [], [], []
    timed = all("cpu_s" in its.columns for its, _ in runs.values())
    for its, _ in runs.values():
        lone = lone_prefills(its)
        cpu = lone.cpu_s.to_numpy(float) if timed else np.full(len(lone), np.nan)
        if timed and "host_ahead" in lone.columns:       # a step prepared ahead had its host work off the path
            cpu = np.where(lone.host_ahead.to_numpy() == 1, np.nan, cpu)
        for t, d, h in zip(lone.prefill_tokens.to_numpy(), lone.duration_s.to_numpy(), cpu):
            plan = StepPlan(prefill_group_ids=[0], prefill_new_tokens=[int(t)], prefill_cached_tokens=[0])
            price = cost.step_time(plan)
            if float(d) > SR.ONE_OFF * price:
                continue
            toks.append(float(t))
            extra.append(float(d) - price)
            host.append(float(h))
    out = prefill_curve(np.array(toks), np.array(extra), np.array(host) if timed else None)
    return dict(out, steps=len(toks)) if out else {}
