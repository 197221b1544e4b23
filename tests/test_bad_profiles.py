"""Malformed calibration profiles, and engine records, refused on one line with exit code 2 by every command that
reads them (run, validate, paper, report block-size, merge-profiles, calibrate --resume); good ones still work.

Each bad profile is a real one (``calibrate/profiles/H200/opt-13b.json``) with one thing changed. Kept fast: the
bad ones fail before any simulation, the good runs are a handful of requests.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kvsim.errors import KvsimError
from tests._cli import cli

ROOT = Path(__file__).resolve().parents[1]
P = ROOT / "calibrate" / "profiles" / "H200" / "opt-13b.json"
Q = ROOT / "scenarios" / "examples" / "quickstart.yaml"            # OPT-13B on an A100-40GB
V01 = "v01_opt13b_sharegpt_paged_low"                               # names gpu h100-80gb, ran on an H200
V01_SCEN = ROOT / "scenarios" / "validation" / f"{V01}.yaml"
V01_RECORDS = ROOT / "validation" / "H200" / V01 / "engine"
TINY = ["--set", "workload.num_requests=5"]


def _doc() -> dict:
    return json.loads(P.read_text())


def _write(tmp_path, doc: dict, name: str = "p.json", text: str | None = None) -> Path:
    path = tmp_path / name
    path.write_text(text if text is not None else json.dumps(doc))
    return path


def _one_line(capsys, *args, names=()) -> str:
    """Run ``kvsim ARGS``: exit 2, exactly one non-empty stderr line naming every string in ``names``."""
    rc, out, err = cli(capsys, *args)
    lines = [x for x in err.splitlines() if x.strip()]
    assert rc == 2, (rc, out, err)
    assert len(lines) == 1 and err.count("\n") == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    for n in names:
        assert str(n) in lines[0], (n, err)
    return lines[0]


def _bad_layers(tmp_path) -> list[Path]:
    """``num_layers`` 1e400 (parses as infinity) and ``"forty"``."""
    doc = _doc()
    doc["num_layers"] = 123456789
    huge = _write(tmp_path, doc, "huge.json", json.dumps(doc).replace("123456789", "1e400"))
    assert '"num_layers": 1e400' in huge.read_text()
    doc["num_layers"] = "forty"
    return [huge, _write(tmp_path, doc, "forty.json")]


def _replay_dir(tmp_path) -> Path:
    out = tmp_path / "val"
    shutil.copytree(V01_RECORDS, out / V01 / "engine")
    return out


def _p32(tmp_path) -> Path:
    """The real profile with its block size 16 renamed 32: a second profile to merge with it."""
    doc = _doc()
    for key, table in doc.items():
        if key != "meta" and isinstance(table, dict) and "16" in table:
            table["32"] = table.pop("16")
    doc["meta"]["reference_step"] = {"32": doc["meta"]["reference_step"]["16"]}
    return _write(tmp_path, doc, "p32.json")


# ---------------------------------------------------------------- 1. num_layers outside the constructor's checks
@pytest.mark.parametrize("which", [0, 1], ids=["1e400", "forty"])
def test_bad_num_layers_is_one_line_in_every_command(tmp_path, capsys, which):
    bad = _bad_layers(tmp_path)[which]
    out = tmp_path / "o"
    _one_line(capsys, "run", Q, "--out", out, "--profile", bad, "--set", "gpu=h200", *TINY,
              names=("cost.profile", bad, "num_layers"))
    assert not out.exists()
    _one_line(capsys, "validate", V01_SCEN, "--profile", bad, "--out", _replay_dir(tmp_path), "--replay",
              names=("--profile", bad, "num_layers"))
    _one_line(capsys, "paper", "--quick", "--profile", bad, "--out", tmp_path / "paper",
              names=("--profile", bad, "num_layers"))
    assert not (tmp_path / "paper").exists()
    _one_line(capsys, "report", "block-size", Q, "--profile", bad, "--set", "gpu=h200", "--requests", "5",
              "--block-sizes", "16", "--out", tmp_path / "r", names=("--profile", bad, "num_layers"))
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("key,value,words", [
    ("num_layers", 0, "positive integer"),
    ("num_layers", True, "positive integer"),
    ("dtype", None, "dtype"),
    ("decode_step", None, "decode_step"),
    ("prefill_overhead", [1, 2], "prefill_overhead"),
    ("sampling", {"greedy": {}}, "sampling"),
])
def test_every_field_the_constructor_reads_is_checked(tmp_path, key, value, words):
    from kvsim.cost.profile import load_profile
    doc = _doc()
    doc[key] = value
    path = _write(tmp_path, doc)
    with pytest.raises(KvsimError) as e:
        load_profile(path)
    assert e.value.field == "profile" and str(path) in str(e.value) and words in str(e.value)


@pytest.mark.parametrize("edit,words", [
    (lambda d: d["linear"].update(time_s=["1"] * len(d["linear"]["tokens"])), "linear: 'time_s'"),
    (lambda d: d["decode_attn"]["16"].update(ctx=[1, 2, 1e400]), "decode_attn.16"),
    (lambda d: d["decode_serving"].update({"16": [1]}), "decode_serving.16"),
    (lambda d: d["meta"].update(cuda_graphs="yes"), "meta.cuda_graphs"),
    (lambda d: d["meta"].update(gpu=7), "meta.gpu"),
])
def test_table_values_are_numbers_and_meta_fields_typed(tmp_path, capsys, edit, words):
    doc = _doc()
    edit(doc)
    bad = _write(tmp_path, doc, text=json.dumps(doc).replace("Infinity", "1e400"))
    _one_line(capsys, "run", Q, "--out", tmp_path / "o", "--profile", bad, "--set", "gpu=h200", *TINY,
              names=("cost.profile", bad, words))


# ---------------------------------------------------------------- 2. meta that is not an object
def test_meta_list_is_one_line(tmp_path, capsys):
    doc = _doc()
    doc["meta"] = []
    bad = _write(tmp_path, doc)
    _one_line(capsys, "report", "block-size", Q, "--profile", bad, "--set", "gpu=h200", "--requests", "5",
              "--block-sizes", "16", "--out", tmp_path / "r", names=("--profile", bad, "meta"))
    _one_line(capsys, "merge-profiles", "--out", tmp_path / "m.json", P, bad, names=(bad, "meta"))
    assert not (tmp_path / "m.json").exists()


# ---------------------------------------------------------------- 3. a block-size key that is not a number
def test_non_integer_block_size_key_is_one_line(tmp_path, capsys):
    doc = _doc()
    doc["decode_attn"]["abc"] = doc["decode_attn"]["16"]
    bad = _write(tmp_path, doc)
    _one_line(capsys, "merge-profiles", "--out", tmp_path / "m.json", bad, _p32(tmp_path),
              names=(bad, "decode_attn", "'abc'"))
    assert not (tmp_path / "m.json").exists()
    _one_line(capsys, "calibrate", "--resume", bad, names=("--resume", bad, "decode_attn", "'abc'"))
    _one_line(capsys, "validate", V01_SCEN, "--profile", bad, "--out", _replay_dir(tmp_path), "--replay",
              names=("--profile", bad, "decode_attn"))
    from kvsim.calibrate.merge import block_sizes
    with pytest.raises(KvsimError) as e:         # the helper itself, on an unchecked document
        block_sizes(doc)
    assert e.value.field == "decode_attn" and "abc" in str(e.value)


# ---------------------------------------------------------------- 4, 5. merge-profiles --out
def test_merge_refuses_an_empty_out(tmp_path, capsys):
    _one_line(capsys, "merge-profiles", "--out", "", P, _p32(tmp_path), names=("--out",))


def test_merge_refuses_to_overwrite_a_foreign_file_or_folder(tmp_path, capsys):
    p32 = _p32(tmp_path)
    scen = tmp_path / "s.yaml"
    shutil.copy(Q, scen)
    before = scen.read_bytes()
    _one_line(capsys, "merge-profiles", "--out", scen, P, p32, names=("--out", scen))
    assert scen.read_bytes() == before
    _one_line(capsys, "merge-profiles", "--out", tmp_path, P, p32, names=("--out",))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    _one_line(capsys, "merge-profiles", "--out", broken, P, p32, names=("--out", broken))
    assert broken.read_text() == "{not json"


def test_merge_writes_a_new_file_and_replaces_a_profile(tmp_path, capsys):
    from kvsim.cost.profile import load_profile
    out = tmp_path / "m.json"
    for _ in range(2):                                   # the second run replaces the profile the first wrote
        rc, stdout, err = cli(capsys, "merge-profiles", "--out", out, P, _p32(tmp_path))
        assert rc == 0, err
        assert load_profile(out).block_sizes == [16, 32]


# ---------------------------------------------------------------- 6. engine records with garbage summary values
@pytest.mark.parametrize("edit,key", [
    (lambda s: s.update({k: "garbage" for k in s}), "throughput_req_s"),
    (lambda s: s.update(throughput_req_s=None), "throughput_req_s"),
    (lambda s: s.update(preemptions=1.5), "preemptions"),
    (lambda s: s.update(ttft_p50_s=-1.0), "ttft_p50_s"),
    (lambda s: s.update(peak_blocks_in_use=True), "peak_blocks_in_use"),
])
def test_replay_refuses_non_numeric_summary_values(tmp_path, capsys, edit, key):
    out = _replay_dir(tmp_path)
    summary = out / V01 / "engine" / "summary.json"
    doc = json.loads(summary.read_text())
    edit(doc["summary"])
    summary.write_text(json.dumps(doc))
    _one_line(capsys, "validate", V01_SCEN, "--profile", P, "--out", out, "--replay",
              names=("--replay", summary, f"summary.{key}"))
    assert not (out / "validation-replay.md").exists()


def test_replay_accepts_null_latencies_as_the_writer_writes_them():
    from kvsim.validate import check_summary
    s = json.loads((V01_RECORDS / "summary.json").read_text())["summary"]
    check_summary(dict(s, normalized_latency_s=None, ttft_p99_s=None, tpot_p50_s=None), "x")


def test_good_replay_still_runs(tmp_path, capsys):
    out = _replay_dir(tmp_path)
    rc, stdout, err = cli(capsys, "validate", V01_SCEN, "--profile", P, "--out", out, "--replay")
    assert rc == 0, err
    assert (out / "validation-replay.md").is_file()


# ---------------------------------------------------------------- 7. the profile's model is the profile's fault
@pytest.mark.parametrize("model", [5, "no-such-model"])
def test_report_blames_the_profile_for_its_model(tmp_path, capsys, model):
    doc = _doc()
    doc["model"] = model
    bad = _write(tmp_path, doc)
    line = _one_line(capsys, "report", "block-size", Q, "--profile", bad, "--set", "gpu=h200", "--requests", "5",
                     "--block-sizes", "16", "--out", tmp_path / "r", names=(bad, "model"))
    assert line.startswith(f"error: --profile: {bad}: model:"), line


def test_report_profile_check_passes_a_good_profile():
    from kvsim.report.blocksize_profile import load_checked
    assert load_checked(str(P), "opt-13b", "fp16", "h200")["model"] == "OPT-13B"


# ---------------------------------------------------------------- 8. a profile measured on another GPU
def test_run_refuses_a_profile_of_another_gpu(tmp_path, capsys):
    out = tmp_path / "o"
    line = _one_line(capsys, "run", Q, "--out", out, "--profile", P, *TINY,
                     names=("cost.profile", P, "NVIDIA H200", "A100-40GB"))
    assert "gpu=h200-141gb" in line
    assert not out.exists()
    _one_line(capsys, "sweep", Q, "--grid", "engine.block_size=16", "--set", "cost.model=calibrated", "--set",
              f"cost.profile={P}", *TINY, "--out", tmp_path / "sw", "--quiet", "--jobs", "1",
              names=("cost.profile", "NVIDIA H200", "A100-40GB"))
    assert not (tmp_path / "sw").exists()


def test_run_with_the_profiles_own_gpu_still_works(tmp_path, capsys):
    rc, out, err = cli(capsys, "run", Q, "--out", tmp_path / "o", "--profile", P, "--set", "gpu=h200", *TINY)
    assert rc == 0, err
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["summary"]["requests_finished"] == 5


def test_another_cards_profile_runs_only_when_asked_for(tmp_path, capsys):
    """``cost.profile_other_gpu: true`` (what ``kvsim paper --profile`` sets): the profile's step times beside
    the scenario GPU's memory; the run says so in its scenario record."""
    rc, out, err = cli(capsys, "run", Q, "--out", tmp_path / "o", "--profile", P,
                       "--set", "cost.profile_other_gpu=true", *TINY)
    assert rc == 0, err
    doc = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert doc["gpu"] == "A100-40GB" and doc["scenario"]["cost"]["profile_other_gpu"] is True


def test_card_matching_uses_the_catalogue_and_leaves_unknown_cards_alone():
    from kvsim.cost.calibrated import card_matches
    assert card_matches("NVIDIA H200", "h200-141gb") is True
    assert card_matches("NVIDIA H200", "a100-40gb") is False
    assert card_matches("NVIDIA H100 80GB HBM3", "h100-80gb") is True
    assert card_matches("NVIDIA A100-SXM4-80GB", "a100-40gb") is False       # another catalogue GPU
    assert card_matches("NVIDIA H100 PCIe", "h100-80gb") is True             # unlisted, same chip
    assert card_matches("NVIDIA H100 PCIe", "h200-141gb") is False
    assert card_matches("Synthetic GPU", "a100-40gb") is None                # cannot be compared
    assert card_matches(None, "a100-40gb") is None


def test_validation_prices_scenarios_as_the_profiles_card():
    """scenarios/validation v01-v14 name h100-80gb but ran on an H200: validation simulates them as the card that
    measured the profile (and a user's --set gpu comes after it)."""
    from kvsim.validate import card_sets, simulate_with_profile
    assert card_sets(str(P)) == ["gpu=H200-141GB"]
    sc, _ = simulate_with_profile(str(V01_SCEN), str(P), ["workload.num_requests=3"])
    assert sc.gpu == "H200-141GB"
    with pytest.raises(KvsimError) as e:
        simulate_with_profile(str(V01_SCEN), str(P), ["gpu=a100-40gb", "workload.num_requests=3"])
    assert e.value.field == "cost.profile" and "A100-40GB" in str(e.value)
