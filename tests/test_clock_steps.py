"""benchmarks/engine/clock_steps.py lines an engine run's steps up with an nvidia-smi clock log."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "engine"))
import clock_steps  # noqa: E402

sys.path.pop(0)
T0 = 1_796_000_000.0            # 2026-11-30 02:13:20 UTC


def _run(tmp_path, with_start=True):
    run = tmp_path / "run"
    run.mkdir()
    # 8 small prefills then 8 decode steps of 16 rows, one every 0.1 s; the last four of each kind run slower
    rows = []
    for i in range(16):
        pre = i < 8
        slow = i % 8 >= 4
        rows.append({"start_s": 0.1 * i, "duration_s": 0.011 if slow else 0.010, "gpu_s": 0.0105 if slow else 0.0095,
                     "prefill_tokens": 32 if pre else 0, "decode_seqs": 0 if pre else 16})
    pd.DataFrame(rows).to_csv(run / "iterations.csv", index=False)
    engine = {"serve_start_unix": T0} if with_start else {}
    (run / "summary.json").write_text(json.dumps({"engine": engine, "summary": {}}))
    return run


def _clocks(tmp_path):
    # samples every 0.05 s from 0.05 s before the run; the clock drops to 1,410 MHz at 0.4 s and recovers at 0.8 s,
    # drops again at 1.2 s
    lines = []
    for k in range(-1, 34):
        t = T0 + 0.05 * k
        low = 0.4 <= 0.05 * k < 0.8 or 0.05 * k >= 1.2
        stamp = pd.Timestamp(t, unit="s").strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]
        lines.append(f"{stamp}, {1410 if low else 1980}, 3201, {690 if low else 450}, 60")
    p = tmp_path / "clocks.csv"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_each_step_gets_the_clock_at_its_start_and_slow_steps_sit_in_the_low_band(tmp_path):
    its = clock_steps.steps_with_clocks(str(_run(tmp_path)), clock_steps.read_clocks(str(_clocks(tmp_path))))
    assert its.sm_mhz.notna().all()
    assert list(its.sm_mhz[:8]) == [1980] * 4 + [1410] * 4
    t = clock_steps.table(its).set_index(["kind", "band"]).gpu_ms
    pre = t.xs("prefill <=128 tokens")
    assert len(pre) == 2 and pre.iloc[0] == pytest.approx(10.5) and pre.iloc[-1] == pytest.approx(9.5)
    md = tmp_path / "out.md"
    assert clock_steps.main([str(tmp_path / "run"), str(tmp_path / "clocks.csv"), "--out", str(md)]) == 0
    assert "| prefill <=128 tokens | [0, 1500) | 4 | 10.50 |" in md.read_text()


def test_a_run_without_its_start_time_or_a_bad_log_is_a_one_line_error(tmp_path):
    clocks = clock_steps.read_clocks(str(_clocks(tmp_path)))
    with pytest.raises(SystemExit, match="serve_start_unix"):
        clock_steps.steps_with_clocks(str(_run(tmp_path, with_start=False)), clocks)
    bad = tmp_path / "bad.csv"
    bad.write_text("12:00, 1980, 3201, 400, 50\n")
    with pytest.raises(SystemExit, match="nvidia-smi"):
        clock_steps.read_clocks(str(bad))
