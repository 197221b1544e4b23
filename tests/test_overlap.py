"""The simulator's mirror of the engine's overlap rule (kvsim.overlap): which prompt steps were prepared while the
step before them flew, checked against the engine's own records, and their price without the host part."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import kvsim
import kvsim.build
from kvsim.core.plan import StepPlan
from kvsim.cost.calibrated import CalibratedCostModel, Profile
from kvsim.overlap import OVERLAP_MARGIN, StepsAhead, steps_ahead

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "calibrate/profiles/H100/llama-3-8b-async-1207b.json"
SET = ROOT / "validation/H100-async-1207b"


def test_a_step_is_ahead_only_after_one_that_could_fly_with_no_request_due():
    ov = StepsAhead([0.0, 1.0, 2.0])
    assert not ov.ahead(0.5)                       # nothing before it
    ov.started(0.1, prompt=False)                  # the first decode step: nothing predicts it, stepped
    assert not ov.ahead(0.2)
    ov.started(0.2, prompt=False)                  # a decode step after one: could fly
    assert ov.ahead(0.3)                           # next due 1.0 > 0.2 + 1.5 x 0.1
    assert not ov.ahead(0.9)                       # 1.0 <= 0.2 + 1.5 x 0.7: due while it would have flown
    ov.started(0.7, prompt=True)                   # the first prompt step: stepped, whatever is due
    assert not ov.ahead(0.75)
    ov.started(0.75, prompt=True)
    assert ov.ahead(0.8)
    ov.started(1.5, prompt=False)
    assert ov.ahead(1.6) and not ov.ahead(1.9)     # due 2.0: > 1.5 + 0.15, <= 1.5 + 0.6
    ov.started(2.5, prompt=False)
    assert ov.ahead(2.6) and ov.ahead(100.0)       # nothing more due
    edge = StepsAhead([1.0 + OVERLAP_MARGIN * 0.1])
    edge.started(0.9, False)
    edge.started(1.0, False)
    assert not edge.ahead(1.1)                     # due exactly at the predicted end: not after it


def _scenario(tmp_path, doc: dict, extra: list[str] | None = None):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    return kvsim.load_scenario(ROOT / "scenarios/validation/v19_llama3_8b_orca_max.yaml",
                               ["gpu=h100-80gb", "workload.num_requests=90", "cost.model=calibrated",
                                f"cost.profile={path}"] + list(extra or []))


def test_prompt_steps_prepared_ahead_are_priced_without_their_host_part(tmp_path):
    """Orca-Max near saturation (v19's workload): most prefill steps take requests queued before the step before
    them, which flew; they are priced less their host part. Stepping and fast-forwarding agree exactly; without
    host_s, without overlapped prompt steps, or with beam search, nothing changes."""
    doc = json.loads(PROFILE.read_text())
    assert "host_s" in doc["prefill_serving"]["16"]
    sc = _scenario(tmp_path, doc)
    a, b = kvsim.simulate(sc, fast_forward=True), kvsim.simulate(sc, fast_forward=False)
    assert a.summary == b.summary and a.requests.equals(b.requests)
    plain_doc = json.loads(PROFILE.read_text())
    del plain_doc["prefill_serving"]["16"]["host_s"]
    plain = kvsim.simulate(_scenario_at(tmp_path, plain_doc))
    stepped = kvsim.simulate(_scenario(tmp_path, doc, ["runtime.async_prompt_steps=false"]))
    plain_stepped = kvsim.simulate(_scenario(tmp_path / "plain", plain_doc, ["runtime.async_prompt_steps=false"]))
    assert stepped.summary == plain_stepped.summary              # the discount needs overlapped prompt steps
    pre = lambda r: r.iterations[(r.iterations.prefill_tokens > 0) & (r.iterations.decode_seqs == 0)]  # noqa: E731
    got, base = pre(a), pre(plain)
    assert len(got) == len(base) > 20
    assert got.duration_s.sum() < base.duration_s.sum()           # some steps went without their host part ...
    saved = base.duration_s.sum() - got.duration_s.sum()
    host = doc["prefill_serving"]["16"]["host_s"]
    assert saved < len(got) * max(host) * 1.01                    # ... at most all of them, by at most their host


def _scenario_at(tmp_path, doc):
    sub = tmp_path / "plain"
    sub.mkdir(exist_ok=True)
    return _scenario(sub, doc)


def test_no_mirror_where_no_price_depends_on_it(tmp_path):
    doc = json.loads(PROFILE.read_text())
    sc = _scenario(tmp_path, doc)
    setup = kvsim.build.setup_run(sc)
    ov = steps_ahead(setup, setup.cost)
    assert ov.prompt_priced and ov.decode_priced
    for extra in (["runtime.async_scheduling=false"], ["workload.max_concurrency=8"], ["workload.beam_width=2"]):
        s = kvsim.build.setup_run(_scenario(tmp_path, doc, extra))
        assert steps_ahead(s, s.cost) is None, extra
    s = kvsim.build.setup_run(_scenario(tmp_path, doc, ["runtime.async_prompt_steps=false"]))
    ov = steps_ahead(s, s.cost)                   # decode steps still fly: theirs are priced, prompt steps' not
    assert ov.decode_priced and not ov.prompt_priced and not ov.prompt_steps
    del doc["prefill_serving"]["16"]["host_s"]
    s = kvsim.build.setup_run(_scenario(tmp_path, doc))
    ov = steps_ahead(s, s.cost)
    assert ov.decode_priced and not ov.prompt_priced
    del doc["decode_serving"]["16"]["stepped"]       # neither price depends on it: no mirror
    s = kvsim.build.setup_run(_scenario(tmp_path, doc))
    assert steps_ahead(s, s.cost) is None


def test_the_host_part_is_priced_for_served_prefill_only_steps_only():
    doc = json.loads(PROFILE.read_text())
    cost = CalibratedCostModel(Profile(doc), model_name="Llama-3-8B", dtype="fp16", block_size_tokens=16)
    tokens, host = doc["prefill_serving"]["16"]["tokens"], doc["prefill_serving"]["16"]["host_s"]
    one = StepPlan(prefill_group_ids=[0], prefill_new_tokens=[300], prefill_cached_tokens=[0])
    assert cost.prompt_host_s(one) == pytest.approx(np.interp(300, tokens, host))
    mixed = StepPlan(prefill_group_ids=[0], prefill_new_tokens=[300], prefill_cached_tokens=[0],
                     decode_group_ids=[1, 2], decode_context_tokens=[100, 200])
    longer = StepPlan(prefill_group_ids=[0], prefill_new_tokens=[int(tokens[-1]) + 1], prefill_cached_tokens=[0])
    decode = StepPlan(decode_group_ids=[1, 2], decode_context_tokens=[100, 200])
    assert cost.prompt_host_s(mixed) == cost.prompt_host_s(longer) == cost.prompt_host_s(decode) == 0.0
    for bad in ([-1e-4] * len(tokens), host[:-1], ["x"] * len(tokens)):
        with pytest.raises(kvsim.KvsimError, match="host_s"):
            Profile(dict(doc, prefill_serving={"16": dict(doc["prefill_serving"]["16"], host_s=bad)}))


@pytest.mark.parametrize("name", ["v19_llama3_8b_orca_max", "v13_llama3_8b_sharegpt_paged",
                                  "v14_llama3_8b_sharegpt_oracle", "h07_llama3_8b_swap_bursty",
                                  "v21_llama3_8b_sharegpt_trace"])
def test_the_mirror_finds_the_prefill_steps_the_engine_prepared_ahead(name, monkeypatch):
    """Replayed as they ran, the committed overlapped runs (H100, 2026-12-07): the share of prefill-only steps
    the simulator takes as prepared ahead is the engine's (``host_ahead``), within 0.05 (engine: 0.79, 0.55, 0.74,
    0.10, 0.00; simulator 0.76, 0.50, 0.75, 0.09, 0.00)."""
    from kvsim import overlap
    from kvsim.validate import read_engine_records, simulate_with_profile
    from kvsim.validate_settings import replay_sets
    said = {}
    real = overlap.StepsAhead.ahead
    monkeypatch.setattr(overlap.StepsAhead, "ahead", lambda self, now: said.setdefault(now, real(self, now)))
    doc, _, its = read_engine_records(SET / name / "engine")
    folder = "holdout" if name.startswith("h") else "validation"
    _, res = simulate_with_profile(str(ROOT / "scenarios" / folder / f"{name}.yaml"), str(PROFILE), replay_sets(doc))
    sim = res.iterations
    asked = [said[t] for t in sim[(sim.prefill_tokens > 0) & (sim.decode_seqs == 0)].start_s]  # (decode steps ask too)
    steps = its[(its.prefill_tokens > 0) & (its.decode_seqs == 0)]
    assert len(asked) > 50 and len(steps) > 50
    assert abs(np.mean(asked) - steps.host_ahead.mean()) < 0.05


H200 = ROOT / "calibrate/profiles/H200/llama-3-8b-async.json"


def _replayed(name: str, fast_forward: bool = True, profile=H200, folder_set="validation/H200-async"):
    from kvsim.validate import read_engine_records
    from kvsim.validate_settings import replay_sets
    doc, _, its = read_engine_records(ROOT / folder_set / name / "engine")
    folder = "holdout" if name.startswith("h") else "validation"
    sc = kvsim.load_scenario(ROOT / "scenarios" / folder / f"{name}.yaml",
                             ["gpu=h200-141gb", "cost.model=calibrated", f"cost.profile={profile}"] + replay_sets(doc))
    return its, kvsim.simulate(sc, fast_forward=fast_forward)


def test_a_decode_step_not_prepared_ahead_pays_the_stepped_rows_host_part():
    """An overlapped calibration's stepped rows price what a decode step pays where its host work was not hidden:
    their extra beyond the overlapped rows', held outside the stepped rows; nothing for a beam run (priced stepped
    throughout) or a profile without stepped rows."""
    doc = json.loads(H200.read_text())
    kw = dict(model_name="Llama-3-8B", dtype="fp16", block_size_tokens=16)
    cost = CalibratedCostModel(Profile(doc), **kw)
    ds = doc["decode_serving"]["16"]
    for n in ds["stepped"]["num_seqs"]:
        want = np.interp(n, ds["stepped"]["num_seqs"], ds["stepped"]["extra_s"]) - np.interp(n, ds["num_seqs"],
                                                                                              ds["extra_s"])
        assert cost.decode_host_s(n) == pytest.approx(max(want, 0.0), abs=1e-12)
    assert cost.decode_host_s(1) == cost.decode_host_s(4) and cost.decode_host_s(256) == cost.decode_host_s(64)
    assert 1e-4 < cost.decode_host_s(16) < 5e-4 and cost.prices_decode_host
    beams = CalibratedCostModel(Profile(doc), stepped_decode=True, **kw)
    del doc["decode_serving"]["16"]["stepped"]
    plain = CalibratedCostModel(Profile(doc), **kw)
    assert beams.decode_host_s(16) == plain.decode_host_s(16) == 0.0
    assert not beams.prices_decode_host and not plain.prices_decode_host


@pytest.mark.parametrize("name", ["v13_llama3_8b_sharegpt_paged", "v19_llama3_8b_orca_max",
                                  "v21_llama3_8b_sharegpt_trace"])
def test_the_mirror_finds_the_decode_steps_the_engine_did_not_prepare_ahead(name, monkeypatch):
    """Replayed as they ran (H200, 2026-12-06), the share of decode-only steps the simulator takes as not
    prepared ahead is the engine's within 0.015 (engine 0.038, 0.029, 0.029; simulator 0.031, 0.028, 0.021): mostly
    the steps in flight when a request arrived."""
    from kvsim import overlap
    said = {}
    real = overlap.StepsAhead.ahead
    monkeypatch.setattr(overlap.StepsAhead, "ahead", lambda self, now: said.setdefault(now, real(self, now)))
    its, res = _replayed(name, fast_forward=False)
    sim = res.iterations
    asked = [said[t] for t in sim[(sim.prefill_tokens == 0) & (sim.decode_seqs > 0)].start_s]
    eng = its[(its.prefill_tokens == 0) & (its.decode_seqs > 0)]
    assert len(asked) > 1000
    assert abs((1 - np.mean(asked)) - (eng.host_ahead == 0).mean()) < 0.015


@pytest.mark.parametrize("name", ["h07_llama3_8b_swap_bursty", "v21_llama3_8b_sharegpt_trace",
                                  "v15_llama3_8b_chunked512"])
def test_fast_forward_leaves_the_steps_not_prepared_ahead_to_the_loop_and_equals_stepping(name):
    """Runs stop at every arrival and before a step that was not prepared ahead (h07 swaps under bursts, with
    requests waiting; the first decode steps of a run), so fast-forwarding gives stepping's records exactly."""
    _, a = _replayed(name)
    _, b = _replayed(name, fast_forward=False)
    assert a.summary == b.summary and a.requests.equals(b.requests) and a.iterations.equals(b.iterations)
