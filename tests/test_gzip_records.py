"""Saved engine records kept gzip-compressed (``iterations.csv.gz``, ``requests.csv.gz``, as the committed ones under
``validation/`` and ``benchmarks/engine/results_*``) read and replay exactly as the same records in plain csv."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pandas as pd
import pytest

from kvsim.errors import KvsimError
from kvsim.validate_records import read_engine_records, record_file

ROOT = Path(__file__).resolve().parents[1]
NAME = "v10_opt13b_beam4"                                   # a small committed H100 run
SRC = ROOT / "validation" / "H100-async-opt-1207d" / NAME / "engine"
SCEN = str(ROOT / "scenarios" / "validation" / f"{NAME}.yaml")
PROF = str(ROOT / "calibrate" / "profiles" / "H100" / "opt-13b-async-1207d.json")
RECORDS = ("requests.csv", "iterations.csv")


def _csv_bytes(folder: Path, name: str) -> bytes:
    """The csv text of a committed record, whichever form it is kept in."""
    path = record_file(folder, name)
    assert path.exists(), path
    return gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()


def _saved_run(dst: Path, gz: tuple[str, ...]) -> Path:
    """The committed run copied to ``dst`` with the records in ``gz`` gzip-compressed and the others plain."""
    dst.mkdir(parents=True)
    shutil.copy(SRC / "summary.json", dst / "summary.json")
    for name in RECORDS:
        text = _csv_bytes(SRC, name)
        if name in gz:
            (dst / (name + ".gz")).write_bytes(gzip.compress(text, mtime=0))
        else:
            (dst / name).write_bytes(text)
    return dst


def test_record_file_plain_first_then_gz_else_the_plain_name(tmp_path):
    assert record_file(tmp_path, "iterations.csv") == tmp_path / "iterations.csv"        # neither: the plain name
    (tmp_path / "iterations.csv.gz").write_bytes(gzip.compress(b"a\n1\n"))
    assert record_file(tmp_path, "iterations.csv") == tmp_path / "iterations.csv.gz"
    assert record_file(str(tmp_path), "iterations.csv") == tmp_path / "iterations.csv.gz"
    (tmp_path / "iterations.csv").write_text("a\n1\n")
    assert record_file(tmp_path, "iterations.csv") == tmp_path / "iterations.csv"        # both: the plain one


@pytest.mark.parametrize("gz", [("iterations.csv",), ("requests.csv",), RECORDS])
def test_gzipped_records_read_as_the_plain_ones(tmp_path, gz):
    plain = read_engine_records(_saved_run(tmp_path / "plain", ()))
    packed_dir = _saved_run(tmp_path / "gz", gz)
    assert sorted(p.name for p in packed_dir.iterdir()) == sorted(
        ["summary.json"] + [n + ".gz" if n in gz else n for n in RECORDS])
    packed = read_engine_records(packed_dir)
    assert packed[0] == plain[0]
    assert len(plain[1]) > 0 and len(plain[2]) > 0
    pd.testing.assert_frame_equal(packed[1], plain[1])
    pd.testing.assert_frame_equal(packed[2], plain[2])


def test_gzipped_run_replays_identically(tmp_path):
    from kvsim.validate import run_validation
    _saved_run(tmp_path / "plain" / NAME / "engine", ())
    _saved_run(tmp_path / "gz" / NAME / "engine", RECORDS)
    a = run_validation([SCEN], [PROF], tmp_path / "plain", replay=True)
    b = run_validation([SCEN], [PROF], tmp_path / "gz", replay=True)
    assert len(a) > 0 and a.measured.notna().any()
    pd.testing.assert_frame_equal(a, b)
    for f in ("validation-replay.csv", f"{NAME}/step_kinds.csv", f"{NAME}/timeline.csv"):
        assert (tmp_path / "plain" / f).read_bytes() == (tmp_path / "gz" / f).read_bytes(), f


def test_truncated_gz_is_a_one_line_replay_error(tmp_path):
    d = _saved_run(tmp_path / "e", RECORDS)
    data = (d / "iterations.csv.gz").read_bytes()
    (d / "iterations.csv.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(KvsimError, match="cannot read .*iterations.csv.gz"):
        read_engine_records(d)
    (d / "requests.csv.gz").unlink()                   # neither form: the error names the plain file
    with pytest.raises(KvsimError, match=r"cannot read .*requests\.csv: "):
        read_engine_records(d)


def test_kept_serving_runs_load_from_gzipped_records(tmp_path):
    from kvsim.calibrate.serving_runs import load_runs, save_runs
    its = pd.DataFrame({"iter": [0, 1, 2], "duration_s": [0.01, 0.0125, 0.02], "decode_seqs": [4, 4, 3]})
    reqs = pd.DataFrame({"request_id": [0, 1], "prompt_len": [128, 96], "finish_s": [0.5, 0.75]})
    save_runs({4: (its, reqs), 8: (its.assign(decode_seqs=8), reqs)}, tmp_path)
    plain = load_runs(tmp_path)
    for name in RECORDS:                                 # n4 kept compressed, n8 plain
        f = tmp_path / "n4" / name
        f.with_name(name + ".gz").write_bytes(gzip.compress(f.read_bytes(), mtime=0))
        f.unlink()
    packed = load_runs(tmp_path)
    assert sorted(packed) == sorted(plain) == [4, 8]
    for n in plain:
        for x, y in zip(packed[n], plain[n]):
            pd.testing.assert_frame_equal(x, y)


def test_engine_check_reads_gzipped_requests(tmp_path):
    from kvsim.report.engine_check import load_runs
    for b in (16, 32):
        d = tmp_path / f"b{b}_r2.5_s0"
        d.mkdir()
        text = _csv_bytes(SRC, "requests.csv")
        if b == 16:
            (d / "requests.csv.gz").write_bytes(gzip.compress(text, mtime=0))
        else:
            (d / "requests.csv").write_bytes(text)
    t = load_runs(tmp_path, "normalized_latency_s")
    assert list(t.block_size) == [16, 32] and t.metric.iloc[0] == t.metric.iloc[1] and t.metric.notna().all()


def test_run_over_gzipped_records_replaces_them(tmp_path, capsys):
    """A run written into a folder that holds compressed records (an engine run kept under validation/ run again)
    replaces the set: the records come back plain, the old .gz ones gone."""
    from kvsim.cli import main
    out = _saved_run(tmp_path / "o", RECORDS)
    rc = main(["run", str(ROOT / "scenarios" / "examples" / "quickstart.yaml"), "--set", "workload.num_requests=20",
               "--outputs", "json,csv", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["iterations.csv", "requests.csv", "summary.json"]
    assert len(pd.read_csv(out / "requests.csv")) == 20
