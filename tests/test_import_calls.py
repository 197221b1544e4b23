"""benchmarks/engine/import_calls.py: a lease's device calls (gpu_h200.sh's h200.tgz each) laid out as a validation
set and a results folder, records gzipped, plots left behind, a run already in the set refused."""
from __future__ import annotations

import gzip
import json
import tarfile
from pathlib import Path

from tests._scripts import load_script


def _tool():
    return load_script("benchmarks/engine/import_calls.py")


def _call(tmp: Path, k: int, run: str, calibrate: bool) -> Path:
    """A call's work folder, packed as gpu_h200.sh packs it."""
    w = tmp / f"work{k}"
    e = w / "validation" / "s1" / "s1" / run
    e.mkdir(parents=True)
    (e / "summary.json").write_text(json.dumps({"summary": {"run": k}}))
    (e / "requests.csv").write_text(f"request_id,call\n0,{k}\n")
    (e / "iterations.csv").write_text("iter,duration_s\n0,0.01\n")
    (e / "run.png").write_bytes(b"png")
    (w / "stages.txt").write_text(f"== stage of call {k}\n")
    (w / "engine_one_process.txt").write_text(f"s1 run {k}\n")
    (w / "validation" / "scenario_runs.csv").write_text(f"scenario,run\ns1,{k}\n")
    (w / "clocks").mkdir()
    (w / "clocks" / "engine_one_process.csv").write_text("t,sm\n0,1980\n")
    (w / "gpu.txt").write_text(f"card of call {k}\n")
    if calibrate:
        p = w / "profiles"
        (p / "m-b16.serving" / "n4").mkdir(parents=True)
        (p / "m-b16.serving" / "n4" / "iterations.csv").write_text("iter\n0\n")
        (p / "m-b16.log").write_text("calibrated\n")
        (p / "m-b16.clocks.csv").write_text("t\n0\n")
        (p / "m-b16.json").write_text("{}")
        (w / "lm_head_rows_m.txt").write_text("LM head of m\n")           # gpu_h200.sh LMHEAD=m
        (w / "lm_head" / "m").mkdir(parents=True)
        (w / "lm_head" / "m" / "lm_head_rows.json").write_text('{"rows": []}')
        (w / "odd_rows_m.txt").write_text("decode steps of m\n")          # gpu_h200.sh ODDROWS=m
        (w / "odd_rows" / "m").mkdir(parents=True)
        (w / "odd_rows" / "m" / "odd_rows.json").write_text('{"rows": [1]}')
    tgz = tmp / f"call{k}.tgz"
    with tarfile.open(tgz, "w:gz") as t:
        t.add(w, arcname=".")
    return tgz


def test_calls_land_as_a_set_and_a_results_folder(tmp_path):
    m = _tool()
    a, b = _call(tmp_path, 1, "engine", True), _call(tmp_path, 2, "engine_r2", False)
    s, r, prof = tmp_path / "set", tmp_path / "res", tmp_path / "profiles" / "m.json"
    assert m.main([str(a), str(b), "--set", str(s), "--results", str(r), "--profile", f"m-b16={prof}"]) == 0
    for run, k in (("engine", 1), ("engine_r2", 2)):
        d = s / "s1" / run
        assert sorted(p.name for p in d.iterdir()) == ["iterations.csv.gz", "requests.csv.gz", "summary.json"]
        assert gzip.decompress((d / "requests.csv.gz").read_bytes()) == f"request_id,call\n0,{k}\n".encode()
    assert (r / "stages.txt").read_text() == "# call 1\n== stage of call 1\n# call 2\n== stage of call 2\n"
    assert (r / "scenario_runs.csv").read_text() == "scenario,run\ns1,1\ns1,2\n"       # one header
    assert (r / "gpu.txt").read_text() == "card of call 1\n"
    assert sorted(p.name for p in (r / "clocks").iterdir()) == ["engine_one_process_call1.csv.gz",
                                                                "engine_one_process_call2.csv.gz"]
    assert (r / "m-b16.calibrate.log").exists() and (r / "m-b16.clocks.csv.gz").exists()
    assert (r / "serving_runs" / "m-b16" / "n4" / "iterations.csv.gz").exists() and prof.read_text() == "{}"
    assert (r / "lm_head" / "m.txt").read_text() == "LM head of m\n" and (r / "lm_head" / "m.json").exists()
    assert (r / "odd_rows" / "m.txt").read_text() == "decode steps of m\n"
    assert (r / "odd_rows" / "m.json").read_text() == '{"rows": [1]}'
    m.gz(tmp_path / "call1.tgz", tmp_path / "x1.gz")                 # the same bytes every time (no name, no time)
    m.gz(tmp_path / "call1.tgz", tmp_path / "x2.gz")
    assert (tmp_path / "x1.gz").read_bytes() == (tmp_path / "x2.gz").read_bytes()


def test_a_run_already_in_the_set_or_a_second_import_is_refused(tmp_path, capsys):
    m = _tool()
    a, b = _call(tmp_path, 1, "engine", False), _call(tmp_path, 2, "engine", False)
    s, r = tmp_path / "set", tmp_path / "res"
    assert m.main([str(a), str(b), "--set", str(s), "--results", str(r)]) == 2
    assert "exists: number the runs apart" in capsys.readouterr().err
    assert m.main([str(a), "--set", str(s), "--results", str(r)]) == 2          # stages.txt: imported already
    assert m.main([str(tmp_path / "none.tgz"), "--set", str(s), "--results", str(tmp_path / "r2")]) == 2
    assert m.main([str(a), "--set", str(s), "--results", str(tmp_path / "r3"), "--profile", "bad"]) == 2
