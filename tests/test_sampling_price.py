"""Beam search's sampling priced apart: the scheduler counts what a step samples (StepPlan.beam_rows /
beam_first / draw_rows), the engine samples exactly that, and a profile's ``sampling`` table prices it
(kvsim.calibrate.sampling, CalibratedCostModel.sampling_extra)."""
from __future__ import annotations

import numpy as np
import pytest

import kvsim
from kvsim.core import scheduler as S
from kvsim.core.plan import StepPlan
from kvsim.cost.calibrated import CalibratedCostModel, Profile
from tests.profile_factory import synthetic_profile

TABLE = {"greedy": {"rows": [2, 8, 64], "time_s": [5e-5, 5e-5, 6e-5]},
         "beam": {"rows": [2, 8, 64], "time_s": [3e-4, 3.1e-4, 4e-4]},
         "beam_first": {"groups": [1, 32], "time_s": [2e-4, 2.6e-4]}, "vocab": 1000, "beam_width": 2}


def cost(table=TABLE):
    prof = synthetic_profile(steps=True)
    if table is not None:
        prof["sampling"] = table
    return CalibratedCostModel(Profile(prof), model_name="OPT-13B", dtype="fp16", block_size_tokens=16)


def plans(monkeypatch, tmp_path, calibrated=True, **over) -> list[StepPlan]:
    """Every plan the scheduler makes in a small simulated run, priced by a calibrated profile with a sampling
    table (or by the roofline)."""
    import json
    out = []
    orig = S.Scheduler.schedule

    def keep(self, now):
        out.append(orig(self, now))
        return out[-1]
    monkeypatch.setattr(S.Scheduler, "schedule", keep)
    doc = {"name": "beams", "model": "opt-13b", "gpu": "a100-40gb", "seed": 3,
           "engine": {"block_size": 16, "num_gpu_blocks": 400},
           "workload": {"dataset": "uniform", "prompt_len_range": [8, 40], "output_len_range": [4, 12],
                        "num_requests": 12, "rate_req_s": 50, **over}}
    if calibrated:
        path = tmp_path / "prof.json"
        path.write_text(json.dumps(dict(synthetic_profile(steps=True), sampling=TABLE)))
        doc["cost"] = {"model": "calibrated", "profile": str(path)}
    kvsim.simulate(kvsim.load_scenario(doc), fast_forward=False)
    return out


def test_the_scheduler_counts_beam_rows_first_steps_and_draws(monkeypatch, tmp_path):
    ps = plans(monkeypatch, tmp_path, beam_width=3)
    assert sum(p.beam_first for p in ps) == 12                   # each group's first beam step, once
    for p in ps:
        assert p.beam_first <= len(p.prefill_group_ids) and p.draw_rows == 0
        assert p.beam_rows == len(p.decode_context_tokens)       # every decoding sequence is a beam
    assert any(p.beam_rows for p in ps) and all(p.beam_rows % 3 == 0 for p in ps)
    plain = plans(monkeypatch, tmp_path)
    assert all(p.beam_rows == p.beam_first == p.draw_rows == 0 for p in plain)   # nothing counted without beams


def test_the_simulator_asks_for_the_counts_only_when_its_cost_model_prices_them(monkeypatch, tmp_path):
    """The roofline does not price sampling: no counts (the simulator's beam steps stay as fast as before)."""
    assert all(p.beam_rows == p.beam_first == 0 for p in plans(monkeypatch, tmp_path, calibrated=False,
                                                                beam_width=2))


def test_a_beam_step_costs_the_beam_call_instead_of_the_greedy_draw():
    c, plain = cost(), cost(None)
    dec = StepPlan(decode_group_ids=[0, 1], decode_context_tokens=[100, 120, 300, 310], beam_rows=4)
    assert c.step_time(dec) == pytest.approx(plain.step_time(dec) + np.interp(4, [2, 8], [3e-4, 3.1e-4]) - 5e-5)
    mixed = StepPlan(decode_group_ids=[0, 1], decode_context_tokens=[100, 120, 300], beam_rows=2, draw_rows=1)
    assert c.step_time(mixed) == pytest.approx(plain.step_time(mixed) + 3e-4)      # the greedy draw still runs
    first = StepPlan(prefill_group_ids=[5], prefill_new_tokens=[64], prefill_cached_tokens=[0], beam_first=1)
    assert c.step_time(first) == pytest.approx(plain.step_time(first) + 2e-4 - 5e-5)
    copy = StepPlan(decode_group_ids=[0], decode_context_tokens=[100, 120], copy_pairs=[(1, 2)], beam_rows=2)
    assert c.step_time(copy) == pytest.approx(plain.step_time(copy) + 3e-4 - 5e-5)
    assert c.sampling_extra(StepPlan(decode_group_ids=[0], decode_context_tokens=[9], draw_rows=1)) == 0.0
    assert plain.sampling_extra(dec) == 0.0                                           # no table: not priced


@pytest.mark.parametrize("bad", [{k: v for k, v in TABLE.items() if k != "beam"},
                                 dict(TABLE, greedy={"rows": [8, 2], "time_s": [1e-5, 1e-5]}),
                                 dict(TABLE, beam_first={"groups": [1], "time_s": [float("nan")]})])
def test_a_malformed_sampling_table_is_a_profile_error(bad):
    with pytest.raises(kvsim.KvsimError, match="profile"):
        Profile(dict(synthetic_profile(steps=True), sampling=bad))


def test_the_table_is_measured_on_any_torch_device():
    pytest.importorskip("torch")
    from kvsim.calibrate.sampling import sampling_table
    t = sampling_table(500, "cpu", rows=(2, 8), first_groups=(1, 4), reps=3)
    assert t["greedy"]["rows"] == t["beam"]["rows"] == [2, 8] and t["beam_first"]["groups"] == [1, 4]
    assert t["timing"] == "alone"        # nothing runs ahead of a call on the CPU (on a GPU: "behind")
    assert all(x > 0 for k in ("greedy", "beam", "beam_first") for x in t[k]["time_s"])
    assert cost(t).sampling_extra(StepPlan(decode_group_ids=[0], decode_context_tokens=[9, 9], beam_rows=2)) >= 0
    Profile(dict(synthetic_profile(steps=True), sampling=t))


def test_the_engine_samples_what_the_plan_counts(monkeypatch):
    """The real engine (tiny model, CPU): each step's beam calls cover plan.beam_rows rows and
    plan.beam_first groups, and its independent draws plan.draw_rows rows."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    from kvsim.engine import sampling
    from kvsim.engine.engine import RealEngine
    seen = {"beam": 0, "first": 0, "draw": 0}
    counts = []
    for name, key, rows in (("beam_steps", "beam", lambda a: a[0].shape[0]),
                            ("beam_first_steps", "first", lambda a: a[0].shape[0]),
                            ("sample_rows", "draw", lambda a: a[0].shape[0])):
        orig = getattr(sampling, name)

        def wrapped(*a, _orig=orig, _key=key, _rows=rows, **k):
            seen[_key] += _rows(a)
            return _orig(*a, **k)
        monkeypatch.setattr(sampling, name, wrapped)
    sc = kvsim.load_scenario({"name": "beams", "model": "tiny-llama", "gpu": "a100-40gb", "seed": 4,
                              "engine": {"block_size": 16, "num_gpu_blocks": 200, "max_num_batched_tokens": 256},
                              "workload": {"dataset": "uniform", "prompt_len_range": [8, 30],
                                           "output_len_range": [3, 6], "num_requests": 6, "rate_req_s": 100,
                                           "beam_width": 2},
                              "runtime": {"device": "cpu", "cuda_graphs": False, "warmup": False}})
    eng = RealEngine(sc, model=None)
    eng.sched.count_sampling = True
    schedule = eng.sched.schedule

    def counted(now):
        p = schedule(now)
        counts.append((p.beam_rows, p.beam_first, p.draw_rows, dict(seen)))
        return p
    eng.sched.schedule = counted
    eng.run()
    after = [c[3] for c in counts[1:]] + [dict(seen)]
    for (beam, first, draw, before), now in zip(counts, after):
        assert (now["beam"] - before["beam"], now["first"] - before["first"], now["draw"] - before["draw"]) == \
            (beam, first, draw)
    assert sum(c[0] for c in counts) > 0 and sum(c[1] for c in counts) == 6


def test_beam_search_on_a_profile_without_sampling_gets_a_note(tmp_path):
    """A profile from before the sampling calls were timed prices beam steps as greedy ones: the run says so."""
    import json
    from pathlib import Path

    import kvsim
    from kvsim.build import sampling_note, setup_run
    root = Path(__file__).resolve().parents[1]
    doc = json.loads((root / "calibrate/profiles/H200/opt-13b.json").read_text())
    assert doc.pop("sampling")                  # the committed profile has the table; an older one did not
    old = tmp_path / "opt-13b-no-sampling.json"
    old.write_text(json.dumps(doc))
    base = {"name": "beam-note", "model": "opt-13b", "gpu": "h200-141gb", "seed": 0,
            "cost": {"model": "calibrated", "profile": str(old)},
            "workload": {"dataset": "uniform", "prompt_len_range": [20, 40], "output_len_range": [4, 8],
                         "num_requests": 3, "arrival": "burst"}}
    beam = kvsim.load_scenario({**base, "workload": {**base["workload"], "beam_width": 2}})
    s = setup_run(beam)
    assert "has no sampling table" in sampling_note(beam, s.cost, s.requests)
    greedy = kvsim.load_scenario(base)
    s = setup_run(greedy)
    assert sampling_note(greedy, s.cost, s.requests) is None
    llama = kvsim.load_scenario({**base, "model": "llama-3-8b", "workload": {**base["workload"], "beam_width": 2},
                                 "cost": {"model": "calibrated",
                                          "profile": str(root / "calibrate/profiles/H200/llama-3-8b.json")}})
    s = setup_run(llama)
    assert sampling_note(llama, s.cost, s.requests) is None          # its profile prices beam sampling
