"""``kvsim validate --sensitivity`` (kvsim.validate_sensitivity): a profile's times scaled scale every calibrated
price by the same factor, and the elasticity and implied step error per scenario and metric."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

import kvsim
from kvsim.core.plan import StepPlan
from kvsim.cost.calibrated import CalibratedCostModel, Profile
from kvsim.graph_sizes import engine_graph_sizes
from kvsim.validate_sensitivity import STEP, rows_for, scaled

ROOT = Path(__file__).resolve().parents[1]
PROFILES = [("calibrate/profiles/H200/llama-3-8b-async.json", "Llama-3-8B"), ("calibrate/profiles/H100/opt-13b-1206.json",
            "OPT-13B"), ("calibrate/profiles/H200/opt-13b-1203.json", "OPT-13B")]


def _plans():
    out = [StepPlan(decode_group_ids=list(range(n)), decode_context_tokens=list(range(c, c + 37 * n, 37)))
           for n, c in ((1, 100), (13, 350), (64, 1000), (200, 150))]
    out += [StepPlan(prefill_group_ids=[0], prefill_new_tokens=[t], prefill_cached_tokens=[0]) for t in (17, 417, 3000)]
    out += [StepPlan(prefill_group_ids=[0, 1, 2], prefill_new_tokens=[100, 200, 300], prefill_cached_tokens=[0, 64, 0])]
    out += [StepPlan(prefill_group_ids=[0], prefill_new_tokens=[t], prefill_cached_tokens=[128],
                     decode_group_ids=list(range(n)), decode_context_tokens=list(range(100, 100 + 50 * n, 50)))
            for t, n in ((16, 5), (300, 30), (900, 8), (2500, 3))]
    return out


@pytest.mark.parametrize("path, model", PROFILES)
def test_scaling_a_profiles_times_scales_every_price_by_the_same_factor(path, model):
    doc = json.loads((ROOT / path).read_text())
    graphs = engine_graph_sizes(kvsim.load_scenario(str(ROOT / "scenarios/validation/v15_llama3_8b_chunked512.yaml")))
    k = 1 + STEP
    a, b = (CalibratedCostModel(Profile(d), model_name=model, dtype="fp16", block_size_tokens=16, **graphs)
            for d in (doc, scaled(doc, k)))
    for plan in _plans():
        assert b.step_time(plan) == pytest.approx(k * a.step_time(plan), rel=1e-9)
    assert b.swap_time(7, 0) == pytest.approx(k * a.swap_time(7, 0), rel=1e-9)
    assert b.copy_time(3, 0) == pytest.approx(k * a.copy_time(3, 0), rel=1e-9)
    s = scaled(doc, k)
    assert s["meta"] == doc["meta"] and s["decode_step"]["16"]["ctx"] == doc["decode_step"]["16"]["ctx"]
    assert s["num_layers"] == doc["num_layers"]


def test_elasticity_and_implied_step_error():
    base = {"throughput_req_s": 10.0, "normalized_latency_s": 0.01, "normalized_latency_p99_s": 0.02,
            "ttft_p50_s": 0.1, "tpot_p50_s": None}
    low = {"throughput_req_s": 10.0, "normalized_latency_s": 0.01 * (1 - 6 * STEP),
           "normalized_latency_p99_s": 0.02 * (1 - STEP), "ttft_p50_s": 0.1, "tpot_p50_s": None}
    high = {"throughput_req_s": 10.0, "normalized_latency_s": 0.01 * (1 + 14 * STEP),
            "normalized_latency_p99_s": 0.02 * (1 + STEP), "ttft_p50_s": 0.1, "tpot_p50_s": None}
    rows = {r["metric"]: r for r in rows_for("s", base, low, high, {"normalized_latency_s": -0.2,
                                                                     "normalized_latency_p99_s": 0.03})}
    assert rows["normalized_latency_s"]["elasticity"] == pytest.approx(10)
    assert rows["normalized_latency_s"]["implied_step_error"] == pytest.approx(-0.02)
    assert rows["normalized_latency_p99_s"]["implied_step_error"] == pytest.approx(0.03)
    assert rows["throughput_req_s"]["elasticity"] == 0 and rows["throughput_req_s"]["implied_step_error"] is None
    assert rows["tpot_p50_s"]["elasticity"] is None


def test_validate_writes_the_sensitivity_of_a_replayed_scenario(tmp_path):
    from kvsim.validate import run_validation
    name = "v15_llama3_8b_chunked512"
    shutil.copytree(ROOT / "validation/H200-async" / name / "engine", tmp_path / name / "engine")
    run_validation([str(ROOT / f"scenarios/validation/{name}.yaml")],
                   [str(ROOT / "calibrate/profiles/H200/llama-3-8b-1206.json")], tmp_path, replay=True, sensitivity=True)
    t = pd.read_csv(tmp_path / "sensitivity-replay.csv").set_index("metric")
    assert (t.scenario == name).all() and len(t) == 5
    assert t.loc["normalized_latency_s", "elasticity"] > 1          # a loaded system: latency grows faster
    assert t.loc["tpot_p50_s", "elasticity"] > 0.9
    want = t.loc["normalized_latency_s", "rel_error"] / t.loc["normalized_latency_s", "elasticity"]
    assert t.loc["normalized_latency_s", "implied_step_error"] == pytest.approx(want)
    assert "| v15_llama3_8b_chunked512 | normalized_latency_s |" in (tmp_path / "sensitivity-replay.md").read_text()


def test_the_scaled_copies_say_no_note_the_profile_said_once(tmp_path):
    """A profile whose serving fit a time limit cut short is noted once by its own prediction; its scaled copies
    (one pair per scenario, temporary paths) drop that meta and price exactly as if they kept it."""
    from kvsim.validate_sensitivity import NOTE_ONLY_META, write_scaled
    doc = json.loads((ROOT / "calibrate/profiles/H100/llama-3-8b-async-1207b.json").read_text())
    doc["meta"].update(serving_fit_skipped={"runs": 5, "of": 18, "why": "the calibration's time limit"},
                       partial="its serving fit was not run")
    src = tmp_path / "cut.json"
    src.write_text(json.dumps(doc))
    path = Path(write_scaled(str(src), tmp_path, 1.02))
    copy = json.loads(path.read_text())
    assert not set(NOTE_ONLY_META) & set(copy["meta"])
    kept = dict(doc, meta=dict(copy["meta"], **{k: doc["meta"][k] for k in NOTE_ONLY_META if k in doc["meta"]}))
    (tmp_path / "kept.json").write_text(json.dumps(scaled(kept, 1.02)))
    plan = StepPlan(decode_group_ids=list(range(13)), decode_context_tokens=list(range(350, 350 + 37 * 13, 37)))
    a, b = (CalibratedCostModel(Profile(json.loads(p.read_text())), model_name="Llama-3-8B", dtype="fp16",
                                block_size_tokens=16) for p in (path, tmp_path / "kept.json"))
    assert a.step_time(plan) == b.step_time(plan)
