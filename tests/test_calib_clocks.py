"""benchmarks/engine/calib_clocks.py sets a calibration's logged stages beside the clocks sampled during each."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "engine"))
import calib_clocks  # noqa: E402

sys.path.pop(0)


def test_each_stage_gets_the_samples_since_the_line_before(tmp_path):
    """Samples every 0.25 s from 23:59:58: a grid stage at the power limit, then a serving stage; the log crosses
    midnight, so the second stage's line is on the next day."""
    lines, t = [], 0.0
    for i in range(48):              # 12 s: 23:59:58.000 .. 00:00:09.750
        sec = 58 + i * 0.25
        day, hh, mm = (4, 23, 59) if sec < 60 else (5, 0, 0)
        ss = sec if sec < 60 else sec - 60
        grid = sec < 65
        lines.append(f"2026/12/0{day} {hh:02d}:{mm:02d}:{ss:06.3f}, {1600 if grid else 1980}, 3201, "
                     f"{695.0 if grid else 480.0}, 60")
    (tmp_path / "calibrate.clocks.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "calibrate.log").write_text("[calibrate 23:59:58] built the model\n"
                                            "[calibrate 00:00:04] decode steps: 2 x 2 points in 6.0 s\n"
                                            "junk line\n"
                                            "[calibrate 00:00:09] serving n=4 (pass 1): 10 decode steps\n")
    df = calib_clocks.stage_table(str(tmp_path), limit_w=700.0)
    assert list(df.stage) == ["built the model", "decode steps: 2 x 2 points in 6.0 s", "serving n=4 (pass 1): 10 decode steps"]
    grid, serving = df.iloc[1], df.iloc[2]
    assert grid.seconds == 6.0 and serving.seconds == 5.0
    assert grid.sm_median_mhz == 1600 and grid.at_limit == 1.0 and grid.power_median_w == 695.0
    assert serving.sm_median_mhz == 1980 and serving.at_limit == 0.0
    assert grid.samples + serving.samples == pytest.approx(44, abs=5)


def test_a_folder_without_the_log_or_clocks_is_one_line(tmp_path):
    with pytest.raises(SystemExit) as e:
        calib_clocks.stage_table(str(tmp_path))
    assert str(e.value).startswith("error: ") and "calibrate.clocks.csv" in str(e.value) and "\n" not in str(e.value)
