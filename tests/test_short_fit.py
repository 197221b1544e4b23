"""decode_serving[bs].short: decode steps at short contexts measured on the engine (kvsim.calibrate.short_fit),
recorded beyond the price the rest of the serving fit gives them. The records come from the simulator, which
writes the engine's schema."""
from __future__ import annotations

import numpy as np
import pytest

from kvsim.calibrate import serving_fit as SF
from kvsim.calibrate import serving_setup as SS
from kvsim.calibrate import short_fit as SH
from kvsim.cost.calibrated import Profile
from tests.profile_factory import spread_grid
from tests.test_serving_fit import _overhead, _runs_made_of, cost_of, serving_run, steep_profile

BEYOND = 2.5e-4                     # what a short-context step takes beyond its fitted price


def short_run(n: int, seed: int = 0):
    """Iterations and requests of a short-context serving run at ``n`` rows (the calibration's lengths)."""
    return serving_run(n, seed, short=True)


def _setup():
    prof = steep_profile()
    prof["decode_spread_step"] = {"16": spread_grid(cost_of(prof), 0.3)}
    bare = cost_of(dict(prof, step_overhead={"num_seqs": [1.0], "time_s": [0.0]}))
    truth = {4: (1.0e-3, None), 8: (1.3e-3, None)}
    return prof, bare, _runs_made_of(bare, truth, 0.0, lambda _, __, grid_spread: grid_spread)


def _priced_short_runs(bare, ov, extra, noise=0.0):
    """Short runs whose decode steps cost the grid, spread, overhead and ``extra(n)`` plus BEYOND (+ noise); every
    fourth step not prepared ahead and 0.5 ms more (left out of the fit)."""
    rng = np.random.default_rng(5)
    runs = {}
    for n in SH.SHORT_ROWS:
        its, reqs = short_run(n, seed=n)
        its = its.copy()
        its["host_ahead"] = 1
        ctx = SF.step_contexts(its, reqs)
        for i, (k, r) in enumerate(ctx[ctx.valid].iterrows()):
            sums, top = np.array([r.ctx_sum]), np.array([r.ctx_max])
            step = bare.decode_grid_and_spread(int(r.n), sums, top)[0][0] + \
                bare.decode_grid_spread(int(r.n), sums, top)[0] + ov(int(r.n)) + extra(int(r.n))
            late = i % 4 == 3
            its.loc[k, "host_ahead"] = 0 if late else 1
            its.loc[k, "duration_s"] = step + BEYOND + (5e-4 if late else 0.0) + noise * rng.standard_normal()
        runs[n] = (its, reqs)
    return runs


def test_the_short_workload_holds_short_contexts():
    engine, workload = SS.serving_workload(16, 8192, short=True)
    assert workload["prompt_len_range"] == list(SS.SHORT_PROMPT_RANGE)
    assert workload["output_len_range"] == list(SS.SHORT_OUTPUT_RANGE)
    assert workload["num_requests"] == SS.SHORT_REQUESTS_PER_SLOT * 16 and workload["max_concurrency"] == 16
    its, reqs = short_run(4)
    ctx = SF.step_contexts(its, reqs)
    ctx = ctx[ctx.valid & (ctx.n == 4)]
    assert len(ctx) >= SH.MIN_SHORT_STEPS and (ctx.ctx_max <= 128).all()
    doc = SS.serving_scenario_doc(steep_profile(), 16, 4, device="cpu", short=True)
    assert doc["name"] == "calibrate-serving-short-4"


@pytest.mark.parametrize("noise", [0.0, 2e-5])
def test_the_fit_records_what_short_steps_take_beyond_their_price(noise):
    """Short-context steps made from the fitted price plus BEYOND: the fit returns BEYOND per row from the steps
    prepared ahead (the others, 0.5 ms slower, are left out) and their mean context a row; ``fit_from_runs``
    records it under ``short`` and a profile holding it loads and prices decode steps as without it."""
    prof, bare, runs = _setup()
    ov = _overhead(prof)
    fit = SF.fit_from_runs(bare, runs, ov)
    extra = lambda n: float(np.interp(n, fit["num_seqs"], fit["extra_s"]))  # noqa: E731
    shorts = _priced_short_runs(bare, ov, extra, noise)
    got = SH.fit_short(bare, shorts, ov, extra)
    assert got["num_seqs"] == list(SH.SHORT_ROWS)
    assert got["beyond_s"] == pytest.approx([BEYOND] * len(SH.SHORT_ROWS), abs=1e-9 + 2 * noise)
    for n, c, k in zip(got["num_seqs"], got["ctx_per_row"], got["steps"]):
        its, reqs = shorts[n]
        ctx = SF.step_contexts(its, reqs)
        ctx = ctx[ctx.valid & (ctx.n == n)]
        ahead = its.loc[ctx.index, "host_ahead"].to_numpy() == 1
        assert k == ahead.sum() >= SH.MIN_SHORT_STEPS
        assert c == pytest.approx(ctx.ctx_sum.to_numpy()[ahead].mean() / n) and 8 < c < 128
    both = SF.fit_from_runs(bare, runs, ov, short_runs=shorts)
    assert len(both["ctx_per_row"]) == len(both["num_seqs"])     # where each row's extra was measured: far longer
    assert min(both["ctx_per_row"]) > 2 * max(got["ctx_per_row"])
    assert both["short"]["beyond_s"] == pytest.approx(got["beyond_s"], abs=1e-12)
    assert {k: v for k, v in both.items() if k != "short"}.keys() == fit.keys() and "ctx_per_row" in fit
    with_short = cost_of(dict(prof, decode_serving={"16": both}))
    without = cost_of(dict(prof, decode_serving={"16": fit}))
    sums, top = np.array([4 * 60.0, 4 * 600.0]), np.array([100.0, 900.0])
    assert (with_short.decode_step_times(4, sums, top) == without.decode_step_times(4, sums, top)).all()
    Profile(dict(prof, decode_serving={"16": both}))


def test_rows_without_enough_short_steps_are_left_out():
    prof, bare, runs = _setup()
    ov = _overhead(prof)
    shorts = _priced_short_runs(bare, ov, lambda n: 0.0)
    its, reqs = shorts[16]
    its = its.assign(host_ahead=0)
    ctx = SF.step_contexts(its, reqs)
    its.loc[ctx.index[ctx.valid & (ctx.n == 16)][:5], "host_ahead"] = 1   # five prepared ahead: too few to judge by
    shorts[16] = (its, reqs)
    got = SH.fit_short(bare, shorts, ov, lambda n: 0.0)
    assert got["num_seqs"] == [n for n in SH.SHORT_ROWS if n != 16]
    assert SH.fit_short(bare, {16: shorts[16]}, ov, lambda n: 0.0) is None
    assert "short" not in SF.fit_from_runs(bare, runs, ov, short_runs={16: shorts[16]})
