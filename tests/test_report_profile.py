"""``kvsim report block-size --profile P``: block sizes priced from a measured profile, the rest listed as not
measured, and the choice attributed to memory (fragmentation, batch) or to the card (kernel, copy, swap)."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kvsim.report import analyse
from kvsim.report.blocksize_profile import attribute, reference_profile
from tests.profile_factory import synthetic_profile

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "paper" / "fig18b_block_size_alpaca.yaml"
SLO = {"normalized_latency_s": 0.1}
SETS = ["gpu=h100-80gb", "engine.swap_space_gib=0"]


def _profile(tmp_path, slow32: float = 1.0, name="p.json", **kw) -> Path:
    doc = synthetic_profile(block_sizes=(16, 32), steps=True, **kw)
    doc["meta"]["gpu"] = "NVIDIA H100 80GB HBM3"
    for key in ("decode_attn", "prefill_attn", "decode_step", "prefill_step"):
        g = doc[key]["32"]
        g["time_s"] = [[v * slow32 for v in r] if isinstance(r, list) else r * slow32 for r in g["time_s"]]
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def test_reference_profile_keeps_memory_and_swaps_per_token():
    doc = synthetic_profile(block_sizes=(16, 32), steps=True)
    doc["decode_step"]["32"]["time_s"] = [[9.0] * 3] * 5
    ref = reference_profile(doc, 16, [16, 32])
    assert ref["decode_step"]["32"] == doc["decode_step"]["16"]
    assert ref["decode_step"]["16"] == doc["decode_step"]["16"]
    # one block of 32 tokens swaps like two of 16
    assert ref["swap"]["32"]["blocks"] == [b / 2 for b in doc["swap"]["16"]["blocks"]]
    assert doc["decode_step"]["32"]["time_s"][0][0] == 9.0          # the input is not modified


def test_attribution_splits_the_log_gap():
    rows, text = attribute({16: 10.0, 32: 8.0}, {16: 10.0, 32: 9.5}, 16)
    r32 = next(r for r in rows if r["block_size"] == 32)
    assert r32["gap_to_pick"] == pytest.approx(r32["memory_term"] + r32["card_term"])
    assert r32["decides"] == "card" and "card" in text
    rows, _ = attribute({16: 10.0, 32: 8.0}, {16: 10.0, 32: 8.2}, 16)
    assert next(r for r in rows if r["block_size"] == 32)["decides"] == "memory"


@pytest.fixture(scope="module")
def slow_card(tmp_path_factory):
    path = _profile(tmp_path_factory.mktemp("prof"), slow32=4.0)
    return analyse(str(SCENARIO), SLO, overrides=SETS, block_sizes=[8, 16, 32], requests=150, jobs=2,
                   profile=str(path), min_duration_s=None)


def test_profile_prices_measured_sizes_only(slow_card):
    a = slow_card
    assert a.not_measured == [8]
    assert list(a.table.block_size) == [16, 32]
    assert "measured profile" in a.pricing and "not measured" in a.pricing
    assert set(a.table.cost_model) == {"CalibratedCostModel"}
    t = a.table.set_index("block_size")
    assert t.loc[32, "decode_step_ms"] > 2 * t.loc[16, "decode_step_ms"]     # the profile's kernels, per size


def test_a_slow_kernel_at_32_is_blamed_on_the_card(slow_card):
    a = slow_card
    assert a.block_size == 16
    att = a.attribution.set_index("block_size")
    assert att.loc[32, "decides"] == "card"
    assert att.loc[32, "card_term"] > 0.2
    assert att.loc[16, "memory_only_rate_req_s"] == pytest.approx(att.loc[16, "rate_req_s"])
    assert "card" in a.decides
    assert "internal fragmentation" not in a.reason          # the reason defers to the attribution


def test_roofline_report_says_it_is_a_model():
    a = analyse(str(SCENARIO), SLO, overrides=SETS, block_sizes=[16], requests=100, jobs=1, min_duration_s=None)
    assert "a model, not a measurement" in a.pricing and a.attribution is None


def test_cli_profile_mismatch_is_one_line_exit_2(tmp_path):
    cases = [(_profile(tmp_path, name="m.json", model="llama-3-8b"), "model"),
             (_profile(tmp_path, name="d.json", dtype="bf16"), "dtype")]
    wrong_gpu = json.loads(_profile(tmp_path, name="g.json").read_text())
    wrong_gpu["meta"]["gpu"] = "NVIDIA H200"
    (tmp_path / "g.json").write_text(json.dumps(wrong_gpu))
    cases.append((tmp_path / "g.json", "gpu"))
    broken = copy.deepcopy(wrong_gpu)
    del broken["swap"]
    (tmp_path / "b.json").write_text(json.dumps(broken))
    cases.append((tmp_path / "b.json", "--profile"))
    for path, field in cases:
        r = subprocess.run([sys.executable, "-m", "kvsim.cli", "report", "block-size", str(SCENARIO),
                            "--profile", str(path), "--quiet", "--out", str(tmp_path / "o")]
                           + [x for s in SETS for x in ("--set", s)],
                           capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert r.returncode == 2, (field, r.stderr)
        assert r.stderr.startswith(f"error: {field}:") and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_attribution_says_a_tie_as_one_whatever_the_hash_seed():
    """One alternative decided by memory and one by the card: the sentence names both (it used to name whichever
    side a set of the votes iterated first, which moved with PYTHONHASHSEED between runs)."""
    import subprocess
    import sys
    code = ("from kvsim.report.blocksize_profile import attribute;"
            "print(attribute({16: 10.0, 32: 8.0, 64: 8.0}, {16: 10.0, 32: 8.2, 64: 9.9}, 16)[1])")
    texts = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**__import__("os").environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in range(6)}
    assert len(texts) == 1
    text = texts.pop()
    assert text.startswith("memory and the card each decide against 1 of 2 alternatives:"), text
    _, two = attribute({16: 10.0, 32: 8.0, 64: 8.0}, {16: 10.0, 32: 8.2, 64: 8.2}, 16)
    assert two.startswith("memory (fragmentation and the batch it allows) decides against 2 of 2"), two
