"""``kvsim calibrate --resume``: which profiles it takes, the card and engine checks, and what it keeps and redoes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvsim.calibrate.resume import LEGACY_MODE, check_card, check_engine_mode, load_for_resume
from kvsim.errors import KvsimError
from tests._cli import cli

ROOT = Path(__file__).resolve().parents[1]
OPT = ROOT / "calibrate" / "profiles" / "H200" / "opt-13b.json"


def _profile(tmp_path, edit=None, name="p.json") -> Path:
    doc = json.loads(OPT.read_text())
    if edit:
        edit(doc)
    p = tmp_path / name
    p.write_text(json.dumps(doc))
    return p


def _error(capsys, field, *args) -> str:
    rc, out, err = cli(capsys, "calibrate", *map(str, args))
    assert rc == 2, (rc, out, err)
    assert err.count("\n") == 1 and "Traceback" not in err and field in err, err
    return err


def test_the_committed_profile_can_be_resumed_and_says_so():
    doc = load_for_resume(str(OPT))
    assert doc["model"] == "OPT-13B" and doc["meta"]["reference_step"]["16"]["gpu_uuid"]
    assert load_for_resume(str(OPT), "opt-13b", "fp16")["dtype"] == "fp16"


@pytest.mark.parametrize("edit,args,field", [
    (None, ["--model", "llama-3-8b"], "--model"),
    (None, ["--dtype", "bf16"], "--dtype"),
    (None, ["--block-sizes", "16"], "--block-sizes"),
    (None, ["--fast"], "--fast"),
    (None, ["--estimate"], "--estimate"),
    (lambda d: d.pop("step_overhead"), [], "--resume"),
    (lambda d: d.pop("decode_step"), [], "--resume"),
    (lambda d: d["meta"].update(fast=True), [], "--resume"),
    (lambda d: d.update(format="something-else"), [], "--resume"),
])
def test_a_profile_that_cannot_be_resumed_is_refused_on_one_line(tmp_path, capsys, edit, args, field):
    p = _profile(tmp_path, edit)
    before = p.read_bytes()
    _error(capsys, field, "--resume", p, *args)
    assert p.read_bytes() == before and sorted(x.name for x in tmp_path.iterdir()) == ["p.json"]


def test_resume_files_that_are_not_profiles(tmp_path, capsys):
    _error(capsys, "--resume", "--resume", tmp_path / "missing.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    _error(capsys, "--resume", "--resume", tmp_path / "list.json")
    (tmp_path / "bad.json").write_text("{nope")
    _error(capsys, "--resume", "--resume", tmp_path / "bad.json")


def test_model_is_required_without_resume_and_other_card_only_with_it(capsys):
    _error(capsys, "--model", "--block-sizes", "16")
    _error(capsys, "--allow-other-card", "--model", "opt-13b", "--allow-other-card")


def test_without_a_gpu_a_valid_resume_stops_before_touching_the_file(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("has a GPU: the resume would run")
    p = _profile(tmp_path)
    before = p.read_bytes()
    _error(capsys, "calibrate", "--resume", p, "--out", tmp_path / "out.json")
    assert p.read_bytes() == before and not (tmp_path / "out.json").exists()


def test_the_card_check_names_both_cards():
    doc = {"meta": {"reference_step": {"16": {"time_s": 0.009, "gpu_uuid": "GPU-aaaa"}}}}
    assert check_card(doc, 16, "GPU-aaaa") is None
    with pytest.raises(KvsimError) as e:
        check_card(doc, 16, "GPU-bbbb")
    assert e.value.field == "meta.reference_step" and "GPU-aaaa" in str(e.value) and "GPU-bbbb" in str(e.value)
    assert check_card(doc, 16, "GPU-bbbb", allow_other_card=True) == "GPU-aaaa"
    with pytest.raises(KvsimError, match="does not record"):            # an older profile: no UUID
        check_card({"meta": {"reference_step": {"16": {"time_s": 0.009}}}}, 16, "GPU-aaaa")
    with pytest.raises(KvsimError, match="does not record"):            # no reference step at that block size
        check_card(doc, 32, "GPU-aaaa")
    assert check_card({"meta": {}}, 16, None, allow_other_card=True) == "unknown"


def test_the_engine_check_reads_old_profiles_as_the_engine_of_their_day():
    now = {"cuda_graphs": True, "prefill_ladder": "v2", "mixed_decode_kernel": True}
    check_engine_mode({"meta": dict(now)}, now)
    with pytest.raises(KvsimError) as e:
        check_engine_mode({"meta": dict(now, prefill_ladder="v1")}, now)
    assert e.value.field == "meta.prefill_ladder" and "'v1'" in str(e.value) and "'v2'" in str(e.value)
    with pytest.raises(KvsimError) as e:       # recorded before the field existed: the old engine's value
        check_engine_mode({"meta": {"cuda_graphs": True}}, now)
    assert e.value.field == "meta.prefill_ladder"
    assert LEGACY_MODE["prefill_ladder"] == "v1" and LEGACY_MODE["mixed_decode_kernel"] is False
    committed = json.loads(OPT.read_text())["meta"]
    check_engine_mode({"meta": committed}, {k: committed.get(k, LEGACY_MODE[k]) for k in LEGACY_MODE})
    with pytest.raises(KvsimError) as e:     # a field it predates reads as that day's engine: staged swaps came later
        check_engine_mode({"meta": committed}, {"swap_staged": True})
    assert e.value.field == "meta.swap_staged"


def test_resume_keeps_the_grids_and_redoes_every_fit_after_them(tmp_path, monkeypatch):
    """A tiny model on the CPU; the engine runs of the fits are replaced by fakes that say what they were given,
    so the test checks what is kept, what is measured again and what is recorded."""
    torch = pytest.importorskip("torch")
    import kvsim.calibrate.profile as P
    import kvsim.calibrate.serving_fit as S
    from kvsim.calibrate.profile import engine_mode
    from kvsim.calibrate.resume import resume
    from kvsim.catalogue import get_model
    from kvsim.engine.models import build_model
    from tests.profile_factory import synthetic_profile
    spec = get_model("tiny-opt")
    prof = synthetic_profile(model=spec.name, layers=spec.num_layers, steps=True)
    model = build_model(spec, dtype=torch.float16, device=torch.device("cpu"), weights="dummy")
    prof["meta"].update(engine_mode(model, False), partial="calibration stopped before the serving fit",
                        reference_step={"16": {"time_s": 0.001, "gpu_uuid": "GPU-grids"}})
    prof["decode_serving"] = {"16": {"num_seqs": [4], "extra_s": [9.9]}}       # a cut-short fit: redone whole
    prof["meta"].update(serving_fit_error="old", serving_fit_skipped={"runs": 11, "of": 18, "why": "time"})
    src = tmp_path / "partial.json"
    src.write_text(json.dumps(prof))
    seen = {}

    def fake_serving(model_, profile, bs, device="cuda", cuda_graphs=True, log=print, save_dir=None,
                     deadline=None, **kw):
        seen["serving"] = (bs, device, cuda_graphs, "decode_serving" in profile, deadline is None)
        return {"num_seqs": [4, 8], "extra_s": [1e-4, 2e-4]}, {"tokens": [64.0], "extra_s": [3e-4], "steps": 20}

    def fake_prefill(model_, profile, bs, device="cuda", cuda_graphs=True, busy=False, **kw):
        seen.setdefault("prefill", []).append((busy, "prefill_serving" in profile))
        return {"tokens": [16, 128], "time_s": [2e-4, 3e-4]} if busy else \
            {"tokens": [16, 128], "time_s": [5e-4, 3e-4], "latency_s": 2.5e-4}
    monkeypatch.setattr(S, "fit_serving", fake_serving)
    monkeypatch.setattr(P, "fit_prefill_overhead", fake_prefill)
    monkeypatch.setattr("kvsim.engine.models.build_model", lambda *a, **k: model)
    dest = resume(str(src), str(tmp_path / "done.json"), "kvsim calibrate --resume partial.json",
                  cuda_graphs=False, allow_other_card=True, device="cpu")
    out = json.loads(dest.read_text())
    assert json.loads(src.read_text()) == prof                                  # --out elsewhere: source kept
    for key in ("linear", "lm_head", "decode_attn", "decode_step", "prefill_step", "step_overhead"):
        assert out[key] == prof[key]
    assert seen["serving"] == (16, "cpu", False, False, True)                    # the old fit was not passed in
    assert seen["prefill"] == [(True, True), (False, True)]                      # busy, then idle; after serving
    assert out["decode_serving"]["16"]["num_seqs"] == [4, 8] and out["prefill_serving"]["16"]["steps"] == 20
    assert out["prefill_overhead"]["time_s"] == [2e-4, 3e-4]
    assert out["wake_overhead"]["time_s"] == pytest.approx([3e-4, 0.0])         # idle minus busy, never negative
    assert out["wake_overhead"]["latency_s"] == 2.5e-4                          # the idle fit's wake, kept
    assert not {"partial", "serving_fit_error", "serving_fit_skipped"} & set(out["meta"])
    (r,) = out["meta"]["resumed"]
    assert r["other_card"] == "GPU-grids" and r["command"].startswith("kvsim calibrate --resume")
    monkeypatch.setattr(P, "engine_mode", lambda m, g: dict(engine_mode(m, g), prefill_ladder="v9"))
    with pytest.raises(KvsimError) as e:
        resume(str(dest), None, "again", cuda_graphs=False, allow_other_card=True, device="cpu")
    assert e.value.field == "meta.prefill_ladder" and json.loads(dest.read_text()) == out


def test_split_kv_is_recorded_runs_the_fits_engine_so_and_a_resume_must_match(monkeypatch):
    """kvsim calibrate --split-kv: the grids (varlen_decode.SPLIT) and the fits' engine runs
    (runtime.mixed_decode_split) cut a mixed step's long rows alike, meta records it, and a profile measured without
    it (or from before the field) is not resumed with it."""
    pytest.importorskip("triton")
    from kvsim.calibrate import engine_runs as ER
    from kvsim.calibrate.cli import _split_kv
    from kvsim.kernels import varlen_decode
    monkeypatch.setattr(ER, "MIXED_DECODE_SPLIT", None)
    monkeypatch.setattr(varlen_decode, "SPLIT", False)
    _split_kv(ER, True)
    assert varlen_decode.SPLIT is True and ER.runtime_mode()["mixed_decode_split"] is True
    _split_kv(ER, None)                   # the engine's default: off
    assert varlen_decode.SPLIT is False and ER.runtime_mode()["mixed_decode_split"] is False
    assert LEGACY_MODE["mixed_decode_split"] is False
    committed = json.loads(OPT.read_text())["meta"]
    with pytest.raises(KvsimError) as e:
        check_engine_mode({"meta": committed}, {"mixed_decode_split": True})
    assert e.value.field == "meta.mixed_decode_split"
    check_engine_mode({"meta": committed}, {"mixed_decode_split": False})
