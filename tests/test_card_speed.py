"""The reference step of the engine run and of the profile, side by side in kvsim validate (never a correction)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from kvsim.card_speed import reference_time, speed_markdown, speed_row
from kvsim.validate import run_validation

ROOT = Path(__file__).resolve().parents[1]


def test_ratio_is_engine_over_profile_at_the_scenarios_block_size():
    eng = {"reference_step": {"rows": 8, "ctx": 256, "graph": True, "time_s": 0.0105}}
    meta = {"reference_step": {"16": {"time_s": 0.0100}, "32": {"time_s": 0.0200}}}
    row = speed_row("s", eng, meta, 16)
    assert row["ratio"] == pytest.approx(1.05) and row["engine_ref_ms"] == pytest.approx(10.5)
    assert speed_row("s", eng, meta, 32)["ratio"] == pytest.approx(0.525)
    assert speed_row("s", eng, meta, 64)["ratio"] is None and speed_row("s", eng, meta, 64)["engine_ref_ms"]


@pytest.mark.parametrize("doc", [None, {}, {"time_s": 0}, {"time_s": -1.0}, {"time_s": "fast"}, [1]])
def test_missing_or_malformed_records_are_unknown_not_errors(doc):
    assert reference_time(doc) is None
    assert speed_row("s", {"reference_step": doc}, {"reference_step": {"16": doc}}, 16)["ratio"] is None


def test_no_section_without_any_reference():
    assert speed_markdown([speed_row("s", {}, {}, 16)]) == ""
    md = speed_markdown([speed_row("s", {"reference_step": {"time_s": 0.011}}, {}, 16)])
    assert "| s | 11.000 | – | – | – |" in md


def test_same_card_compares_the_recorded_uuids():
    """Lent cards of one model differ by several percent: the row says whether run and profile shared one."""
    a = {"time_s": 0.01, "gpu_uuid": "GPU-aaaa"}
    b = {"time_s": 0.01, "gpu_uuid": "GPU-bbbb"}
    assert speed_row("s", {"reference_step": a}, {"reference_step": {"16": dict(a)}}, 16)["same_card"] is True
    row = speed_row("s", {"reference_step": a}, {"reference_step": {"16": b}}, 16)
    assert row["same_card"] is False and row["ratio"] == pytest.approx(1.0)
    assert "| 1.000 | **no** |" in speed_markdown([row])
    for missing in ({"time_s": 0.01}, {"time_s": 0.01, "gpu_uuid": ""}, {"time_s": 0.01, "gpu_uuid": 7}):
        assert speed_row("s", {"reference_step": a}, {"reference_step": {"16": missing}}, 16)["same_card"] is None


def test_validate_reports_card_speed_and_predictions_do_not_change(tmp_path, capsys):
    """A replay with reference steps on both sides prints their ratio; the predicted values are those of the
    same replay without them (the ratio is reported, never applied)."""
    name = "v18_opt13b_pow2_bursty"
    src = ROOT / "validation" / "H200" / name / "engine"
    scen = [str(ROOT / "scenarios" / "validation" / f"{name}.yaml")]
    prof = json.loads((ROOT / "calibrate" / "profiles" / "H200" / "opt-13b.json").read_text())
    prof["meta"].pop("reference_step", None)             # the plain side: no reference step anywhere
    bare = tmp_path / "opt-bare.json"
    bare.write_text(json.dumps(prof))
    first = _copy(src, tmp_path / "a", name)
    doc = json.loads((first / name / "engine" / "summary.json").read_text())
    doc["engine"].pop("reference_step", None)
    (first / name / "engine" / "summary.json").write_text(json.dumps(doc))
    plain = run_validation(scen, [str(bare)], first, replay=True)
    prof["meta"]["reference_step"] = {"16": {"rows": 8, "ctx": 256, "graph": True, "time_s": 0.0090,
                                             "gpu_uuid": "GPU-profile"}}
    pfile = tmp_path / "opt.json"
    pfile.write_text(json.dumps(prof))
    out = _copy(src, tmp_path / "b", name)
    doc = json.loads((out / name / "engine" / "summary.json").read_text())
    doc["engine"]["reference_step"] = {"rows": 8, "ctx": 256, "graph": True, "time_s": 0.0099,
                                       "gpu_uuid": "GPU-engine"}
    doc["engine"]["kernels_compiled_while_serving"] = 2
    (out / name / "engine" / "summary.json").write_text(json.dumps(doc))
    timed = run_validation(scen, [str(pfile)], out, replay=True)
    pd.testing.assert_frame_equal(plain, timed)
    md = (out / "validation-replay.md").read_text()
    assert "## Card speed" in md and f"| {name} | 9.900 | 9.000 | 1.100 | **no** | **2** |" in md
    said = capsys.readouterr().out
    assert f"note: {name}: the engine ran on another card" in said
    assert f"note: {name}: the engine compiled 2 Triton kernel(s) while serving" in said
    assert "## Card speed" not in (tmp_path / "a" / "validation-replay.md").read_text()


def _copy(src: Path, out: Path, name: str) -> Path:
    shutil.copytree(src, out / name / "engine")
    return out


def test_gpu_uuid_names_the_card_or_is_unknown(monkeypatch):
    torch = pytest.importorskip("torch")
    from types import SimpleNamespace

    from kvsim.engine.reference_step import gpu_uuid
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: SimpleNamespace(uuid="5f3a-01"))
    assert gpu_uuid("cuda:0") == "GPU-5f3a-01"
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: SimpleNamespace(uuid="GPU-5f3a-01"))
    assert gpu_uuid("cuda:0") == "GPU-5f3a-01"

    def broken(d):
        raise RuntimeError("no CUDA")
    monkeypatch.setattr(torch.cuda, "get_device_properties", broken)
    assert gpu_uuid("cuda:0") is None


def test_compiles_while_serving_are_shown_beside_the_card():
    """An engine run that compiled kernels on the clock says so in the card table; older runs say nothing."""
    ref = {"reference_step": {"time_s": 0.01}}
    meta = {"reference_step": {"16": {"time_s": 0.01}}}
    rows = [speed_row("a", dict(ref, kernels_compiled_while_serving=2), meta, 16),
            speed_row("b", dict(ref, kernels_compiled_while_serving=0), meta, 16),
            speed_row("c", ref, meta, 16), speed_row("d", dict(ref, kernels_compiled_while_serving="x"), meta, 16)]
    assert [r["compiled"] for r in rows] == [2, 0, None, None]
    md = speed_markdown(rows)
    assert "| a | 10.000 | 10.000 | 1.000 | – | **2** |" in md and "| b | 10.000 | 10.000 | 1.000 | – | 0 |" in md
    assert "| c | 10.000 | 10.000 | 1.000 | – | – |" in md


def test_host_ratio_is_the_runs_host_time_over_the_serving_fits_at_the_same_rows():
    """The run's decode steps' cpu_s over the fit's host_s, interpolated in rows; prefill, copy and
    out-of-range steps left out; None without a table or with too few steps."""
    from kvsim.card_speed import host_ratio
    serving = {"num_seqs": [4, 16], "host_s": [2e-4, 4e-4]}
    n = [4] * 20 + [10] * 20 + [32] * 5
    its = pd.DataFrame({"decode_seqs": n + [8], "prefill_tokens": [0] * len(n) + [100],
                        "cow_copies": [0] * len(n) + [0],
                        "cpu_s": [3e-4] * 20 + [4.5e-4] * 20 + [9.0] * 5 + [9.0]})
    assert host_ratio(its, serving) == pytest.approx(1.5)          # 3/2 at 4 rows, 4.5/3 at 10 rows
    its.loc[0, "cow_copies"] = 1                                     # a copy step is left out
    its.loc[0, "cpu_s"] = 9.0
    assert host_ratio(its, serving) == pytest.approx(1.5)
    assert host_ratio(its, {"num_seqs": [4, 16]}) is None and host_ratio(None, serving) is None
    assert host_ratio(its.iloc[:10], serving) is None
    row = speed_row("s", {"reference_step": {"time_s": 0.01}}, {}, 16, its, serving)
    assert row["host_ratio"] == pytest.approx(1.5) and "| – | 1.50 |" in speed_markdown([row])


def test_a_run_whose_host_was_far_from_the_calibrations_gets_a_note():
    from kvsim.card_speed import HOST_NOTE, host_note
    assert host_note("v", None) is None and host_note("v", 1.0) is None and host_note("v", HOST_NOTE) is None
    assert "1.58x" in host_note("v13", 1.58) and host_note("v13", 1.58).startswith("note: v13:")
    assert host_note("v", 1 / HOST_NOTE - 0.01) is not None
