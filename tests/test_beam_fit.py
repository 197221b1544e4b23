"""decode_serving[bs].beam: beam search's decode steps measured whole on the engine (kvsim.calibrate.beam_fit), fitted
beyond the stepped step of their rows and priced by the calibrated cost model in place of the sampling table. The
records come from the simulator, which writes the engine's schema."""
from __future__ import annotations

import numpy as np
import pytest

import kvsim
from kvsim.calibrate import beam_fit as BF
from kvsim.calibrate import serving_fit as SF
from kvsim.core.plan import StepPlan
from kvsim.cost.calibrated import CalibratedCostModel, Profile
from tests.test_serving_fit import _overhead, _runs_made_of, cost_of, steep_profile

PLAIN, COPYING = 3e-4, 5e-4          # what a beam step adds beyond the stepped step: without and with copies


def beam_run(n: int, seed: int = 0):
    """Iterations and requests of a beam-search serving run at ``n`` rows (n // 2 groups of two beams)."""
    engine, workload = SF.serving_workload(n, 2048, BF.BEAM_WIDTH)
    workload = dict(workload, output_len_range=[16, 96], num_requests=6 * (n // BF.BEAM_WIDTH))
    sc = kvsim.load_scenario({"name": f"beam-{n}", "model": "opt-13b", "gpu": "a100-40gb", "seed": seed,
                              "engine": {"block_size": 16, "num_gpu_blocks": n * 80 + 64, **engine},
                              "workload": workload})
    res = kvsim.simulate(sc, fast_forward=False)
    return res.iterations, res.requests


def _priced_beam_runs(bare, ov, extra, noise=0.0):
    """Beam runs whose decode steps cost the stepped step (grid, spread, overhead, ``extra(n)``) plus PLAIN, or the
    profile's copy table plus COPYING where they copy (+ noise)."""
    rng = np.random.default_rng(3)
    runs = {}
    for n in BF.BEAM_ROWS:
        its, reqs = beam_run(n, seed=n)
        its = its.copy()
        ctx = SF.step_contexts(its, reqs, BF.BEAM_WIDTH)
        for k, r in ctx[ctx.valid].iterrows():
            sums, top = np.array([r.ctx_sum]), np.array([r.ctx_max])
            step = bare.decode_grid_and_spread(int(r.n), sums, top)[0][0] + \
                bare.decode_grid_spread(int(r.n), sums, top)[0] + ov(int(r.n)) + extra(int(r.n))
            c = int(its.loc[k, "cow_copies"])
            its.loc[k, "duration_s"] = step + (bare.copy_time(c, 0) + COPYING if c else PLAIN) + \
                noise * rng.standard_normal()
        runs[n] = (its, reqs)
    return runs


def _setup():
    prof = steep_profile()
    bare = cost_of(dict(prof, step_overhead={"num_seqs": [1.0], "time_s": [0.0]}))
    return prof, bare, _overhead(prof)


def test_beam_steps_rebuild_their_rows_from_the_groups_requests():
    its, reqs = beam_run(4)
    ctx = SF.step_contexts(its, reqs, BF.BEAM_WIDTH)
    decode_only = its[(its.decode_seqs > 0) & (its.prefill_tokens == 0)]
    assert len(ctx) == len(decode_only) and ctx.valid.all()
    assert (ctx.n.to_numpy() == decode_only.decode_seqs.to_numpy()).all() and (ctx.n % 2 == 0).all()
    assert (decode_only.cow_copies > 0).mean() > 0.2 and (decode_only.cow_copies == 0).mean() > 0.2
    assert not SF.step_contexts(its, reqs).valid.any()      # read as one row per request, no step matches


@pytest.mark.parametrize("noise", [0.0, 2e-5])
def test_the_fit_recovers_what_beam_steps_add_with_and_without_copies(noise):
    prof, bare, ov = _setup()
    extra = lambda n: 1e-4 + 1e-5 * n        # noqa: E731 - the stepped extra the serving fit gives a row
    fit = BF.fit_beam(bare, _priced_beam_runs(bare, ov, extra, noise), ov, extra)
    assert fit["num_seqs"] == list(BF.BEAM_ROWS) and fit["width"] == BF.BEAM_WIDTH
    tol = 1e-9 if noise == 0 else 2e-5
    assert fit["extra_s"] == pytest.approx([PLAIN] * 2, abs=tol)
    assert fit["copy_extra_s"] == pytest.approx([COPYING] * 2, abs=tol)
    assert all(s >= 2 * BF.MIN_BEAM_STEPS for s in fit["steps"])
    wrong = BF.fit_beam(bare, _priced_beam_runs(bare, ov, extra), ov, lambda n: 0.0)   # another reference: moves
    assert wrong["extra_s"][0] == pytest.approx(PLAIN + extra(4), abs=1e-9)


def test_the_serving_fit_prices_beam_runs_beyond_its_own_stepped_extra():
    """Through fit_from_runs: the reference is the row extras the same fit gives (no stepped rows here), so the
    beam table is what the beam steps add beyond the stepped step the cost model prices for them."""
    prof, bare, ov = _setup()
    runs = _runs_made_of(bare, {4: (1.0e-3, None), 16: (1.6e-3, None)}, 0.0, lambda _, __, grid_spread: grid_spread)
    plain = SF.fit_from_runs(bare, runs, ov)
    row = lambda n: float(np.interp(n, plain["num_seqs"], plain["extra_s"]))      # noqa: E731
    fit = SF.fit_from_runs(bare, runs, ov, beam_runs=_priced_beam_runs(bare, ov, row))
    assert fit["extra_s"] == plain["extra_s"] and "beam" not in plain
    assert fit["beam"]["extra_s"] == pytest.approx([PLAIN] * 2, abs=1e-9)
    doc = dict(prof, meta=dict(prof["meta"], cuda_graphs=True), decode_serving={"16": fit})
    kw = dict(model_name="OPT-13B", dtype="fp16", block_size_tokens=16, decode_graph_batches=[1, 2, 4, 8, 16, 32])
    beams, greedy = (CalibratedCostModel(Profile(doc), stepped_decode=s, **kw) for s in (True, False))
    assert beams.prices_sampling
    for rows, copies in ((4, []), (16, []), (4, [(1, 2)]), (8, [(1, 2), (3, 4)])):
        plan = StepPlan(decode_group_ids=list(range(rows // 2)), decode_context_tokens=[300] * rows,
                        beam_rows=rows, copy_pairs=copies)
        step = beams.decode_step_times(rows, np.array([300.0 * rows]), np.array([300.0]))[0]
        added = (beams.copy_time(len(copies), 0) + COPYING) if copies else PLAIN
        assert beams.step_time(plan) == pytest.approx(step + added, abs=1e-9)
        assert greedy.step_time(plan) != pytest.approx(beams.step_time(plan), abs=1e-7)   # overlapped runs: not used
    lone = StepPlan(decode_group_ids=[0, 1], decode_context_tokens=[300, 300])             # no beams: as before
    assert beams.step_time(lone) == pytest.approx(
        beams.decode_step_times(2, np.array([600.0]), np.array([300.0]))[0], abs=1e-12)


@pytest.mark.parametrize("bad", [{"num_seqs": [4, 16], "extra_s": [0.0, 0.0]},
                                 {"num_seqs": [16, 4], "extra_s": [0.0, 0.0], "copy_extra_s": [0.0, 0.0]},
                                 {"num_seqs": [4, 16], "extra_s": [0.0, 0.0], "copy_extra_s": [0.0]},
                                 {"num_seqs": [4], "extra_s": ["x"], "copy_extra_s": [0.0]}])
def test_a_malformed_beam_table_is_a_profile_error(bad):
    prof, bare, ov = _setup()
    runs = _runs_made_of(bare, {4: (1.0e-3, None)}, 0.0, lambda _, __, grid_spread: grid_spread)
    fit = SF.fit_from_runs(bare, runs, ov)
    with pytest.raises(kvsim.KvsimError, match="beam"):
        Profile(dict(prof, decode_serving={"16": dict(fit, beam=bad)}))


def test_a_beam_run_that_fails_is_left_out_and_the_fit_goes_on(monkeypatch):
    """The beam runs are optional: one that fails is logged and the serving fit's tables come out as without it."""
    torch = pytest.importorskip("torch")
    from kvsim.calibrate import engine_runs as ER
    from kvsim.calibrate import prefill_serving_fit as PS
    from kvsim.calibrate import serving_runs as SR
    from kvsim.calibrate import serving_setup as SS
    from kvsim.catalogue import get_model
    from kvsim.engine.engine import RealEngine
    from kvsim.engine.models import build_model
    monkeypatch.setattr(SS, "PROMPT_RANGE", (8, 64))
    monkeypatch.setattr(SS, "OUTPUT_RANGE", (24, 48))
    monkeypatch.setattr(PS, "PREFILL_BIN_STEPS", 2)
    monkeypatch.setattr(SR, "ONE_OFF", float("inf"))
    monkeypatch.setattr(ER, "ASYNC_SCHEDULING", False)
    run = RealEngine.run

    def failing(self):
        if self.sc.workload.beam_width > 1:
            raise RuntimeError("no beams here\nsecond line")
        return run(self)
    monkeypatch.setattr(RealEngine, "run", failing)
    spec = get_model("tiny-opt")
    prof = dict(steep_profile(), model=spec.name, num_layers=spec.num_layers)
    model = build_model(spec, dtype=torch.float16, device=torch.device("cpu"), weights="dummy")
    lines = []
    fit, _ = SF.fit_serving(model, prof, 16, device="cpu", rows=(4,), cuda_graphs=False, log=lines.append, passes=1)
    assert fit["num_seqs"] == [4] and "beam" not in fit
    assert lines[1] == "serving n=4 (beam): failed, left out: RuntimeError: no beams here"
