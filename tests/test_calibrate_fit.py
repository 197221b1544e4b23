"""The prefill host-overhead fit of ``kvsim calibrate`` runs real engine prefills (here a tiny model on the CPU)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import kvsim.calibrate.profile as profile  # noqa: E402
from kvsim.calibrate.profile import fit_prefill_overhead  # noqa: E402
from kvsim.catalogue import get_model  # noqa: E402
from kvsim.engine.models import build_model  # noqa: E402
from tests.profile_factory import synthetic_profile  # noqa: E402


def test_prefill_overhead_fit_times_lone_prefills_of_each_length(monkeypatch):
    spec = get_model("tiny-opt")
    prof = dict(synthetic_profile(), model=spec.name, num_layers=spec.num_layers)
    model = build_model(spec, dtype=torch.float16, device=torch.device("cpu"), weights="dummy")
    monkeypatch.setattr(profile, "PREFILL_OVERHEAD_RATE", 1.0)       # 1 s apart: lone even on a loaded CPU
    fit = fit_prefill_overhead(model, prof, 16, device="cpu", tokens=[16, 64], cuda_graphs=False, prompts=3)
    assert fit["tokens"] == [16, 64]
    assert len(fit["time_s"]) == 2 and all(t >= 0.0 for t in fit["time_s"])
    # the residual is measured minus priced: a profile pricing prefills 1 s slower leaves nothing
    slow = dict(prof, step_overhead={"num_seqs": [1, 256], "time_s": [1.0, 1.0]})
    assert fit_prefill_overhead(model, slow, 16, device="cpu", tokens=[16], cuda_graphs=False,
                                prompts=3)["time_s"] == [0.0]


def test_busy_prefill_fit_times_prompts_that_arrive_while_others_decode(monkeypatch):
    spec = get_model("tiny-opt")
    prof = dict(synthetic_profile(), model=spec.name, num_layers=spec.num_layers)
    model = build_model(spec, dtype=torch.float16, device=torch.device("cpu"), weights="dummy")
    # prompts 200 ms apart, each request decoding 100 steps, so others always run; 20 requests, as the CPU's
    # first steps are slow (no warm-up off CUDA) and the first prompts pile up into one step
    monkeypatch.setattr(profile, "BUSY_RATE", 5.0)
    monkeypatch.setattr(profile, "BUSY_OUTPUT", 100)
    seen = []
    run = profile.engine_iterations

    def recording(*args, **kw):
        its = run(*args, **kw)
        seen.append(its)
        return its
    monkeypatch.setattr(profile, "engine_iterations", recording)
    fit = fit_prefill_overhead(model, prof, 16, device="cpu", tokens=[16, 64], cuda_graphs=False, prompts=10,
                               busy=True)
    assert fit["tokens"] == [16, 64] and all(t >= 0.0 for t in fit["time_s"])
    for its in seen:            # the fit's prompts met running decodes (prefill-only steps with others running)
        pre = its[(its.decode_seqs == 0) & (its.prefill_groups == 1)]
        assert (pre.running > 1).sum() >= 2
