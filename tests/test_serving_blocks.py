"""``kvsim calibrate --serving-block-sizes``: a serving fit of its own at each block size asked for
(kvsim/calibrate/serving_blocks.py). The engine runs are replaced, so this runs on a CPU; the fit itself is
tested with a tiny model in tests/test_serving_fit.py."""
from __future__ import annotations

import json

import pytest

import kvsim
from kvsim.calibrate import serving_blocks as SB
from tests.test_bad_input import assert_error


@pytest.mark.parametrize("extra,why", [
    (["--block-sizes", "16,64", "--serving-block-sizes", "32"], "not one of"),
    (["--block-sizes", "16,64", "--serving-block-sizes", "16,16"], "twice"),
    (["--block-sizes", "16,64", "--serving-block-sizes", "16,,64"], ""),
    (["--block-sizes", "16,64", "--serving-block-sizes", ""], ""),
])
def test_bad_serving_block_sizes_are_one_line(capsys, extra, why):
    err = assert_error(capsys, "--serving-block-sizes", "calibrate", "--model", "opt-13b", *extra, "--estimate")
    assert why in err


def test_fast_keeps_its_serving_runs_only_with_serving_block_sizes(capsys, tmp_path):
    assert_error(capsys, "--serving-runs", "calibrate", "--model", "opt-13b", "--block-sizes", "16,64", "--fast",
                 "--serving-runs", str(tmp_path / "r"), "--estimate")
    rc = kvsim.cli.main(["calibrate", "--model", "opt-13b", "--block-sizes", "16,64", "--fast",
                         "--serving-block-sizes", "64", "--serving-runs", str(tmp_path / "r"), "--estimate"])
    assert rc == 0 and not (tmp_path / "r").exists()


def test_parse_keeps_the_order_and_says_none_when_not_given():
    assert SB.parse_serving_sizes(None, [1, 16, 128]) is None
    assert SB.parse_serving_sizes("128,1", [1, 16, 128]) == [128, 1]


class _Parts:
    dropped = 0

    def drop(self):
        _Parts.dropped += 1


@pytest.fixture
def fake_fit(monkeypatch):
    """calibration_parts and fit_serving replaced: block size 2 fits, 4 is cut by the time limit after some runs,
    8 fails, 32 finds too few steps."""
    import kvsim.calibrate.engine_runs as ER
    import kvsim.calibrate.serving_fit as SF
    calls = []
    monkeypatch.setattr(ER, "calibration_parts", lambda prof, bs, device, **kw: calls.append(("parts", bs, kw))
                        or _Parts())

    def fit(model, prof, bs, *, notes, save_dir, deadline, parts, **kw):
        calls.append(("fit", bs, save_dir, deadline))
        if bs == 8:
            raise RuntimeError("CUDA out of memory\nmore")
        if bs == 4:
            notes["serving_fit_skipped"] = {"runs": 3, "of": 21, "why": "the calibration's time limit"}
        if bs == 32:
            return {}, {}
        return {"num_seqs": [4, 8], "extra_s": [bs * 1e-5, bs * 2e-5]}, {"tokens": [10.0], "extra_s": [1e-4]}
    monkeypatch.setattr(SF, "fit_serving", fit)
    _Parts.dropped = 0
    return calls


def test_each_block_size_gets_its_own_fit_and_its_notes(tmp_path, fake_fit):
    prof = {"meta": {"serving_block_sizes": [16]}, "decode_serving": {"16": {"x": 1}}}
    written = []
    SB.fit_serving_at(None, prof, [2, 4, 8, 32], tmp_path / "p.json", serving_runs=str(tmp_path / "runs"),
                      deadline=123.0, log=lambda *_: None,
                      write=lambda p, path: written.append(json.loads(json.dumps(p))))
    assert [c[1] for c in fake_fit if c[0] == "parts"] == [2, 4, 8, 32]
    assert all(c[2] == {"overhead": False, "serving": True} for c in fake_fit if c[0] == "parts")
    fits = [c for c in fake_fit if c[0] == "fit"]
    assert [c[2] for c in fits] == [str(tmp_path / "runs" / f"b{b}") for b in (2, 4, 8, 32)]
    assert all(c[3] == 123.0 for c in fits)
    assert _Parts.dropped == 4                                    # each block size's cache given back, failed too
    assert set(prof["decode_serving"]) == {"16", "2", "4"} and prof["decode_serving"]["16"] == {"x": 1}
    assert prof["decode_serving"]["4"]["extra_s"] == [4e-5, 8e-5] and set(prof["prefill_serving"]) == {"2", "4"}
    assert prof["meta"]["serving_block_sizes"] == [16, 2, 4]
    assert prof["meta"]["serving_fit_skipped_at"] == {"4": {"runs": 3, "of": 21, "why": "the calibration's time limit"}}
    assert prof["meta"]["serving_fit_error_at"] == {"8": "RuntimeError: CUDA out of memory"}
    assert len(written) == 4 and "4" not in written[0]["decode_serving"]   # written after each block size


def test_more_serving_fits_skips_the_fit_block_size_and_records_it(tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(SB, "fit_serving_at", lambda model, prof, sizes, path, **kw: asked.append(sizes))
    prof = {"meta": {}, "decode_serving": {"16": {}}}
    SB.more_serving_fits(None, prof, 16, [1, 16, 128], tmp_path / "p.json")
    assert asked == [[1, 128]] and prof["meta"]["serving_block_sizes"] == [16]
    prof = {"meta": {}}                                           # --fast: no fit at the fit block size
    SB.more_serving_fits(None, prof, 16, [16], tmp_path / "p.json")
    assert asked == [[1, 128]] and prof["meta"]["serving_block_sizes"] == []


def test_a_scenario_at_a_block_size_whose_own_fit_was_cut_is_told(tmp_path, capsys):
    """The note names the cut of the scenario's block size's fit, not the fit block size's."""
    src = json.loads(open("calibrate/profiles/H100/llama-3-8b-async-1207b.json").read())
    src["meta"].pop("serving_fit_skipped", None)
    src["meta"]["serving_fit_skipped_at"] = {"16": {"runs": 5, "of": 21, "why": "the calibration's time limit"}}
    p = tmp_path / "p.json"
    p.write_text(json.dumps(src))
    sc = kvsim.load_scenario("scenarios/validation/v21_llama3_8b_sharegpt_trace.yaml",
                             ["workload.num_requests=20", "gpu=h100-80gb", "cost.model=calibrated",
                              f"cost.profile={p}"])
    from kvsim.build import partial_note, setup_run
    note = partial_note(sc, setup_run(sc).cost)
    assert note is not None and "skipped 5 of 21" in note


def test_a_block_size_without_its_own_serving_fit_gets_a_note(tmp_path):
    """A profile with a serving fit at block 16 only, run at block 32 (which it has grids for): the run says its
    decode steps are priced without one and how to add it; at block 16, and with a profile without serving fits,
    nothing is said."""
    import json

    import kvsim
    from kvsim.build import serving_note, setup_run
    from tests.profile_factory import synthetic_profile
    doc = synthetic_profile(block_sizes=(16, 32), steps=True)
    doc["decode_serving"] = {"16": {"num_seqs": [4, 16], "extra_s": [1e-4, 2e-4], "spread": "grid"}}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({k: v for k, v in doc.items() if k != "decode_serving"}))

    def note(bs, profile):
        sc = kvsim.load_scenario({"name": "n", "model": "opt-13b", "gpu": "a100-40gb", "seed": 0,
                                  "engine": {"block_size": bs}, "cost": {"model": "calibrated", "profile": str(profile)},
                                  "workload": {"dataset": "uniform", "prompt_len_range": [20, 40],
                                               "output_len_range": [4, 8], "num_requests": 2, "arrival": "burst"}})
        return serving_note(sc, setup_run(sc).cost)
    said = note(32, path)
    assert "no serving fit at block size 32 (it has one at 16)" in said and "--serving-block-sizes 32" in said
    assert note(16, path) is None and note(32, plain) is None
