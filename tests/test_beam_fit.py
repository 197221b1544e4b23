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
SAVING = 0.6                         # the share of its shared reads' grid attention time a beam step does not pay


def beam_run(n: int, seed: int = 0, short: bool = False):
    """Iterations and requests of a beam-search serving run at ``n`` rows (n // 2 groups of two beams); ``short``:
    on the short-context lengths."""
    engine, workload = SF.serving_workload(n, 2048, BF.BEAM_WIDTH, short=short)
    workload = dict(workload, output_len_range=[16, 64 if short else 96], num_requests=6 * (n // BF.BEAM_WIDTH))
    sc = kvsim.load_scenario({"name": f"beam-{n}", "model": "opt-13b", "gpu": "a100-40gb", "seed": seed,
                              "engine": {"block_size": 16, "num_gpu_blocks": n * 80 + 64, **engine},
                              "workload": workload})
    res = kvsim.simulate(sc, fast_forward=False)
    return res.iterations, res.requests


def _priced_beam_runs(bare, ov, extra, noise=0.0, saving=0.0, short=False, drift=0.0):
    """Beam runs whose decode steps cost the stepped step (grid, spread, overhead, ``extra(n)``) plus PLAIN, or the
    profile's copy table plus COPYING where they copy, less ``saving`` times the grid's attention time of the reads
    their beams share (the rows' blocks less the blocks in use) (+ noise); ``short``: on short requests; ``drift``:
    less ``drift`` times that attention's departure from its run's mean (what else moves with the context inside
    one run)."""
    rng = np.random.default_rng(3)
    runs = {}
    for n in BF.BEAM_ROWS:
        its, reqs = beam_run(n, seed=n, short=short)
        its = its.copy()
        ctx = SF.step_contexts(its, reqs, BF.BEAM_WIDTH)
        shared_of = lambda r: max(r.ctx_sum / 16 + r.n / 2 - its.loc[r.name, "blocks_in_use"], 0.0) * 16  # noqa
        attn = {k: bare.shared_attention(int(r.n), np.array([r.ctx_sum]), np.array([r.ctx_max]), [shared_of(r)])[0]
                for k, r in ctx[ctx.valid].iterrows()}
        mean_attn = float(np.mean(list(attn.values())))
        for k, r in ctx[ctx.valid].iterrows():
            sums, top = np.array([r.ctx_sum]), np.array([r.ctx_max])
            step = bare.decode_grid_and_spread(int(r.n), sums, top)[0][0] + \
                bare.decode_grid_spread(int(r.n), sums, top)[0] + ov(int(r.n)) + extra(int(r.n))
            c = int(its.loc[k, "cow_copies"])
            its.loc[k, "duration_s"] = step + (bare.copy_time(c, 0) + COPYING if c else PLAIN) + \
                noise * rng.standard_normal() - saving * attn[k] - drift * (attn[k] - mean_attn)
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
    assert fit["shared_saving"] == pytest.approx(0.0, abs=0.05 if noise else 1e-9)
    assert all(s >= 2 * BF.MIN_BEAM_STEPS for s in fit["steps"])
    wrong = BF.fit_beam(bare, _priced_beam_runs(bare, ov, extra), ov, lambda n: 0.0)   # another reference: moves
    assert wrong["extra_s"][0] == pytest.approx(PLAIN + extra(4), abs=1e-9)


@pytest.mark.parametrize("noise", [0.0, 1e-5])
def test_the_fit_recovers_the_saving_on_reads_the_beams_share(noise):
    """Beams read their shared prompt blocks once each: the steps that share more cost less, by a share of the
    grid's attention time of those reads that the fit takes from the steps' variation inside each row and kind."""
    prof, bare, ov = _setup()
    extra = lambda n: 1e-4                  # noqa: E731
    runs = _priced_beam_runs(bare, ov, extra, noise, saving=SAVING)
    attn = [BF.beam_row(bare, its, reqs, n, ov, extra)[2] for n, (its, reqs) in runs.items()]
    assert all(a.max() > 2 * max(a.min(), 1e-5) for a in attn)      # the shared reads vary inside each run
    fit = BF.fit_beam(bare, runs, ov, extra)
    tol = 1e-9 if noise == 0 else 0.1
    assert fit["shared_saving"] == pytest.approx(SAVING, abs=tol)
    assert fit["extra_s"] == pytest.approx([PLAIN] * 2, abs=1e-9 if noise == 0 else 1e-5)
    assert fit["copy_extra_s"] == pytest.approx([COPYING] * 2, abs=1e-9 if noise == 0 else 1e-5)
    plain = BF.fit_beam(bare, _priced_beam_runs(bare, ov, extra, noise, saving=0.0), ov, extra)
    assert plain["shared_saving"] < 0.1 < fit["shared_saving"]


def test_two_context_lengths_pin_the_saving_where_a_drift_inside_each_run_would_not():
    """A cost that moves with the context inside one run (here 0.8x the shared reads' attention about the run's mean)
    sends the fit inside each run to the top of its clip; the short runs, shared reads a tenth as long, bring it
    back to the saving that going from one length to the other shows."""
    prof, bare, ov = _setup()
    extra = lambda n: 1e-4                  # noqa: E731
    long_runs = _priced_beam_runs(bare, ov, extra, 0.0, saving=SAVING, drift=0.8)
    short_runs = _priced_beam_runs(bare, ov, extra, 0.0, saving=SAVING, short=True, drift=0.8)
    inside = BF.fit_beam(bare, long_runs, ov, extra)
    assert inside["shared_saving"] == 1.0 and "short_steps" not in inside
    both = BF.fit_beam(bare, long_runs, ov, extra, short_runs=short_runs)
    assert both["shared_saving"] == pytest.approx(SAVING, abs=0.1)    # the drift is about each run's mean, not
    # each (row, kind)'s, so a little of it reaches the cells' means; without it the saving comes back exactly
    plain = BF.fit_beam(bare, _priced_beam_runs(bare, ov, extra, 0.0, saving=SAVING), ov, extra,
                        short_runs=_priced_beam_runs(bare, ov, extra, 0.0, saving=SAVING, short=True))
    assert plain["shared_saving"] == pytest.approx(SAVING, abs=1e-9)
    assert all(s >= BF.MIN_BEAM_STEPS for s in both["short_steps"]) and both["steps"] == inside["steps"]
    for long_a, short_a in both["attention_s"]:      # the short runs' shared reads: a small part of the long runs'
        assert 0 < short_a < long_a / 3
    # the extras it prices: the steps' own mean beyond, the saving added back, over both lengths
    assert plain["extra_s"] == pytest.approx([PLAIN] * 2, abs=1e-9)
    assert plain["copy_extra_s"] == pytest.approx([COPYING] * 2, abs=1e-9)
    assert both["extra_s"] == pytest.approx([PLAIN] * 2, abs=1e-4)
    noisy = BF.fit_beam(bare, _priced_beam_runs(bare, ov, extra, 2e-5, saving=SAVING, drift=0.8), ov, extra,
                        short_runs=_priced_beam_runs(bare, ov, extra, 2e-5, saving=SAVING, short=True, drift=0.8))
    assert noisy["shared_saving"] == pytest.approx(SAVING, abs=0.1)


def test_the_scheduler_counts_each_extra_read_of_a_block_its_beams_share(monkeypatch, tmp_path):
    """``StepPlan.beam_shared_blocks``: the beam rows' table lengths less the distinct blocks in them, group by
    group, as the scheduler hands the plan over (after its appends and copies)."""
    from kvsim.core import scheduler as S
    from tests.test_sampling_price import plans
    seen = []
    orig = S.Scheduler.schedule

    def check(self, now):
        plan = orig(self, now)
        want = 0
        for gid in plan.decode_group_ids:
            tables = [self.kv.block_table(s.seq_id) for s in self.groups[gid].seqs]
            want += sum(map(len, tables)) - len(set().union(*tables))
        seen.append((plan.beam_shared_blocks, want))
        return plan
    monkeypatch.setattr(S.Scheduler, "schedule", check)
    plans(monkeypatch, tmp_path, beam_width=3, prompt_len_range=[20, 70])
    assert seen and all(got == want for got, want in seen)
    assert sum(got > 0 for got, _ in seen) > len(seen) // 3
    seen.clear()
    plans(monkeypatch, tmp_path, n=3, prompt_len_range=[20, 70])       # not beams: not counted
    assert seen and all(got == 0 for got, _ in seen) and any(want > 0 for _, want in seen)


def test_a_beam_step_pays_its_shared_reads_at_the_saving():
    prof, bare, ov = _setup()
    runs = _runs_made_of(bare, {4: (1.0e-3, None), 16: (1.6e-3, None)}, 0.0, lambda _, __, grid_spread: grid_spread)
    fit = SF.fit_from_runs(bare, runs, ov)
    beam = {"num_seqs": [4, 16], "extra_s": [PLAIN] * 2, "copy_extra_s": [COPYING] * 2}
    kw = dict(model_name="OPT-13B", dtype="fp16", block_size_tokens=16, decode_graph_batches=[1, 2, 4, 8, 16, 32],
              stepped_decode=True)
    model = {s: CalibratedCostModel(Profile(dict(prof, meta=dict(prof["meta"], cuda_graphs=True), decode_serving={
        "16": dict(fit, beam=dict(beam, shared_saving=s) if s is not None else beam)})), **kw) for s in (None, 0.5)}
    ctx = [640] * 8
    for shared in (0, 10, 30):
        plan = StepPlan(decode_group_ids=[0, 1, 2, 3], decode_context_tokens=ctx, beam_rows=8,
                        beam_shared_blocks=shared)
        attn = model[0.5].shared_attention(8, np.array([5120.0]), np.array([640.0]), np.array([16.0 * shared]))[0]
        assert model[None].step_time(plan) == model[None].step_time(StepPlan(
            decode_group_ids=[0, 1, 2, 3], decode_context_tokens=ctx, beam_rows=8))   # no saving: as before
        assert model[0.5].step_time(plan) == pytest.approx(model[None].step_time(plan) - 0.5 * attn, abs=1e-12)
        assert (attn > 0) == (shared > 0)
    more = [model[0.5].step_time(StepPlan(decode_group_ids=[0], decode_context_tokens=ctx, beam_rows=8,
                                          beam_shared_blocks=k)) for k in (0, 10, 30)]
    assert more[0] > more[1] > more[2]


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
                                 {"num_seqs": [4], "extra_s": ["x"], "copy_extra_s": [0.0]},
                                 {"num_seqs": [4], "extra_s": [0.0], "copy_extra_s": [0.0], "shared_saving": 1.5},
                                 {"num_seqs": [4], "extra_s": [0.0], "copy_extra_s": [0.0], "shared_saving": "x"}])
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
