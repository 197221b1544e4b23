"""``kvsim calibrate --fast``: the measurement code paths on a tiny model on the CPU (timing function replaced),
the profile holding every block size and loading in the calibrated cost model, and the time estimate's counts."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kvsim.calibrate import fast as F  # noqa: E402
from kvsim.calibrate import measure as M  # noqa: E402
from kvsim.calibrate.profile import measure_block  # noqa: E402
from kvsim.catalogue import get_model  # noqa: E402
from kvsim.core.plan import StepPlan  # noqa: E402
from kvsim.cost.calibrated import FORMAT, VERSION, CalibratedCostModel, Profile  # noqa: E402
from kvsim.engine.models import build_model  # noqa: E402

SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256]


@pytest.fixture(scope="module")
def fast_profile():
    """A --fast profile of tiny-opt over SIZES, every timed call run once and given a made-up time."""
    calls = itertools.count(1)
    ran = []

    def fake_bench(fn, warmup=10, rep=40, min_samples=12):
        fn()
        ran.append(1)
        return 1e-4 * next(calls)

    def fake_between(fn, between, reps=10):
        between()
        return fake_bench(fn)
    mp = pytest.MonkeyPatch()
    mp.setattr(M, "_bench", fake_bench)
    mp.setattr(M, "_bench_between", fake_between)
    mp.setattr(M, "BACKEND", "torch")
    # the same code paths on smaller grids (the CPU's reference kernels are slow at 256 x 2048); the dense
    # grid keeps more points than the coarse one, as in F.DENSE / F.COARSE
    small = {"batch": [1, 4, 16], "ctx": [128, 256], "spread": [256], "prefill": [16, 128], "attn_batch": [1, 4],
             "attn_ctx": [16, 256], "pre_new": [16, 128], "pre_cached": [0, 64], "copy": [1, 8]}
    mp.setattr(F, "DENSE", dict(small, batch=[1, 2, 4, 8, 16], ctx=[64, 128, 256]))
    mp.setattr(F, "COARSE", small)
    spec = get_model("tiny-opt")
    dev = torch.device("cpu")
    model = build_model(spec, dtype=torch.float32, device=dev, weights="dummy")
    prof = {"format": FORMAT, "version": VERSION, "model": spec.name, "dtype": "fp16",
            "num_layers": spec.num_layers, "meta": {"gpu": "cpu", "cuda_graphs": False, "fast": True},
            "step_overhead": {"num_seqs": [1, 256], "time_s": [1e-3, 2e-3]}}
    prof["linear"], prof["layer_other"] = M.measure_nonattention(model, dev)
    prof["lm_head"] = M.measure_lm_head(model, dev)
    per_block, grids = {}, {}
    try:
        for bs in SIZES:
            before = len(ran)
            for key, table in measure_block(model, bs, dev, cuda_graphs=False, fast=True).items():
                prof.setdefault(key, {})[str(bs)] = table
            per_block[bs] = len(ran) - before
            grids[bs] = F.grid_for(bs, spec.max_seq_len)
    finally:
        mp.undo()
    return prof, per_block, grids


def test_fast_profile_has_every_block_size_and_loads(fast_profile):
    prof, _, _ = fast_profile
    p = Profile(prof)
    assert p.block_sizes == SIZES
    for key in ("decode_step", "decode_spread_step", "prefill_step", "decode_attn", "prefill_attn", "copy_block", "swap"):
        assert sorted(int(b) for b in prof[key]) == SIZES, key
    assert "mixed_step" not in prof                     # skipped in --fast: the older mixed pricing applies
    for bs in SIZES:
        cost = CalibratedCostModel(p, model_name="tiny-opt", dtype="fp16", block_size_tokens=bs)
        # reduced grids still interpolate: between grid points, and beyond them by the last slope
        lo = cost.step_time(StepPlan(decode_group_ids=list(range(16)), decode_context_tokens=[100] * 16))
        mid = cost.step_time(StepPlan(decode_group_ids=list(range(20)), decode_context_tokens=[150] * 20))
        hi = cost.step_time(StepPlan(decode_group_ids=list(range(32)), decode_context_tokens=[200] * 32))
        assert np.isfinite([lo, mid, hi]).all() and lo <= mid <= hi
        pre = cost.step_time(StepPlan(prefill_group_ids=[0], prefill_new_tokens=[300], prefill_cached_tokens=[0]))
        mixed = cost.step_time(StepPlan(prefill_group_ids=[0], prefill_new_tokens=[64], prefill_cached_tokens=[0],
                                        decode_group_ids=[1, 2], decode_context_tokens=[100, 120]))
        assert pre > 0 and mixed > 0
        assert cost.swap_time(10, 0) > 0 and cost.copy_time(10, 0) > 0


def test_small_blocks_get_the_dense_grid(fast_profile):
    prof, per_block, grids = fast_profile
    for bs in SIZES:
        g = grids[bs]
        assert prof["decode_step"][str(bs)]["batch"] == g["batch"]
        assert prof["decode_attn"][str(bs)]["ctx"] == g["attn_ctx"]
        # the estimate's count is what the code times
        assert per_block[bs] == F.block_points(g), bs
    assert len(prof["decode_step"]["1"]["batch"]) > len(prof["decode_step"]["256"]["batch"])
    assert F.block_points(F.grid_for(1)) > F.block_points(F.grid_for(16))


def test_estimate_counts_points_not_a_constant():
    one = F.estimate_seconds([16])
    nine = F.estimate_seconds(SIZES)
    assert nine["points"] == one["points"] + sum(F.block_points(F.grid_for(b)) for b in SIZES if b != 16)
    assert nine["estimate_s"] == pytest.approx(nine["points"] * nine["seconds_per_point"])
    # the fast grid of one block is well under the full one it replaces
    assert F.block_points(F.grid_for(16)) < F.full_points() - F.shared_points()
    assert "estimate" in F.estimate_full_or_fast(SIZES, True) and "to be measured" in nine["basis"]
    # a full calibration also runs the serving fit (fast ones do not), and its estimate says so
    assert "serving fit" in F.estimate_full_or_fast([16], False) and "serving fit" not in F.estimate_full_or_fast([16], True)
    # ... at every block size it measures unless told which (--serving-block-sizes)
    assert "at each of 2 block sizes" in F.estimate_full_or_fast([16, 64], False)
    assert "at each of" not in F.estimate_full_or_fast([16, 64], False, serving_fits=1)
    both, one = F.estimate_total_s([16, 64], False), F.estimate_total_s([16, 64], False, serving_fits=1)
    assert both - one == pytest.approx(F.SERVING_FIT_SECONDS)
    said = F.estimate_full_or_fast([16, 64], False, grid_idle=1.0)       # and the whole of it, at its end
    assert said.endswith(f"~{F.estimate_total_s([16, 64], False, grid_idle=1.0) / 60:.1f} min in all")


def test_a_time_limit_under_the_estimate_is_warned_about():
    total = F.estimate_total_s([16, 64], False)
    assert total > F.estimate_total_s([16], False) > F.SERVING_FIT_SECONDS + F.FITS_SECONDS
    assert F.time_limit_warning([16, 64], False, None) is None
    assert F.time_limit_warning([16, 64], False, total + 1) is None
    warn = F.time_limit_warning([16, 64], False, total - 1)
    assert warn.startswith("warning: --time-limit") and "serving fit will be cut" in warn and "merge-profiles" in warn
    assert "block sizes whose grids no longer fit are left out" in warn
    assert F.estimate_total_s(SIZES, True) == pytest.approx(F.estimate_seconds(SIZES)["estimate_s"])   # no fits


def test_a_time_limit_stops_block_sizes_whose_grids_would_not_fit():
    """--time-limit governs the grids: the first block size always starts; a later one only when the time left
    holds the slowest one so far plus the fits after the grids (2026-12-06: three OPT-13B block sizes under a
    575 s timeout wrote nothing)."""
    from kvsim.calibrate.profile import OVERHEAD_FIT_S, RESERVE_AFTER_SERVING_S, grids_out_of_time
    after = OVERHEAD_FIT_S + RESERVE_AFTER_SERVING_S
    assert grids_out_of_time(23.0, [], 100.0) is None                    # the first block size starts
    assert grids_out_of_time(263.0, [256.0], None) is None               # no limit
    assert grids_out_of_time(263.0, [256.0], 263 + 256 + after) is None  # just fits
    why = grids_out_of_time(263.0, [256.0], 555.0)
    assert why.startswith("not started: --time-limit 555 s leaves 292 s") and "merge-profiles" in why
    assert grids_out_of_time(263.0, [100.0, 256.0], 263 + 200 + after) is not None   # the slowest one counts
    assert grids_out_of_time(600.0, [256.0], 555.0).startswith("not started: --time-limit 555 s leaves 0 s")


def test_grid_idle_rests_the_card_before_each_timed_step_and_counts_in_the_estimate(monkeypatch):
    """``--grid-idle X``: each timed step of the grids timed between decode steps waits X times its own time after
    them (the card leaves its power limit, as between serving's steps); the estimate grows by X times the prompt steps' share of the grids; bad values are one-line
    errors naming the flag; 0 changes nothing."""
    from kvsim.cli import main
    slept, order = [], []
    monkeypatch.setattr(M.time, "sleep", lambda s: (slept.append(s), order.append("sleep")))
    monkeypatch.setattr(M, "GRID_IDLE", 2.0)

    def step():
        order.append("step")
        x = 0
        for i in range(20000):
            x += i
    M._bench_between(step, lambda: order.append("between"), reps=3)
    assert order[:1] == ["step"] and order[1:] == ["between", "sleep", "step"] * 3
    assert len(slept) == 3 and all(s == slept[0] > 0 for s in slept)
    monkeypatch.setattr(M, "GRID_IDLE", 0.0)
    order.clear()
    M._bench_between(step, lambda: order.append("between"), reps=2)
    assert "sleep" not in order
    base, idle = F.estimate_total_s([16], False), F.estimate_total_s([16], False, grid_idle=1.0)
    assert idle - base == pytest.approx(F.full_grid_estimate([16])[1] * F.PROMPT_STEP_SHARE)
    assert "--grid-idle 1" in F.estimate_full_or_fast([16], False, grid_idle=1.0)
    for bad in ("-1", "nan", "11"):
        with pytest.raises(SystemExit) as e:
            raise SystemExit(main(["calibrate", "--model", "opt-13b", "--estimate", "--grid-idle", bad]))
        assert e.value.code == 2


def test_grid_idle_defaults_to_one_and_is_refused_with_resume_only_when_given(capsys):
    """The default idles (an H100 ran long prompt steps 5-15% faster after an idle gap than back to back); the
    estimate says so; ``--grid-idle 0`` is back to back; ``--resume`` keeps the grids, so an explicit
    ``--grid-idle`` with it is an error naming the flag, while leaving it out is not."""
    from kvsim.calibrate.cli import DEFAULT_GRID_IDLE
    from kvsim.cli import main
    assert DEFAULT_GRID_IDLE == 1.0
    assert main(["calibrate", "--model", "opt-13b", "--estimate"]) == 0
    assert "--grid-idle 1" in capsys.readouterr().out
    assert main(["calibrate", "--model", "opt-13b", "--estimate", "--grid-idle", "0"]) == 0
    assert "--grid-idle" not in capsys.readouterr().out
    assert main(["calibrate", "--resume", "calibrate/profiles/H200/opt-13b.json", "--grid-idle", "1"]) == 2
    assert "--grid-idle" in capsys.readouterr().err


def test_swap_mode_of_a_calibration(monkeypatch):
    """Swaps are timed (and recorded) staged as the engine swaps by default; ``--swap-per-layer`` times and records
    the per-layer copies (vLLM V0's way, ``runtime.swap_staged: false``), and lets ``--resume`` take up a profile
    measured before staged swaps, which it refuses otherwise with a hint."""
    from kvsim.calibrate.resume import check_engine_mode
    from kvsim.config import RuntimeConfig
    from kvsim.errors import KvsimError
    monkeypatch.setattr(M, "SWAP_STAGED", None)
    assert M.swap_staged() is RuntimeConfig().swap_staged is True
    monkeypatch.setattr(M, "SWAP_STAGED", False)
    assert M.swap_staged() is False
    if not torch.cuda.is_available():      # the CLI sets the mode, then stops for want of a GPU
        from kvsim.cli import main
        assert main(["calibrate", "--model", "opt-13b", "--block-sizes", "16"]) == 2
        assert M.SWAP_STAGED is None
        assert main(["calibrate", "--model", "opt-13b", "--block-sizes", "16", "--swap-per-layer"]) == 2
        assert M.SWAP_STAGED is False
    old = {"meta": {"cuda_graphs": True}}           # recorded before swap_staged existed: per-layer swaps
    check_engine_mode(old, {"swap_staged": False})
    with pytest.raises(KvsimError) as e:
        check_engine_mode(old, {"swap_staged": True})
    assert e.value.field == "meta.swap_staged" and "--swap-per-layer" in str(e.value)


def test_overlap_mode_of_a_calibration(monkeypatch):
    """The fits' engine runs run in the engine's default mode (overlapped), stepped with ``--no-async-scheduling``
    (recorded as ``meta.async_scheduling``, their runs' ``runtime.async_scheduling``); ``--resume`` of a profile
    of the other mode is refused with a hint."""
    from kvsim.calibrate import engine_runs as ER
    from kvsim.calibrate import serving_fit as SF
    from kvsim.calibrate.resume import check_engine_mode
    from kvsim.config import RuntimeConfig
    from kvsim.errors import KvsimError
    monkeypatch.setattr(ER, "ASYNC_SCHEDULING", None)
    assert ER.async_scheduling() is RuntimeConfig().async_scheduling
    prof = {"model": "OPT-13B", "dtype": "fp16"}
    assert SF.serving_scenario_doc(prof, 16, 8)["runtime"]["async_scheduling"] is RuntimeConfig().async_scheduling
    monkeypatch.setattr(ER, "ASYNC_SCHEDULING", True)
    assert ER.async_scheduling() is True and SF.serving_scenario_doc(prof, 16, 8)["runtime"]["async_scheduling"]
    if not torch.cuda.is_available():      # the CLI sets the mode, then stops for want of a GPU
        from kvsim.cli import main
        assert main(["calibrate", "--model", "opt-13b", "--block-sizes", "16"]) == 2
        assert ER.ASYNC_SCHEDULING is None
        assert main(["calibrate", "--model", "opt-13b", "--block-sizes", "16", "--async-scheduling"]) == 2
        assert ER.ASYNC_SCHEDULING is True
        assert main(["calibrate", "--model", "opt-13b", "--block-sizes", "16", "--no-async-scheduling"]) == 2
        assert ER.ASYNC_SCHEDULING is False and ER.async_scheduling() is False
    overlapped = {"meta": {"cuda_graphs": True, "async_scheduling": True}}
    with pytest.raises(KvsimError) as e:
        check_engine_mode(overlapped, {"async_scheduling": False})
    assert e.value.field == "meta.async_scheduling" and "--async-scheduling" in str(e.value)
    with pytest.raises(KvsimError) as e:
        check_engine_mode({"meta": {"cuda_graphs": True}}, {"async_scheduling": True})   # older: stepped
    assert e.value.field == "meta.async_scheduling" and "--no-async-scheduling" in str(e.value)


def test_the_estimate_scales_with_the_models_parameters_and_its_longest_context():
    """Seconds per point are OPT-13B's (the basis) scaled by parameters; a model with longer contexts has more points
    at the same seconds per point (the basis is not re-divided over the model's own point count)."""
    scale = F.model_scale("llama-3-8b")
    assert F.model_scale(None) == F.model_scale("opt-13b") == 1.0 and 0.5 < scale < 0.75
    opt, llama = F.full_grid_estimate([16], 2048), F.full_grid_estimate([16], 8192, scale)
    assert llama[0] > opt[0] and llama[1] / llama[0] == pytest.approx(opt[1] / opt[0] * scale)
    assert F.full_grid_estimate([16], 8192)[1] > opt[1]
    assert F.estimate_total_s([16], False, 8192, scale=scale) < F.estimate_total_s([16], False, 8192)
    assert "Llama-3-8B's parameters" in F.estimate_full_or_fast([16], False, 8192, model="llama-3-8b")
    # Llama-3-8B at block 16, measured whole in 322 s on an H100 (2026-12-07, results_H100/async_1207 at commit 98cc84c;
    # 315 s on another, results_H100/async_1207b): the estimate,
    # an upper bound with --grid-idle 1, lies between that and a quarter more
    assert F.time_limit_warning([16], False, 400, 8192, 1.0, model="llama-3-8b") is None
    assert "under the estimate" in F.time_limit_warning([16], False, 322, 8192, 1.0, model="llama-3-8b")
    assert "under the estimate" in F.time_limit_warning([16], False, 340, 2048, 1.0, model="opt-13b")
