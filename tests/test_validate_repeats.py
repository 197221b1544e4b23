"""``kvsim validate --repeats N``: every engine run kept (engine/, engine_r2/, ...), the error taken against the
runs' median with the runs' range beside it, a live run and its replay agreeing, and bad values refused in one
line. The engine is replaced by committed H100 records (scaled per repeat) so this runs on a CPU."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from kvsim import validate as V
from kvsim.cli import main
from kvsim.validate_repeats import engine_dirs, in_range, measured_stats, repeat_dir

ROOT = Path(__file__).resolve().parents[1]
NAME = "v07_opt13b_swap"
SRC = ROOT / "validation" / "H100-async-opt-1207d" / NAME / "engine"
SCEN = str(ROOT / "scenarios" / "validation" / f"{NAME}.yaml")
PROF = str(ROOT / "calibrate" / "profiles" / "H100" / "opt-13b-async-1207d.json")
SCALE = {1: 1.0, 2: 1.3, 3: 0.9}          # each repeat's latencies and throughput, scaled from the committed run


def _scaled_copy(dst: Path, f: float) -> None:
    shutil.copytree(SRC, dst, dirs_exist_ok=True)      # as write_engine_run, over an earlier run
    doc = json.loads((dst / "summary.json").read_text())
    s = doc["summary"]
    for k in ("throughput_req_s", "normalized_latency_s", "tpot_p50_s"):
        s[k] = s[k] * f
    (dst / "summary.json").write_text(json.dumps(doc))


def test_engine_dirs_in_repeat_order_and_only_with_records(tmp_path):
    d = tmp_path / "s"
    for r in (10, 2, 3):
        (d / f"engine_r{r}").mkdir(parents=True)
        (d / f"engine_r{r}" / "summary.json").write_text("{}")
    (d / "engine_r4").mkdir()                       # no records: not a repeat
    (d / "engine_rx").mkdir()
    (d / "engine_r1").mkdir()                       # r1 is engine/ itself
    (d / "engine_r1" / "summary.json").write_text("{}")
    assert [p.name for p in engine_dirs(d)] == ["engine", "engine_r2", "engine_r3", "engine_r10"]
    assert repeat_dir(d, 1) == d / "engine" and repeat_dir(d, 3) == d / "engine_r3"
    assert [p.name for p in engine_dirs(tmp_path / "none")] == ["engine"]


def test_measured_is_the_runs_median_with_the_range():
    runs = [{"x": 3.0, "n": 5}, {"x": 1.0, "n": None}, {"x": 2.0, "n": 7}, {"x": 4.0, "n": float("nan")}]
    assert measured_stats(runs, "x") == (2.5, 1.0, 4.0, 4)        # even count: the middle two's mean, not the lower
    assert measured_stats(runs[:3], "x") == (2.0, 1.0, 3.0, 3)    # odd count: the middle run's own figure
    assert measured_stats(runs, "n") == (6, 5, 7, 2)              # runs without the value do not count
    assert measured_stats(runs, "missing") == (None, None, None, 0)
    assert measured_stats([{"b": True}], "b") == (None, None, None, 0)
    assert in_range(2.5, 1.0, 4.0) is True and in_range(4.5, 1.0, 4.0) is False and in_range(None, 1, 2) is None


@pytest.fixture
def fake_engine(monkeypatch):
    """``RealEngine`` and its writer replaced: repeat r writes the committed records scaled by SCALE[r]."""
    import kvsim.engine.engine as E
    import kvsim.engine.preflight as P
    import kvsim.output as O
    made = []

    class Fake:
        def __init__(self, sc, *, model=None, tp=None):
            made.append(model)
            self.model = f"model-{len(made)}" if model is None else model

        def run(self):
            return len(made)

    monkeypatch.setattr(E, "RealEngine", Fake)
    monkeypatch.setattr(O, "write_engine_run", lambda res, out, **k: _scaled_copy(out, SCALE.get(res, 1.0)))
    monkeypatch.setattr(P, "check_engine_fits", lambda sc: None)
    monkeypatch.setattr(V, "check_graph_mode", lambda p, g: None)
    monkeypatch.setattr(V, "_release_device", lambda: None)
    return made


def test_live_repeats_keep_every_run_and_replay_agrees(tmp_path, fake_engine):
    live = V.run_validation([SCEN], [PROF], tmp_path, repeats=3)
    assert fake_engine == [None, "model-1", "model-1"]            # one model loaded, three fresh engines
    assert [p.name for p in engine_dirs(tmp_path / NAME)] == ["engine", "engine_r2", "engine_r3"]
    base = json.loads((SRC / "summary.json").read_text())["summary"]
    row = live.set_index("metric").loc["throughput_req_s"]
    assert row.repeats == 3 and row.measured == pytest.approx(base["throughput_req_s"])   # the median run (x1.0)
    assert row.measured_min == pytest.approx(0.9 * base["throughput_req_s"])
    assert row.measured_max == pytest.approx(1.3 * base["throughput_req_s"])
    assert row.rel_error == pytest.approx(row.predicted / row.measured - 1)
    assert row.in_range == (row.measured_min <= row.predicted <= row.measured_max)
    pre = live.set_index("metric").loc["preemptions"]              # unscaled: the three runs agree
    assert pre.measured == pre.measured_min == pre.measured_max == base["preemptions"]
    md = (tmp_path / "validation.md").read_text()
    assert "## Engine repeats" in md and f"| {NAME} | throughput_req_s | 3 |" in md
    replay = V.run_validation([SCEN], [PROF], tmp_path, replay=True)
    cols = ["metric", "predicted", "measured", "measured_min", "measured_max", "repeats", "in_range"]
    pd.testing.assert_frame_equal(live[cols], replay[cols])
    once = V.run_validation([SCEN], [PROF], tmp_path, repeats=1)     # a later live run drops the old repeats
    assert [p.name for p in engine_dirs(tmp_path / NAME)] == ["engine"] and (once.repeats == 1).all()


def test_one_run_has_no_repeats_section(tmp_path):
    shutil.copytree(SRC, tmp_path / NAME / "engine")
    df = V.run_validation([SCEN], [PROF], tmp_path, replay=True)
    assert (df.repeats == 1).all() and (df.measured == df.measured_min).all()
    assert "## Engine repeats" not in (tmp_path / "validation-replay.md").read_text()


@pytest.mark.parametrize("args", [["--repeats", "0"], ["--repeats", "x"], ["--repeats", "21"],
                                  ["--repeats", "2", "--replay"]])
def test_bad_repeats_is_one_line(tmp_path, capsys, args):
    try:
        rc = main(["validate", SCEN, "--profile", PROF, "--out", str(tmp_path / "v"), *args])
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: --repeats") and err.count("\n") == 1, err
    assert not (tmp_path / "v").exists()
