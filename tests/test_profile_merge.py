"""Profiles of one model and card measured at different block sizes merge into one (kvsim merge-profiles)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from kvsim.calibrate.merge import block_keyed, block_sizes, merge_profiles
from kvsim.cli import main
from kvsim.cost.calibrated import CalibratedCostModel, Profile
from kvsim.errors import KvsimError
from tests.profile_factory import synthetic_profile


def _at(doc: dict, bs: int, scale: float = 1.0, **meta) -> dict:
    """``doc`` with its block-keyed tables moved to block size ``bs`` and their times scaled."""
    out = json.loads(json.dumps(doc))
    for key in block_keyed(doc):
        (table,) = out[key].values()
        for k, v in table.items():
            if k.endswith("time_s"):
                table[k] = (np.asarray(v, float) * scale).tolist()
        out[key] = {str(bs): table}
    out.setdefault("meta", {}).update(meta)
    return out


def _cost(doc: dict, bs: int) -> CalibratedCostModel:
    return CalibratedCostModel(Profile(doc), model_name="OPT-13B", dtype="fp16", block_size_tokens=bs)


def test_merged_profile_prices_each_block_size_from_its_own_measurement():
    base = synthetic_profile()
    assert block_sizes(base) == [16]
    extra = _at(base, 32, scale=1.5, date="later", command="kvsim calibrate --block-sizes 32")
    merged = merge_profiles(base, extra)
    assert block_sizes(merged) == [16, 32]
    ctx = np.array([32 * 500.0])
    t16 = _cost(merged, 16).decode_step_times(32, ctx)[0]
    t32 = _cost(merged, 32).decode_step_times(32, ctx)[0]
    assert t16 == pytest.approx(_cost(base, 16).decode_step_times(32, ctx)[0])
    assert t32 == pytest.approx(_cost(extra, 32).decode_step_times(32, ctx)[0])
    assert t32 > t16
    assert merged["meta"]["merged"][0]["block_sizes"] == [32]
    assert merged["meta"]["merged"][0]["command"] == "kvsim calibrate --block-sizes 32"
    assert base["meta"].get("merged") is None                      # inputs untouched


@pytest.mark.parametrize("field,change", [("model", {"model": "LLaMA-13B"}), ("dtype", {"dtype": "bf16"})])
def test_profiles_of_another_model_or_precision_are_refused(field, change):
    base = synthetic_profile()
    extra = dict(_at(base, 32), **change)
    with pytest.raises(KvsimError) as e:
        merge_profiles(base, extra)
    assert e.value.field == field


def test_another_card_or_engine_mode_or_overlap_is_refused():
    base = synthetic_profile()
    base.setdefault("meta", {}).update(gpu="NVIDIA H200", cuda_graphs=True)
    for meta, field in ((dict(gpu="NVIDIA H100 80GB HBM3"), "meta.gpu"), (dict(cuda_graphs=False), "meta.cuda_graphs")):
        with pytest.raises(KvsimError) as e:
            merge_profiles(base, _at(base, 32, **meta))
        assert e.value.field == field
    with pytest.raises(KvsimError) as e:
        merge_profiles(base, _at(base, 16))
    assert e.value.field == "block_size"


def test_cli_merges_and_bad_input_exits_2(tmp_path, capsys):
    base = synthetic_profile()
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    a.write_text(json.dumps(base))
    b.write_text(json.dumps(_at(base, 64)))
    assert main(["merge-profiles", str(a), str(b), "--out", str(c)]) == 0
    assert block_sizes(json.loads(c.read_text())) == [16, 64]
    assert main(["merge-profiles", str(a), str(a), "--out", str(tmp_path / "d.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "block_size" in err[0]
    assert not (tmp_path / "d.json").exists()


def test_validate_picks_the_profile_holding_the_scenarios_block_size(tmp_path):
    from kvsim.validate import pick_profile
    base = synthetic_profile()
    p16, p32 = tmp_path / "opt16.json", tmp_path / "opt32.json"
    p16.write_text(json.dumps(base))
    p32.write_text(json.dumps(_at(base, 32)))
    scen = "scenarios/validation/v12_opt13b_block32.yaml"
    assert pick_profile(scen, [str(p16), str(p32)]) == str(p32)
    assert pick_profile(scen, [str(p16), str(p32)], ["engine.block_size=16"]) == str(p16)
    assert pick_profile(scen, [str(p16)]) == str(p16)          # no better one: the model's (errors later)


def _card(doc: dict, bs: int, uuid: str | None) -> dict:
    out = json.loads(json.dumps(doc))
    ref = {"rows": 8, "ctx": 256, "graph": True, "time_s": 0.005}
    out.setdefault("meta", {})["reference_step"] = {str(bs): dict(ref, gpu_uuid=uuid) if uuid else ref}
    return out


def test_block_sizes_from_another_physical_card_are_refused_unless_asked(tmp_path, capsys):
    base = _card(synthetic_profile(), 16, "GPU-aaa")
    other = _card(_at(base, 32), 32, "GPU-bbb")
    with pytest.raises(KvsimError) as e:
        merge_profiles(base, other)
    assert e.value.field == "meta.reference_step" and "GPU-bbb" in str(e.value)
    merged = merge_profiles(base, other, allow_other_card=True)
    assert merged["meta"]["merged"][-1]["other_card"] == ["GPU-bbb"]
    same = merge_profiles(base, _card(_at(base, 32), 32, "GPU-aaa"))           # same card: merged, both kept
    assert set(same["meta"]["reference_step"]) == {"16", "32"} and "other_card" not in same["meta"]["merged"][-1]
    assert merge_profiles(base, _card(_at(base, 64), 64, None))               # an older profile names no card
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(base))
    b.write_text(json.dumps(other))
    assert main(["merge-profiles", str(a), str(b), "--out", str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: meta.reference_step")
    assert main(["merge-profiles", str(a), str(b), "--out", str(tmp_path / "c.json"), "--allow-other-card"]) == 0
