"""segments.csv (one row per stepped iteration or fast-forwarded segment) against stepping, and ``--iterations``.

* in every mode, a fast-forwarded run whose records spill to disk and are written in small chunks writes a
  segments.csv equal, byte for byte, to the records built row by row in plain Python from the step-by-step
  run's iterations (the segment spans taken from the fast-forwarded run's log), and its records expand to
  exactly the stepped run's iterations;
* ``auto`` writes iterations.csv up to ``AUTO_MAX_ROWS`` iterations and segments.csv above; ``rows`` and
  ``segments`` force either; a run without a simulator log always has rows;
* a bad ``--iterations`` is one line naming the flag, exit 2.
"""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from kvsim import csvfast, iterrecords
from kvsim.build import setup_run
from kvsim.iterlog import ITERATION_COLUMNS, IterationLog
from kvsim.iterrecords import RECORD_COLUMNS, expand, iteration_file
from kvsim.output import write_run
from kvsim.sim import SimEngine
from kvsim.spill import SpillArray
from tests._cli import cli
from tests.test_bounded_records import MODES, scenario


def _reference(frame: pd.DataFrame, firsts, ends) -> pd.DataFrame:
    """Records by the definition, one Python loop over the iterations."""
    span = {int(f): int(e) for f, e in zip(firsts, ends)}
    rows, i, n = [], 0, len(frame)
    while i < n:
        j = span.get(i, i + 1)
        a, b = frame.iloc[i], frame.iloc[j - 1]
        row = {"iter": int(a["iter"]), "steps": j - i, "fast_forwarded": int(i in span),
               "start_s": float(a["start_s"]), "end_s": float(b["start_s"]) + float(b["duration_s"])}
        row.update({c: b[c] for c in ITERATION_COLUMNS[3:]})
        rows.append(row)
        i = j
    df = pd.DataFrame(rows, columns=list(RECORD_COLUMNS))
    return df.astype({c: (np.float64 if c.endswith("_s") else np.int64) for c in RECORD_COLUMNS})


@pytest.mark.parametrize("mode", sorted(MODES))
def test_segments_csv_equals_records_of_stepping(mode, tmp_path, monkeypatch):
    sc = scenario(mode)
    step = SimEngine(setup_run(sc), fast_forward=False).run().iterations
    monkeypatch.setattr(SpillArray, "LIMIT", 48)
    monkeypatch.setattr(IterationLog, "CHUNK_ROWS", 29)
    monkeypatch.setattr(SimEngine, "TAKE_EVERY", 3)
    monkeypatch.setattr(csvfast, "PIECE", 5)
    eng = SimEngine(setup_run(sc))
    res = eng.run()
    assert write_run(res, tmp_path, plot=False, iterations="segments") == [
        "summary.json", "requests.csv", "segments.csv"]
    firsts, ends = eng.log.segments.spans()
    want = io.StringIO()
    _reference(step, firsts, ends).to_csv(want, index=False)
    got = (tmp_path / "segments.csv").read_text()
    assert got == want.getvalue()
    recs = pd.read_csv(tmp_path / "segments.csv")
    assert np.array_equal(expand(recs)["iter"].to_numpy(), step["iter"].to_numpy())
    if mode != "beam4":
        assert recs["fast_forwarded"].sum() == len(firsts) > 0 and len(recs) < len(step)
    assert (recs.loc[recs["fast_forwarded"] == 0, "steps"] == 1).all()


def test_auto_picks_rows_up_to_the_threshold():
    m = iterrecords.AUTO_MAX_ROWS
    assert iteration_file("auto", m, True) == "iterations.csv"
    assert iteration_file("auto", m + 1, True) == "segments.csv"
    assert iteration_file("rows", 10 * m, True) == "iterations.csv"
    assert iteration_file("segments", 5, True) == "segments.csv"
    assert iteration_file("auto", 10 * m, False) == "iterations.csv"
    assert iteration_file("segments", 5, False) == "iterations.csv"


def _scenario_file(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: s\nmodel: opt-13b\ngpu: a100-40gb\nengine: {allocator: paged, block_size: 16}\n"
                 "workload: {dataset: sharegpt_like, rate_req_s: 4.0, num_requests: 30}\nseed: 0\n")
    return p


def test_cli_iterations_flag(tmp_path, capsys, monkeypatch):
    scen = _scenario_file(tmp_path)
    rc, out, _ = cli(capsys, "run", scen, "--outputs", "json,csv", "--out", tmp_path / "a")
    assert rc == 0 and sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "iterations.csv", "requests.csv", "summary.json"]
    monkeypatch.setattr(iterrecords, "AUTO_MAX_ROWS", 10)
    rc, out, _ = cli(capsys, "run", scen, "--outputs", "json,csv", "--out", tmp_path / "b")
    assert rc == 0 and (tmp_path / "b" / "segments.csv").exists() and "--iterations rows" in out
    assert not (tmp_path / "b" / "iterations.csv").exists()
    rc, out, _ = cli(capsys, "run", scen, "--outputs", "csv", "--iterations", "rows", "--out", tmp_path / "b")
    assert rc == 0 and sorted(p.name for p in (tmp_path / "b").iterdir()) == ["iterations.csv", "requests.csv"]
    a = pd.read_csv(tmp_path / "a" / "iterations.csv")
    assert (tmp_path / "a" / "iterations.csv").read_bytes() == (tmp_path / "b" / "iterations.csv").read_bytes()
    assert len(a) > 10


@pytest.mark.parametrize("bad", ["bogus", "", "row"])
def test_bad_iterations_value_is_one_line_exit_2(tmp_path, capsys, bad):
    rc, out, err = cli(capsys, "run", _scenario_file(tmp_path), "--iterations", bad, "--out", tmp_path / "x")
    assert rc == 2 and err.strip().count("\n") == 0 and "--iterations" in err
    assert not (tmp_path / "x").exists()


def test_rows_appended_whole_equal_steps_appended_one_by_one(monkeypatch):
    """``IterationLog.append_rows`` (a beam run's steps, each row whole) leaves the frame ``append_step`` row by
    row leaves, numbered on from the rows before, across packs."""
    monkeypatch.setattr(IterationLog, "PACK", 5)
    rng = np.random.default_rng(2)
    width = len(ITERATION_COLUMNS) - 4

    def state():
        return tuple(int(x) for x in rng.integers(0, 1000, width))

    steps = [(float(i), 0.5 + i, 0.0, state()) for i in range(13)]
    one, whole = IterationLog(), IterationLog()
    for s in steps:
        one.append_step(*s)
    for s in steps[:3]:
        whole.append_step(*s)
    whole.append_rows([(3 + i, t, dt, swap) + st for i, (t, dt, swap, st) in enumerate(steps[3:9])])
    whole.append_rows([(9 + i, t, dt, swap) + st for i, (t, dt, swap, st) in enumerate(steps[9:])])
    assert len(whole) == len(one) == 13
    pd.testing.assert_frame_equal(whole.frame(), one.frame(), check_exact=True)
