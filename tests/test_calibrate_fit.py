"""The prefill host-overhead fit of ``kvsim calibrate`` runs real engine prefills (here a tiny model on the CPU)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import kvsim.calibrate.prefill_fit as fits  # noqa: E402
from kvsim.calibrate.prefill_fit import fit_prefill_overhead  # noqa: E402
from kvsim.catalogue import get_model  # noqa: E402
from kvsim.engine.models import build_model  # noqa: E402
from tests.profile_factory import synthetic_profile  # noqa: E402


def test_prefill_overhead_fit_times_lone_prefills_of_each_length(monkeypatch):
    spec = get_model("tiny-opt")
    prof = dict(synthetic_profile(), model=spec.name, num_layers=spec.num_layers)
    model = build_model(spec, dtype=torch.float16, device=torch.device("cpu"), weights="dummy")
    monkeypatch.setattr(fits, "PREFILL_OVERHEAD_RATE", 1.0)       # 1 s apart: lone even on a loaded CPU
    fit = fit_prefill_overhead(model, prof, 16, device="cpu", tokens=[16, 64], cuda_graphs=False, prompts=3)
    assert fit["tokens"] == [16, 64]
    assert len(fit["time_s"]) == 2 and all(t >= 0.0 for t in fit["time_s"])
    # each of the lone prompts after the first two reached an idle engine: its wake measured, under the gap
    assert 0.0 <= fit["latency_s"] < 1.0
    # the residual is measured minus priced: a profile pricing prefills 1 s slower leaves nothing
    slow = dict(prof, step_overhead={"num_seqs": [1, 256], "time_s": [1.0, 1.0]})
    assert fit_prefill_overhead(model, slow, 16, device="cpu", tokens=[16], cuda_graphs=False,
                                prompts=3)["time_s"] == [0.0]


def test_busy_prefill_fit_times_prompts_that_arrive_while_others_decode(monkeypatch):
    """The busy fit asks the engine for prompts arriving while others decode and times only the lone prefill
    steps that met running requests (the engine's records are made up here: a real CPU engine's timing
    decides which prompts pile up, so a test of the selection must not depend on it)."""
    import pandas as pd
    spec = get_model("tiny-opt")
    prof = dict(synthetic_profile(), model=spec.name, num_layers=spec.num_layers)
    asked = []

    def fake_records(model, profile_, name, device, cuda_graphs, engine, workload, parts=None):
        asked.append(workload)
        t = workload["prompt_len"]
        rows = [  # (prefill_tokens, prefill_groups, decode_seqs, running, duration_s)
            (2 * t, 2, 0, 3, 9.0),        # two prompts together: not a lone prompt
            (0, 0, 2, 2, 9.0),            # a decode step
            (t, 1, 0, 2, 1.0), (t, 1, 0, 3, 1.0), (t, 1, 0, 3, 0.5), (t, 1, 0, 4, 0.5), (t, 1, 0, 4, 0.5),
            (t, 1, 0, 1, 9.0), (t, 1, 0, 1, 9.0), (t, 1, 0, 1, 9.0)]     # reached an idle engine: not busy
        its = pd.DataFrame(rows, columns=["prefill_tokens", "prefill_groups", "decode_seqs", "running",
                                          "duration_s"])
        # four requests, 1 s apart, each alone: scheduled 1, 2, 3 and 4 ms after arriving
        reqs = pd.DataFrame({"arrival_s": [0.0, 1.0, 2.0, 3.0], "first_scheduled_s": [0.001, 1.002, 2.003, 3.004],
                             "finish_s": [0.5, 1.5, 2.5, 3.5]})
        return its, reqs
    monkeypatch.setattr(fits, "engine_records", fake_records)
    fit = fit_prefill_overhead(None, prof, 16, device="cpu", tokens=[16, 64], cuda_graphs=False, prompts=10,
                               busy=True)
    assert [w["rate_req_s"] for w in asked] == [fits.BUSY_RATE] * 2
    cost0 = __import__("kvsim.cost.calibrated", fromlist=["x"]).CalibratedCostModel(
        __import__("kvsim.cost.calibrated", fromlist=["x"]).Profile(prof), model_name=prof["model"],
        dtype=prof["dtype"], block_size_tokens=16)
    assert [w["output_len"] for w in asked] == [fits.busy_output_len(cost0, t, spec.max_seq_len) for t in (16, 64)]
    assert all(w["output_len"] >= fits.BUSY_OUTPUT for w in asked)
    assert [w["num_requests"] for w in asked] == [20, 20]
    # the five busy lone steps, the first two dropped as warm-up: median 0.5 s, minus the price
    from kvsim.core.plan import StepPlan
    from kvsim.cost.calibrated import CalibratedCostModel, Profile
    cost = CalibratedCostModel(Profile(prof), model_name=prof["model"], dtype=prof["dtype"], block_size_tokens=16)
    for t, got in zip([16, 64], fit["time_s"]):
        priced = cost.step_time(StepPlan(prefill_group_ids=[0], prefill_new_tokens=[t], prefill_cached_tokens=[0]))
        assert got == pytest.approx(max(0.0, 0.5 - priced))
    assert "latency_s" not in fit            # (the busy fit's requests do not reach an idle engine)
    idle = fit_prefill_overhead(None, prof, 16, device="cpu", tokens=[16], cuda_graphs=False, prompts=10)
    assert asked[-1]["rate_req_s"] == fits.PREFILL_OVERHEAD_RATE and idle["time_s"][0] > fit["time_s"][0]
    # the idle engine's wake: the waits of the requests after the first two (warm-up), median 3.5 ms
    assert idle["latency_s"] == pytest.approx(0.0035)


def test_idle_waits_are_those_of_requests_reaching_an_idle_engine():
    import pandas as pd
    from kvsim.card_speed import idle_waits
    reqs = pd.DataFrame({                 # (given out of arrival order: they are sorted)
        "arrival_s":         [1.0,   0.0,    0.0,   0.5,   2.0,    3.0],
        "first_scheduled_s": [1.002, 0.0003, 0.010, 0.6,   2.0005, float("nan")],
        "finish_s":          [1.4,   0.9,    0.8,   1.2,   2.5,    float("nan")]})
    # 0.0 reached an idle engine; the second 0.0 (queued behind it) and 0.5 (running ones) did not; 1.0 came
    # while 0.5 still ran (to 1.2); 2.0 found it idle; 3.0 was never scheduled
    assert idle_waits(reqs) == pytest.approx([0.0003, 0.0005])


def test_busy_requests_outlast_the_arrival_gaps_whatever_the_models_speed():
    """A fast model's requests decode more tokens, so a prompt still meets BUSY_RUNNING running requests."""
    from kvsim.core.plan import StepPlan
    from kvsim.cost.calibrated import CalibratedCostModel, Profile
    spec = get_model("tiny-opt")
    for scale in (1.0, 1e-3):          # a 13B-like profile and one whose every step is 1,000 times faster
        prof = synthetic_profile()
        prof = dict(prof, model=spec.name, num_layers=spec.num_layers)
        if scale != 1.0:
            for key in ("decode_step", "decode_attn", "linear", "layer_other", "lm_head", "step_overhead"):
                if isinstance(prof.get(key), dict):
                    _scale_times(prof[key], scale)
        cost = CalibratedCostModel(Profile(prof), model_name=prof["model"], dtype=prof["dtype"], block_size_tokens=16)
        n = fits.busy_output_len(cost, 16, 100_000)
        step = cost.step_time(StepPlan(decode_group_ids=[0, 1, 2], decode_context_tokens=[48] * 3))
        assert n >= fits.BUSY_OUTPUT and n * step >= fits.BUSY_RUNNING / fits.BUSY_RATE * 0.999
    assert fits.busy_output_len(cost, 16, 64) == 40          # capped by the model's longest sequence


def _scale_times(table, k):
    for key, val in list(table.items()):
        if key == "time_s":
            table[key] = (np_scale(val, k))
        elif isinstance(val, dict):
            _scale_times(val, k)


def np_scale(val, k):
    import numpy as np
    return (np.asarray(val, float) * k).tolist()
