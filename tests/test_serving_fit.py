"""decode_serving: decode steps of serving-shaped batches fitted on real engine steps (kvsim.calibrate.serving_fit)
and priced by the calibrated cost model. The records come from the simulator, which writes the engine's schema."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import kvsim
from kvsim.calibrate import engine_runs as ER
from kvsim.calibrate import serving_fit as SF
from kvsim.calibrate import prefill_serving_fit as PS
from kvsim.calibrate import serving_runs as SR
from kvsim.calibrate import serving_setup as SS
from kvsim.cost.calibrated import CalibratedCostModel, Profile
from kvsim.cost.profile import interp1
from tests.profile_factory import spread_grid, synthetic_profile


def serving_run(n: int, seed: int = 0, output=(16, 96), short: bool = False):
    """Iterations and requests of a prefill-first run shaped like the calibration's (kvsim's own simulator);
    ``short``: the short-context runs' lengths as they are (``output`` unused)."""
    engine, workload = SF.serving_workload(n, 2048, short=short)
    if not short:
        workload = dict(workload, output_len_range=list(output))
    sc = kvsim.load_scenario({"name": f"{'short' if short else 'fit'}-{n}", "model": "opt-13b", "gpu": "a100-40gb",
                              "seed": seed, "engine": {"block_size": 16, "num_gpu_blocks": n * (16 if short else 80)
                                                       + 64, **engine}, "workload": workload})
    res = kvsim.simulate(sc, fast_forward=False)
    return res.iterations, res.requests


def test_step_contexts_rebuild_every_decode_step_of_a_run_without_preemption():
    its, reqs = serving_run(8)
    ctx = SF.step_contexts(its, reqs)
    decode_only = its[(its.decode_seqs > 0) & (its.prefill_tokens == 0)]
    assert len(ctx) == len(decode_only) > 50
    assert ctx.valid.all()
    assert (ctx.n.to_numpy() == decode_only.decode_seqs.to_numpy()).all()
    assert np.allclose(ctx.ctx_sum.to_numpy(), decode_only.mem_used.to_numpy())
    assert (ctx.ctx_max >= ctx.ctx_sum / ctx.n).all() and (ctx.ctx_max > ctx.ctx_sum / ctx.n + 50).mean() > 0.5
    assert (ctx.n == 8).sum() >= SF.MIN_STEPS            # the batch stays full while requests wait


def test_a_step_that_disagrees_with_its_record_is_marked_invalid():
    its, reqs = serving_run(4)
    its = its.copy()
    k = its.index[(its.decode_seqs > 0) & (its.prefill_tokens == 0)][5]
    its.loc[k, "mem_used"] += 7
    ctx = SF.step_contexts(its, reqs)
    assert not ctx.loc[k, "valid"] and ctx.valid.sum() == len(ctx) - 1
    assert SF.step_contexts(its.iloc[:0], reqs).empty


def steep_profile() -> dict:
    """The synthetic profile with decode steps 10x as context-bound (a real card's unit spans ~0.1-1 ms)."""
    prof = synthetic_profile(steps=True)
    g = prof["decode_step"]["16"]
    g["time_s"] = [[0.012 + b * c * 4e-7 for c in g["ctx"]] for b in g["batch"]]
    return prof


def cost_of(prof, graphs=(1, 2, 4, 8, 16, 32)):
    prof = dict(prof, meta=dict(prof["meta"], cuda_graphs=True))
    return CalibratedCostModel(Profile(prof), model_name="OPT-13B", dtype="fp16", block_size_tokens=16,
                               decode_graph_batches=list(graphs))


def _runs_made_of(bare, truth, noise, spread):
    """Serving runs whose decode durations are the profile's grid + o_n + ``spread(n, unit, grid spread)``
    (+ noise)."""
    rng = np.random.default_rng(1)
    runs = {}
    for n, (o, lam) in truth.items():
        its, reqs = serving_run(n, seed=n)
        its = its.copy()
        ctx = SF.step_contexts(its, reqs)
        ctx = ctx[ctx.valid]
        for k, r in ctx.iterrows():
            sums, top = np.array([r.ctx_sum]), np.array([r.ctx_max])
            grid, unit = bare.decode_grid_and_spread(int(r.n), sums, top)
            extra = spread(lam, unit[0], bare.decode_grid_spread(int(r.n), sums, top)[0])
            its.loc[k, "duration_s"] = grid[0] + o + extra + noise * rng.standard_normal()
        runs[n] = (its, reqs)
    return runs


def _overhead(prof):
    ov = prof["step_overhead"]
    return lambda n: float(interp1(float(n), np.array(ov["num_seqs"], float), np.array(ov["time_s"], float)))


@pytest.mark.parametrize("noise", [0.0, 2e-5])
def test_the_row_form_recovers_a_known_overhead_and_spread_fraction(noise):
    """Durations made from the profile's grid + o_n + λ_n·unit (+ noise): the fit returns o_n - overhead(n), λ_n."""
    prof = steep_profile()
    bare = cost_of(dict(prof, step_overhead={"num_seqs": [1.0], "time_s": [0.0]}))
    truth = {4: (1.0e-3, 0.6), 8: (1.3e-3, 0.4)}
    runs = _runs_made_of(bare, truth, noise, lambda lam, unit, _: lam * unit)
    fit = SF.fit_from_runs(bare, runs, _overhead(prof), form="row")
    assert fit["num_seqs"] == [4, 8] and "spread" not in fit
    for i, n in enumerate((4, 8)):
        o, lam = truth[n]
        assert fit["extra_s"][i] == pytest.approx(o - _overhead(prof)(n), abs=3e-5 + 2 * noise)
        assert fit["spread_frac"][i] == pytest.approx(lam, abs=0.02 if noise == 0 else 0.15)


@pytest.mark.parametrize("noise", [0.0, 2e-5])
def test_the_grid_form_recovers_the_overhead_beyond_the_spread_grids_price(noise):
    """Durations made from grid + o_n + what the profile's spread grid (fraction 0.3) prices the contexts at: the
    default form returns o_n - overhead(n), and a profile holding the fit prices those steps back."""
    prof = steep_profile()
    prof["decode_spread_step"] = {"16": spread_grid(cost_of(prof), 0.3)}
    bare = cost_of(dict(prof, step_overhead={"num_seqs": [1.0], "time_s": [0.0]}))
    truth = {4: (1.0e-3, None), 8: (1.3e-3, None)}
    runs = _runs_made_of(bare, truth, noise, lambda _, __, grid_spread: grid_spread)
    assert any((bare.decode_grid_spread(8, np.array([8 * 300.0]), np.array([1500.0])) > 1e-5).tolist())
    fit = SF.fit_from_runs(bare, runs, _overhead(prof))
    assert fit["num_seqs"] == [4, 8] and fit["spread"] == "grid" and "spread_frac" not in fit
    for i, n in enumerate((4, 8)):
        assert fit["extra_s"][i] == pytest.approx(truth[n][0] - _overhead(prof)(n), abs=1e-6 + 2 * noise)
    served = cost_of(dict(prof, decode_serving={"16": fit}))
    its, reqs = runs[8]
    ctx = SF.step_contexts(its, reqs)
    ctx = ctx[ctx.valid & (ctx.n == 8)]
    priced = served.decode_step_times(8, ctx.ctx_sum.to_numpy(float), ctx.ctx_max.to_numpy(float))
    assert np.median(priced - its.loc[ctx.index, "duration_s"].to_numpy(float)) == pytest.approx(0.0, abs=1e-6 + noise)
    with pytest.raises(ValueError, match="form"):
        SF.fit_from_runs(bare, runs, _overhead(prof), form="pooled")


def test_one_and_two_row_runs_are_fitted_as_rows_of_their_own():
    """A closed loop of one or two requests in flight gives decode steps at exactly 1 and 2 rows (each joiner's
    prompt in a step of its own): the fit recovers their terms rather than holding the 4-row one below it."""
    prof = steep_profile()
    bare = cost_of(dict(prof, step_overhead={"num_seqs": [1.0], "time_s": [0.0]}))
    truth = {1: (0.2e-3, None), 2: (0.5e-3, None), 4: (1.0e-3, None)}
    fit = SF.fit_from_runs(bare, _runs_made_of(bare, truth, 0.0, lambda *_: 0.0), _overhead(prof))
    assert fit["num_seqs"] == [1, 2, 4] and all(s >= SF.MIN_STEPS for s in fit["steps"])
    for i, n in enumerate((1, 2, 4)):
        assert fit["extra_s"][i] == pytest.approx(truth[n][0] - _overhead(prof)(n), abs=1e-9)
    assert {1, 2} <= set(SF.ROWS)


def test_the_grid_form_prices_a_rows_mean_step_when_its_steps_are_skewed(monkeypatch):
    """Steps with a slow tail (one in eight 1 ms slower, as a host stall): the fit's overhead is their mean
    beyond the grid, so the profile prices the row's total time, not its typical step (a median fit would
    price it 0.125 ms low per step)."""
    prof = steep_profile()
    prof["decode_spread_step"] = {"16": spread_grid(cost_of(prof), 0.3)}
    bare = cost_of(dict(prof, step_overhead={"num_seqs": [1.0], "time_s": [0.0]}))
    runs = _runs_made_of(bare, {4: (1.0e-3, None), 8: (1.3e-3, None)}, 0.0, lambda _, __, grid_spread: grid_spread)
    for its, reqs in runs.values():
        ctx = SF.step_contexts(its, reqs)
        slow = ctx.index[ctx.valid][::8]
        its.loc[slow, "duration_s"] += 1e-3
    fit = SF.fit_from_runs(bare, runs, _overhead(prof))
    served = cost_of(dict(prof, decode_serving={"16": fit}))
    for n, (its, reqs) in runs.items():
        ctx = SF.step_contexts(its, reqs)
        ctx = ctx[ctx.valid & (ctx.n == n)]
        priced = served.decode_step_times(n, ctx.ctx_sum.to_numpy(float), ctx.ctx_max.to_numpy(float))
        measured = its.loc[ctx.index, "duration_s"].to_numpy(float)
        assert priced.sum() == pytest.approx(measured.sum(), rel=1e-6)
        assert np.median(priced - measured) > 1e-4          # the typical step is priced above: the tail is in it
    # a one-off step (over 4x its row's median: a kernel compiled on the clock) is left out of the mean
    its, reqs = runs[8]
    ctx = SF.step_contexts(its, reqs)
    its.loc[ctx.index[ctx.valid & (ctx.n == 8)][3], "duration_s"] += 1.0
    assert SF.fit_from_runs(bare, runs, _overhead(prof))["extra_s"] == pytest.approx(fit["extra_s"], abs=2e-5)
    monkeypatch.setattr(SR, "ONE_OFF", float("inf"))       # kept, the 1 s step alone would move the row by ~10 ms
    assert SF.fit_from_runs(bare, runs, _overhead(prof))["extra_s"][1] > fit["extra_s"][1] + 1e-3


def test_rows_without_enough_steps_or_spread_are_left_out_or_filled():
    assert SF.fit_rows(np.full(30, 1e-3), np.full(30, 2e-4)) == (pytest.approx(1e-3), None, None)
    o, lam, se = SF.fit_rows(np.linspace(0, 1e-3, 30) * 10 + 5e-4, np.linspace(0, 1e-3, 30))
    assert lam == SF.MAX_FRACTION and se is not None    # a slope of 10 is clipped, the intercept refitted
    its, reqs = serving_run(4)
    assert SF.fit_from_runs(cost_of(synthetic_profile(steps=True)), {4: (its.iloc[:3], reqs)}, lambda n: 0.0) == {}


def test_the_cost_model_prices_decode_steps_with_the_fitted_terms():
    prof = synthetic_profile(steps=True)
    plain = cost_of(prof)
    served = cost_of(dict(prof, decode_serving={"16": {"num_seqs": [4, 16], "extra_s": [1e-3, 2e-3],
                                                       "spread_frac": [0.5, 1.0]}}))
    sums, top = np.array([4 * 300.0]), np.array([900.0])
    grid = plain.decode_step_times(4, sums) - float(interp1(4.0, *Profile(prof).overhead))
    hi = plain.decode_step_times(4, np.array([4 * 900.0])) - float(interp1(4.0, *Profile(prof).overhead))
    got = served.decode_step_times(4, sums, top)[0]
    assert got == pytest.approx(plain.decode_step_times(4, sums)[0] + 1e-3 + 0.5 * (hi[0] - grid[0]))
    # equal contexts: no spread term; between and beyond the fitted rows: interpolated, then held
    assert served.decode_step_times(8, np.array([2400.0]), np.array([300.0]))[0] == pytest.approx(
        plain.decode_step_times(8, np.array([2400.0]))[0] + 1e-3 + 1e-3 * 4 / 12)
    assert served.decode_step_times(32, np.array([3200.0]))[0] == pytest.approx(
        plain.decode_step_times(32, np.array([3200.0]))[0] + 2e-3)
    assert served.decode_step_times(1, np.array([300.0]))[0] == pytest.approx(
        plain.decode_step_times(1, np.array([300.0]))[0] + 1e-3)
    # a batch the engine pads (12 rows replay the 16-row graph): the fitted unit is the one priced
    grid12, unit12 = served.decode_grid_and_spread(12, np.array([12 * 300.0]), np.array([1500.0]))
    over12 = float(interp1(12.0, *Profile(prof).overhead)) + 1e-3 + 1e-3 * 8 / 12
    assert unit12[0] > 0 and served.decode_step_times(12, np.array([3600.0]), np.array([1500.0]))[0] == \
        pytest.approx(grid12[0] + over12 + (0.5 + 0.5 * 8 / 12) * unit12[0])
    below = cost_of(dict(prof, decode_serving={"16": {"num_seqs": [4], "extra_s": [-1.0], "spread_frac": [0.0]}}))
    assert below.decode_step_times(4, sums)[0] == pytest.approx(grid[0])      # the overhead floors at 0
    from kvsim.core.plan import StepPlan
    ctx = [100, 300, 500, 900]
    assert served.step_time(StepPlan(decode_group_ids=list(range(4)), decode_context_tokens=ctx)) == \
        served.decode_step_times(4, np.array([float(sum(ctx))]), np.array([900.0]))[0]


@pytest.mark.parametrize("bad", [{"num_seqs": [4, 4], "extra_s": [0, 0], "spread_frac": [0, 0]},
                                 {"num_seqs": [4], "extra_s": [0, 1], "spread_frac": [0]},
                                 {"num_seqs": [4], "extra_s": [float("nan")], "spread_frac": [0]},
                                 {"num_seqs": [4], "extra_s": [0]}])
def test_a_malformed_table_is_a_profile_error(bad):
    with pytest.raises(kvsim.KvsimError, match="profile"):
        Profile(dict(synthetic_profile(steps=True), decode_serving={"16": bad}))


def test_the_fit_runs_the_real_engine(monkeypatch, tmp_path):
    """A tiny model on the CPU: the serving runs keep n rows busy and the fit returns one row per n."""
    torch = pytest.importorskip("torch")
    from kvsim.catalogue import get_model
    from kvsim.engine.models import build_model
    monkeypatch.setattr(SS, "PROMPT_RANGE", (8, 64))
    monkeypatch.setattr(SS, "OUTPUT_RANGE", (24, 48))
    spec = get_model("tiny-opt")
    prof = dict(steep_profile(), model=spec.name, num_layers=spec.num_layers)
    model = build_model(spec, dtype=torch.float16, device=torch.device("cpu"), weights="dummy")
    lines = []
    monkeypatch.setattr(PS, "PREFILL_BIN_STEPS", 2)
    # the tiny model's CPU steps are not the synthetic profile's GPU prices: on a loaded box every lone prefill
    # could sit past ONE_OFF times its price and be left out as one-off work (the prefill fit came back empty once)
    monkeypatch.setattr(SR, "ONE_OFF", float("inf"))
    monkeypatch.setattr(ER, "ASYNC_SCHEDULING", True)
    fit, pre = SF.fit_serving(model, prof, 16, device="cpu", rows=(1, 4), cuda_graphs=False, log=lines.append,
                              save_dir=tmp_path / "runs")
    # two passes: 1, 4, then 4, 1 (one request in flight at a time: its decode steps are 1-row rows of their own);
    # an overlapped calibration also runs its stepped rows (4 of STEPPED_ROWS) once, between them, and every
    # calibration its beam rows (4 of BEAM_ROWS: two groups of two beams) on both lengths and short-context rows (4
    # of SHORT_ROWS)
    assert fit["num_seqs"] == [1, 4] and len(lines) == 8
    assert [ln.split(":")[0] for ln in lines] == ["serving n=1 (pass 1)", "serving n=4 (pass 1)",
                                                   "serving n=4 (stepped)", "serving n=4 (beam)",
                                                   "serving n=4 (beam_short)", "serving n=4 (short)",
                                                   "serving n=4 (pass 2)", "serving n=1 (pass 2)"]
    shorts = SF.load_runs(tmp_path / "runs" / "short")
    assert sorted(shorts) == [4] and shorts[4][1].prompt_len.max() <= SS.SHORT_PROMPT_RANGE[1]
    assert fit["short"]["num_seqs"] == [4] and np.isfinite(fit["short"]["beyond_s"][0])
    assert 8 < fit["short"]["ctx_per_row"][0] < 128
    beams = SF.load_runs(tmp_path / "runs" / "beam")
    assert sorted(beams) == [4] and (beams[4][0].cow_copies > 0).any()
    assert fit["beam"]["num_seqs"] == [4] and fit["beam"]["width"] == 2
    assert np.isfinite(fit["beam"]["extra_s"][0]) and np.isfinite(fit["beam"]["copy_extra_s"][0])
    assert 0.0 <= fit["beam"]["shared_saving"] <= 1.0
    short_beams = SF.load_runs(tmp_path / "runs" / "beam_short")
    assert sorted(short_beams) == [4] and short_beams[4][1].prompt_len.max() <= SS.SHORT_PROMPT_RANGE[1]
    assert short_beams[4][1].request_id.nunique() == SS.SHORT_REQUESTS_PER_SLOT * 2      # two groups a slot
    if fit["beam"].get("short_steps"):       # (a CPU run's few steps at exactly 4 rows may not make a cell)
        a_long, a_short = fit["beam"]["attention_s"][0]
        assert a_short is None or a_short < a_long
    stepped = SF.load_runs(tmp_path / "runs" / "stepped")
    assert sorted(stepped) == [4] and (stepped[4][0].host_ahead == 0).all()       # every step of it stepped
    assert (SF.load_runs(tmp_path / "runs")[4][0].host_ahead == 1).mean() > 0.5   # the passes overlapped
    assert fit["stepped"]["num_seqs"] == [4] and np.isfinite(fit["stepped"]["extra_s"][0])
    assert fit["stepped"]["host_s"][0] > 0
    assert all(len(p["step_s"]) == 2 for p in fit["by_pass"])
    runs = SF.load_runs(tmp_path / "runs")               # the saved runs refit to the same tables on the CPU
    assert sorted(runs) == [1, 4] and set(runs[4][0]["pass"]) == {0, 1}
    ov = prof["step_overhead"]
    bare = SF.stripped_cost(prof, 16, {}, drop=SF.FITTED, bare=True)
    refit = SF.fit_from_runs(bare, runs, lambda n: float(np.interp(n, ov["num_seqs"], ov["time_s"])),
                             stepped_runs=stepped, beam_runs=beams, short_runs=shorts, beam_short_runs=short_beams)
    assert refit["extra_s"] == pytest.approx(fit["extra_s"]) and refit["spread"] == fit["spread"] == "grid"
    assert refit["short"] == pytest.approx(fit["short"])
    flat = lambda d: {k: v for k, v in d.items() if k != "attention_s"}      # noqa: E731 - (pairs: no approx)
    assert refit["stepped"] == pytest.approx(fit["stepped"]) and flat(refit["beam"]) == pytest.approx(flat(fit["beam"]))
    assert refit["beam"].get("attention_s") == fit["beam"].get("attention_s")
    assert all(np.isfinite(fit["extra_s"]))
    assert all(f is None or 0 <= f <= SF.MAX_FRACTION for f in fit["spread_frac_row"])
    assert pre["steps"] >= 4 and len(pre["tokens"]) >= 2 and all(np.isfinite(pre["extra_s"]))
    assert len(pre["host_s"]) == len(pre["tokens"]) and all(h > 0 for h in pre["host_s"])   # their host parts
    Profile(dict(prof, decode_serving={"16": fit}, prefill_serving={"16": pre}))    # what calibrate writes loads back


def test_fast_forward_gives_the_stepped_runs_results_with_decode_serving(tmp_path):
    """The simulator's fast paths price decode runs through the same decode_step_times: outputs stay identical."""
    import json
    prof = dict(steep_profile(), decode_serving={"16": {"num_seqs": [2, 8, 32], "extra_s": [1e-4, 3e-4, 0.0],
                                                        "spread_frac": [0.9, 0.7, 0.5]}})
    path = tmp_path / "p.json"
    path.write_text(json.dumps(prof))
    sc = kvsim.load_scenario({"name": "ff", "model": "opt-13b", "gpu": "a100-40gb", "seed": 3,
                              "engine": {"block_size": 16, "num_gpu_blocks": 900},
                              "workload": {"dataset": "sharegpt_like", "num_requests": 60, "rate_req_s": 4},
                              "cost": {"model": "calibrated", "profile": str(path)}})
    a, b = kvsim.simulate(sc, fast_forward=True), kvsim.simulate(sc, fast_forward=False)
    assert a.summary == b.summary
    assert a.requests.equals(b.requests)
    (tmp_path / "q.json").write_text(json.dumps(steep_profile()))
    plain = kvsim.simulate(kvsim.load_scenario({**sc.to_dict(), "cost": {"model": "calibrated",
                                                                         "profile": str(tmp_path / "q.json")}}))
    assert plain.summary["latency_mean_s"] != a.summary["latency_mean_s"]      # the table is used


def test_a_flat_unit_never_breaks_the_fit():
    """A grid flat along the context (the unit is 0 everywhere, or after dropping outliers) gives no slope and
    no numerical error."""
    assert SF.fit_rows(np.linspace(1e-3, 2e-3, 40), np.zeros(40)) == (pytest.approx(1.5e-3), None, None)
    u = np.zeros(40)
    u[0] = 1e-3                                   # one step with a spread, far off the line: dropped, then flat
    y = np.full(40, 1e-3)
    y[0] = 1.0
    o, lam, se = SF.fit_rows(y, u)
    assert lam is None and se is None and o == pytest.approx(1e-3)
    assert SF.fit_rows(np.array([]), np.array([])) == (0.0, None, None)


def test_uncertain_rows_are_drawn_toward_the_precise_rows_mean():
    """A precise row keeps its own fraction; an imprecise one moves most of the way to the weighted mean; a row
    without a slope takes the mean; nothing known gives 0."""
    frac, mean = SF.pooled_fractions([(0.9, 0.02), (0.1, 1.0), (None, None), (0.8, 0.02)])
    assert mean == pytest.approx(0.85, abs=0.01)
    assert frac[0] == pytest.approx(0.9, abs=0.01) and frac[3] == pytest.approx(0.8, abs=0.01)
    assert frac[1] == pytest.approx(0.85, abs=0.05) and frac[2] == pytest.approx(mean)
    assert SF.pooled_fractions([(None, None)]) == ([0.0], 0.0)


def test_lone_prefills_are_the_joiners_prompts():
    its, _ = serving_run(4)
    lone = SF.lone_prefills(its)
    assert len(lone) >= 4 and (lone.prefill_groups == 1).all() and (lone.decode_seqs == 0).all()
    assert (lone.running > 1).all()
    assert SF.lone_prefills(its.drop(columns=["running"])).empty


def test_prefill_curve_groups_by_length_and_the_fit_recovers_a_known_extra():
    t = np.arange(16, 16 + 60 * 16, 16, dtype=float)
    c = SF.prefill_curve(t, 1e-4 * (t > 500))
    assert len(c["tokens"]) == 4 and c["tokens"] == sorted(c["tokens"])
    assert c["extra_s"][0] == 0.0 and c["extra_s"][-1] == pytest.approx(1e-4)
    assert SF.prefill_curve(t[:10], t[:10]) == {}
    assert SF.prefill_curve(np.full(40, 64.0), np.zeros(40)) == {"tokens": [64.0], "extra_s": [0.0]}
    skew = np.where(np.arange(40) % 4 == 0, 1e-3, 0.0)         # one step in four 1 ms slow: the group's mean
    assert SF.prefill_curve(np.full(40, 64.0), skew)["extra_s"] == [pytest.approx(2.5e-4)]
    prof = steep_profile()
    cost = cost_of(prof)
    runs = {n: SF.join_passes([serving_run(n, seed=n), serving_run(n, seed=n + 10)]) for n in (4, 8)}   # two passes
    from kvsim.core.plan import StepPlan
    for its, _ in runs.values():          # lone prefills made to cost their price + 0.4 ms
        for k, r in SF.lone_prefills(its).iterrows():
            its.loc[k, "duration_s"] = cost.step_time(StepPlan(prefill_group_ids=[0], prefill_new_tokens=[int(
                r.prefill_tokens)], prefill_cached_tokens=[0])) + 4e-4
    fit = SF.fit_prefill_from_runs(cost, runs)
    assert fit["steps"] >= 15 and fit["extra_s"] == pytest.approx([4e-4] * len(fit["tokens"]))
    its, _ = runs[4]                      # a one-off step (over 4x its price) is left out
    its.loc[SF.lone_prefills(its).index[0], "duration_s"] += 1.0
    again = SF.fit_prefill_from_runs(cost, runs)
    assert again["steps"] == fit["steps"] - 1 and again["extra_s"] == pytest.approx([4e-4] * len(again["tokens"]))


def test_the_cost_model_prices_prefill_only_steps_with_prefill_serving():
    from kvsim.core.plan import StepPlan
    prof = dict(synthetic_profile(steps=True), prefill_overhead={"tokens": [16, 1024], "time_s": [1e-3, 1e-3]})
    plain = cost_of(prof)
    served = cost_of(dict(prof, prefill_serving={"16": {"tokens": [64, 512], "extra_s": [2e-4, -1e-4]}}))
    one = lambda t: StepPlan(prefill_group_ids=[0], prefill_new_tokens=[t], prefill_cached_tokens=[0])
    # in place of prefill_overhead (1 ms): +0.2 ms at 64 tokens (and below), interpolated, -0.1 ms at 512;
    # past the longest measured prompt prefill_overhead again (no extrapolation onto bigger steps)
    assert served.step_time(one(64)) == pytest.approx(plain.step_time(one(64)) - 1e-3 + 2e-4)
    assert served.step_time(one(16)) == pytest.approx(plain.step_time(one(16)) - 1e-3 + 2e-4)
    assert served.step_time(one(288)) == pytest.approx(plain.step_time(one(288)) - 1e-3 + 0.5e-4)
    assert served.step_time(one(512)) == pytest.approx(plain.step_time(one(512)) - 1e-3 - 1e-4)
    assert served.step_time(one(2000)) == pytest.approx(plain.step_time(one(2000)))
    batch = StepPlan(prefill_group_ids=[0, 1, 2], prefill_new_tokens=[900, 800, 700], prefill_cached_tokens=[0] * 3)
    assert served.step_time(batch) == pytest.approx(plain.step_time(batch))
    # never below the grid price without the step overhead
    deep = cost_of(dict(prof, prefill_serving={"16": {"tokens": [64], "extra_s": [-1.0]}}))
    over = float(interp1(1.0, *Profile(prof).overhead))
    assert deep.step_time(one(64)) == pytest.approx(plain.step_time(one(64)) - 1e-3 - over)
    # mixed and decode steps keep their own pricing
    mixed = StepPlan(prefill_group_ids=[0], prefill_new_tokens=[64], prefill_cached_tokens=[0],
                     decode_group_ids=[1, 2], decode_context_tokens=[100, 200])
    assert served.step_time(mixed) == plain.step_time(mixed)


@pytest.mark.parametrize("bad", [{"tokens": [64, 64], "extra_s": [0, 0]}, {"tokens": [64], "extra_s": [0, 1]},
                                 {"tokens": [64], "extra_s": [float("inf")]}, {"tokens": [64]}])
def test_a_malformed_prefill_table_is_a_profile_error(bad):
    with pytest.raises(kvsim.KvsimError, match="profile"):
        Profile(dict(synthetic_profile(steps=True), prefill_serving={"16": bad}))


def test_rows_whose_kv_does_not_fit_are_skipped_and_said(monkeypatch):
    """A row runs only if its worst-case KV fits the free memory's share; a skipped row is logged, not run."""
    torch = pytest.importorskip("torch")
    from kvsim.catalogue import get_model
    from kvsim.engine.models import build_model
    monkeypatch.setattr(SS, "PROMPT_RANGE", (8, 64))
    monkeypatch.setattr(SS, "OUTPUT_RANGE", (24, 48))
    spec = get_model("tiny-opt")
    block_bytes, per_seq = 16 * spec.kv_bytes_per_token(2), -(-(64 + 48 + 8) // 16)   # a row's pool: n x per_seq + 64
    monkeypatch.setattr(ER, "free_gpu_bytes", lambda device: int((3 * per_seq + 64) * block_bytes / SF.KV_MEMORY_SHARE))
    prof = dict(steep_profile(), model=spec.name, num_layers=spec.num_layers)
    model = build_model(spec, dtype=torch.float16, device=torch.device("cpu"), weights="dummy")
    lines = []
    fit, _ = SF.fit_serving(model, prof, 16, device="cpu", rows=(2, 4), cuda_graphs=False, log=lines.append)
    assert any(line.startswith("serving n=4: skipped") for line in lines)
    assert not any(line.startswith("serving n=2: skipped") for line in lines)
    assert not fit or fit["num_seqs"] == [2]


def test_a_row_whose_kv_does_not_fit_runs_shorter_prompts_down_to_a_floor(monkeypatch):
    """Where a row's worst-case KV is over the room at the workload's prompts, it runs the longest prompts that fit
    (outputs kept), if those are at least MIN_PROMPT_HI long; the fit says which rows and how long, and reads the
    runs' own contexts."""
    torch = pytest.importorskip("torch")
    from kvsim.catalogue import get_model
    from kvsim.engine.models import build_model
    monkeypatch.setattr(SS, "PROMPT_RANGE", (8, 128))
    monkeypatch.setattr(SS, "OUTPUT_RANGE", (24, 48))
    monkeypatch.setattr(SS, "MIN_PROMPT_HI", 40)
    spec = get_model("tiny-opt")
    block_bytes = 16 * spec.kv_bytes_per_token(2)
    # room for 4 rows of 104-token prompts (+ 48 output + 8: 10 blocks a row), not of 128-token ones (12 blocks)
    monkeypatch.setattr(ER, "free_gpu_bytes", lambda device: int((4 * 10 + 64) * block_bytes / SF.KV_MEMORY_SHARE) + 1)
    prof = dict(steep_profile(), model=spec.name, num_layers=spec.num_layers)
    model = build_model(spec, dtype=torch.float16, device=torch.device("cpu"), weights="dummy")
    monkeypatch.setattr(SR, "ONE_OFF", float("inf"))
    lines = []
    fit, _ = SF.fit_serving(model, prof, 16, device="cpu", rows=(2, 4, 8), cuda_graphs=False, log=lines.append,
                            passes=1, stepped_rows=(), beam_rows=())
    assert any(line.startswith("serving n=4 (pass): prompts up to 104 tokens") for line in lines)
    assert not any(line.startswith("serving n=2 (pass): prompts") for line in lines)      # 2 rows fit whole
    assert any(line.startswith("serving n=8: skipped") for line in lines)                 # 8 rows: under 40
    assert fit["num_seqs"] == [2, 4] and fit["workload"]["prompt_hi_by_row"] == {"4": 104}
    sc = SS.serving_scenario(prof, 16, 4, device="cpu", prompt_hi=104)
    assert sc.workload.prompt_len_range[1] == 104 and sc.engine.num_gpu_blocks == 4 * 10 + 64
    assert SS.prompt_hi_fitting(SS.serving_scenario(prof, 16, 2, device="cpu"), 16, 10**12) == 128  # at most its own


def test_no_row_starts_after_the_deadline(monkeypatch):
    """Under a calibration time limit the serving fit starts nothing past its deadline, says so, and returns
    empty tables (the profile is then written without them)."""
    import time
    monkeypatch.setattr(ER, "ASYNC_SCHEDULING", False)     # stepped: no stepped runs besides the passes (beam runs
    # on both lengths and a short run)
    prof = steep_profile()
    lines = []
    fit, pre = SF.fit_serving(None, dict(prof, model="tiny-opt"), 16, device="cpu", rows=(2, 4), cuda_graphs=True,
                              log=lines.append, deadline=time.perf_counter() - 1.0)
    assert fit == {} and pre == {}
    assert len(lines) == 1 and lines[0].startswith("serving n=2: skipped, and the 6 runs after it")
    notes = {}
    SF.fit_serving(None, dict(prof, model="tiny-opt"), 16, device="cpu", rows=(2, 4), cuda_graphs=True,
                   log=lines.append, deadline=time.perf_counter() - 1.0, notes=notes)
    assert notes == {"serving_fit_skipped": {"runs": 7, "of": 7, "why": "the calibration's time limit"}}
    notes = {}
    SF.fit_serving(None, dict(prof, model="tiny-opt"), 16, device="cpu", rows=(), cuda_graphs=True,
                   log=lines.append, deadline=time.perf_counter() - 1.0, notes=notes)
    assert notes == {}                                    # nothing planned, nothing skipped


def test_passes_joined_keep_each_pass_steps_rebuilt_from_its_own_requests():
    a, b = serving_run(4, seed=1), serving_run(4, seed=2)
    its, reqs = SF.join_passes([a, b])
    assert len(its) == len(a[0]) + len(b[0]) and reqs.request_id.is_unique
    assert its.start_s.is_monotonic_increasing and (its.iter.to_numpy() == np.arange(len(its))).all()
    ctx = SF.step_contexts(its, reqs)
    apart = pd.concat([SF.step_contexts(*a), SF.step_contexts(*b)], ignore_index=True)
    assert ctx.valid.all() and len(ctx) == len(apart)
    assert (ctx.n.to_numpy() == apart.n.to_numpy()).all() and np.allclose(ctx.ctx_sum, apart.ctx_sum)
    assert np.allclose(ctx.ctx_max, apart.ctx_max)


def test_fewer_rows_than_the_fit_never_cost_more_than_its_first_row():
    """step_overhead's lock-step point at 1 row (one run) may sit above what the serving fit measured at its
    first row: below that row the priced overhead is capped there; the fitted rows are unchanged."""
    table = {"16": {"num_seqs": [4, 16], "extra_s": [1e-4, 2e-4], "spread": "grid"}}
    so = {"num_seqs": [1, 4, 16, 256], "time_s": [2.5e-3, 2.6e-3, 3e-3, 6e-3]}
    base = synthetic_profile(steps=True)
    fair = cost_of(dict(base, step_overhead=so, decode_serving=table))
    slow = cost_of(dict(base, step_overhead=dict(so, time_s=[6e-3, 2.6e-3, 3e-3, 6e-3]), decode_serving=table))
    for rows in (4, 8, 16, 32):                          # the fitted rows and above: as before
        s = np.array([rows * 300.0])
        assert slow.decode_step_times(rows, s)[0] == fair.decode_step_times(rows, s)[0]
    one = np.array([300.0])
    grid1 = fair.decode_step_times(1, one)[0] - (2.5e-3 + 1e-4)          # fair's 1 row is under the cap
    assert slow.decode_step_times(1, one)[0] == pytest.approx(grid1 + 2.6e-3 + 1e-4)   # not grid1 + 6.1e-3
    four = slow.decode_step_times(4, np.array([1200.0]))[0]
    assert all(slow.decode_step_times(r, np.array([r * 300.0]))[0] <= four for r in (1, 2, 3))


def test_the_fits_share_one_engine_build(monkeypatch, tmp_path):
    """The serving fit's runs through one EngineParts reserved for the largest: one build, every other run kept,
    and the same scheduling records per run as freshly built engines give (the saved runs compared)."""
    torch = pytest.importorskip("torch")
    from kvsim.catalogue import get_model
    from kvsim.engine.models import build_model
    from kvsim.engine.reuse import EngineParts
    monkeypatch.setattr(SS, "PROMPT_RANGE", (8, 64))
    monkeypatch.setattr(SS, "OUTPUT_RANGE", (24, 48))
    monkeypatch.setattr(PS, "PREFILL_BIN_STEPS", 2)
    monkeypatch.setattr(ER, "ASYNC_SCHEDULING", False)     # the four passes' runs, two beam and a short run at 4
    spec = get_model("tiny-opt")
    prof = dict(steep_profile(), model=spec.name, num_layers=spec.num_layers)
    model = build_model(spec, dtype=torch.float16, device=torch.device("cpu"), weights="dummy")
    parts = EngineParts()
    parts.reserve(max(SF.serving_scenario(prof, 16, n, "cpu", short=s).engine.num_gpu_blocks
                      for n in (2, 4) for s in (False, True)))    # (the short run's pool is the larger here)
    SF.fit_serving(model, prof, 16, device="cpu", rows=(2, 4), cuda_graphs=False, log=lambda _m: None,
                   save_dir=tmp_path / "kept", parts=parts)
    assert (parts.builds, parts.reuses) == (1, 6)
    SF.fit_serving(model, prof, 16, device="cpu", rows=(2, 4), cuda_graphs=False, log=lambda _m: None,
                   save_dir=tmp_path / "fresh")
    kept, fresh = SF.load_runs(tmp_path / "kept"), SF.load_runs(tmp_path / "fresh")
    cols = ["decode_seqs", "prefill_tokens", "mem_used", "running"]
    for n in (2, 4):
        assert kept[n][0][cols].equals(fresh[n][0][cols])
    kept, fresh = SF.load_runs(tmp_path / "kept" / "beam"), SF.load_runs(tmp_path / "fresh" / "beam")
    assert kept[4][0][cols + ["cow_copies"]].equals(fresh[4][0][cols + ["cow_copies"]])
    kept, fresh = SF.load_runs(tmp_path / "kept" / "short"), SF.load_runs(tmp_path / "fresh" / "short")
    assert kept[4][0][cols].equals(fresh[4][0][cols])


@pytest.mark.parametrize("n", [1, 2, 3, 5, 9, 16])
def test_spread_order_covers_the_range_early(n):
    """Each row once; the ends first, then the middle: a fit cut after k >= 3 runs brackets the whole range and
    has its middle, instead of the k smallest rows."""
    rows = [4 * (i + 1) for i in range(n)]
    order = SF.spread_order(reversed(rows))
    assert sorted(order) == rows
    if n >= 2:
        assert order[:2] == [rows[0], rows[-1]]
    if n >= 3:
        assert order[2] == rows[(n - 1) // 2]
        for k in range(3, n + 1):                    # no gap in a prefix wider than half the range
            got = sorted(rows.index(r) for r in order[:k])
            assert max(b - a for a, b in zip(got, got[1:])) <= -(-(n - 1) // 2)
    assert SF.spread_order(SF.ROWS)[:3] == [1, 128, 16]


def _overlapped_runs():
    """``(profile, its bare cost model, truth, runs)``: overlapped serving runs at 4 and 8 rows whose steps cost
    o_n beyond the grid, every fifth one not prepared ahead and 0.4 ms more (a closed loop's step after a prefill)."""
    prof = steep_profile()
    prof["decode_spread_step"] = {"16": spread_grid(cost_of(prof), 0.3)}
    bare = cost_of(dict(prof, step_overhead={"num_seqs": [1.0], "time_s": [0.0]}))
    truth = {4: (1.0e-3, None), 8: (1.3e-3, None)}
    runs = _runs_made_of(bare, truth, 0.0, lambda _, __, grid_spread: grid_spread)
    for its, _ in runs.values():
        its["host_ahead"] = 1
        its.loc[its.index[::5], "host_ahead"] = 0
        its.loc[its.index[::5], "duration_s"] += 4e-4
    return prof, bare, truth, runs


def test_an_overlapped_fit_prices_the_steps_prepared_ahead_and_the_stepped_ones_apart():
    """Runs of an overlapped engine (``host_ahead``): steps prepared while the one before flew cost o_n beyond the
    grid, the others (every fifth here: a closed loop's step after a prefill) 0.4 ms more. ``extra_s`` is the mean
    of all (as without the column), ``stepped`` the second kind's; the cost model prices a beam run's decode steps
    (never overlapped: ``stepped_decode``) with it."""
    prof, bare, truth, runs = _overlapped_runs()
    fit = SF.fit_from_runs(bare, runs, _overhead(prof))
    ov = _overhead(prof)
    assert fit["stepped"]["num_seqs"] == fit["num_seqs"] == [4, 8]
    for i, n in enumerate((4, 8)):
        its, reqs = runs[n]
        ctx = SF.step_contexts(its, reqs)
        share = float((its.loc[ctx.index[ctx.valid & (ctx.n == n)], "host_ahead"] == 0).mean())
        assert 0.1 < share < 0.3
        assert fit["extra_s"][i] == pytest.approx(truth[n][0] + share * 4e-4 - ov(n), abs=1e-6)
        assert fit["stepped"]["extra_s"][i] == pytest.approx(truth[n][0] + 4e-4 - ov(n), abs=1e-6)
    plain = SF.fit_from_runs(bare, {n: (its.drop(columns="host_ahead"), r) for n, (its, r) in runs.items()}, ov)
    assert "stepped" not in plain and plain["extra_s"] == pytest.approx(fit["extra_s"], abs=1e-12)
    doc = dict(prof, meta=dict(prof["meta"], cuda_graphs=True), decode_serving={"16": fit})
    sums, top = np.array([8 * 300.0]), np.array([900.0])
    prices = [CalibratedCostModel(Profile(doc), model_name="OPT-13B", dtype="fp16", block_size_tokens=16,
                                  decode_graph_batches=[1, 2, 4, 8, 16, 32], stepped_decode=s
                                  ).decode_step_times(8, sums, top)[0] for s in (False, True)]
    assert prices[1] - prices[0] == pytest.approx(fit["stepped"]["extra_s"][1] - fit["extra_s"][1], abs=1e-9)
    assert 2e-4 < prices[1] - prices[0] < 4e-4          # the stepped steps' surplus over the row's mean
    with pytest.raises(kvsim.KvsimError, match="stepped"):
        Profile(dict(doc, decode_serving={"16": dict(fit, stepped={"num_seqs": [8, 4], "extra_s": [0, 0]})}))


def test_stepped_runs_price_their_rows_in_place_of_the_few_steps_not_prepared_ahead():
    """An overlapped calibration's stepped runs (every step's host work on the critical path, 0.5 ms here) give
    ``stepped`` at their rows; a row without one keeps the overlapped runs' own steps not prepared ahead (0.4 ms
    more), and the rows' ``extra_s`` (the overlapped runs' mean) is unchanged by them."""
    prof, bare, truth, runs = _overlapped_runs()
    stepped = _runs_made_of(bare, {4: (1.0e-3 + 5e-4, None)}, 0.0, lambda _, __, grid_spread: grid_spread)
    stepped[4][0]["host_ahead"] = 0
    ov = _overhead(prof)
    fit = SF.fit_from_runs(bare, runs, ov, stepped_runs=stepped)
    assert fit["stepped"]["num_seqs"] == [4, 8]
    assert fit["stepped"]["extra_s"][0] == pytest.approx(1.0e-3 + 5e-4 - ov(4), abs=1e-9)
    assert fit["stepped"]["extra_s"][1] == pytest.approx(1.3e-3 + 4e-4 - ov(8), abs=1e-6)
    assert fit["extra_s"] == SF.fit_from_runs(bare, runs, ov)["extra_s"]
    short = {4: (stepped[4][0].iloc[:SF.MIN_STEPS // 2], stepped[4][1])}   # too few steps for the row: its own
    assert SF.fit_from_runs(bare, runs, ov, stepped_runs=short)["stepped"]["extra_s"][0] == pytest.approx(
        1.0e-3 + 4e-4 - ov(4), abs=1e-6)


def test_the_prefill_curve_keeps_each_groups_host_part_over_the_steps_not_prepared_ahead(monkeypatch):
    """``host_s``: each length group's mean host time on the critical path, the steps prepared ahead (NaN) left out;
    absent when a group has none, or without host times."""
    monkeypatch.setattr(PS, "PREFILL_BIN_STEPS", 3)
    tokens = np.array([10, 20, 30, 400, 500, 600], float)
    extra = np.full(6, 1e-4)
    host = np.array([3e-4, np.nan, 5e-4, 6e-4, 7e-4, 8e-4])
    curve = SF.prefill_curve(tokens, extra, host)
    assert curve["tokens"] == [20.0, 500.0] and curve["host_s"] == pytest.approx([4e-4, 7e-4])
    assert "host_s" not in SF.prefill_curve(tokens, extra)
    assert "host_s" not in SF.prefill_curve(tokens, extra, np.array([np.nan] * 3 + [1e-4] * 3))
