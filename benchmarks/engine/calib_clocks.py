"""The GPU's clocks and power through each stage of a calibration: which grids were timed on a power-capped card.

``gpu_h200.sh`` logs nvidia-smi every 250 ms beside ``kvsim calibrate`` (``calibrate.clocks.csv``) and the
calibration logs a line as each stage ends (``calibrate.log``: ``[calibrate HH:MM:SS] what``). The work a line
reports ran between the line before it and this one, so each line gets the samples of that interval: the SM
clock's median and 10th percentile, the power's median, and the share of samples within 5% of the card's power
limit. A grid timed while the card sits at its limit runs its compute-bound steps at lower clocks than serving
does (on the H200, ~1,600 vs ~1,970 MHz: benchmarks/engine/results_H200/calib_1817).

usage: python benchmarks/engine/calib_clocks.py CALIB_DIR [--limit-w 700] [--out FILE.md]
       (CALIB_DIR holds calibrate.log and calibrate.clocks.csv; the log's times are the device's local time,
       as nvidia-smi's; the date is taken from the clock samples)
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clock_steps import read_clocks  # noqa: E402

LINE = re.compile(r"^\[calibrate (\d\d):(\d\d):(\d\d)\] (.*)$")


def log_lines(path: Path, day_start_unix: float) -> list[tuple[float, str]]:
    """``(unix, text)`` of each calibrate.log line, the day taken from ``day_start_unix`` (a midnight rollover
    after it is followed)."""
    out, last = [], None
    for raw in path.read_text().splitlines():
        m = LINE.match(raw.strip())
        if not m:
            continue
        t = day_start_unix + int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3])
        if last is not None and t < last - 43200:
            day_start_unix += 86400
            t += 86400
        out.append((t, m[4]))
        last = t
    return out


def stage_table(calib_dir: str, limit_w: float = 700.0) -> pd.DataFrame:
    """One row per log line: the interval since the line before it and the clocks sampled in it."""
    d = Path(calib_dir)
    for name in ("calibrate.clocks.csv", "calibrate.log"):
        if not (d / name).is_file():
            raise SystemExit(f"error: {d / name}: not found (a calibration's folder holds calibrate.log and "
                             "calibrate.clocks.csv, as benchmarks/engine/gpu_h200.sh writes them)")
    clocks = read_clocks(str(d / "calibrate.clocks.csv"))
    first = float(clocks.unix.iloc[0])
    lines = log_lines(d / "calibrate.log", first - first % 86400)
    rows, prev, since = [], first, first
    unix = clocks.unix.to_numpy()
    for t, text in lines:
        until = t + 1.0                     # (the log truncates to the second: a line's second is its stage's)
        sel = clocks[(unix >= since) & (unix < until)]
        rows.append({"end": pd.to_datetime(t, unit="s").strftime("%H:%M:%S"), "seconds": round(t - prev, 1),
                     "samples": len(sel),
                     "sm_median_mhz": float(sel.sm_mhz.median()) if len(sel) else np.nan,
                     "sm_p10_mhz": float(sel.sm_mhz.quantile(0.1)) if len(sel) else np.nan,
                     "power_median_w": round(float(sel.power_w.median()), 1) if len(sel) else np.nan,
                     "at_limit": round(float((sel.power_w >= 0.95 * limit_w).mean()), 2) if len(sel) else np.nan,
                     "stage": text[:90]})
        prev, since = t, until
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("calib_dir")
    ap.add_argument("--limit-w", type=float, default=700.0, help="the card's power limit in W (H200: 700)")
    ap.add_argument("--out", default=None, help="write the table as Markdown here")
    a = ap.parse_args()
    df = stage_table(a.calib_dir, a.limit_w)
    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    body = "".join("| " + " | ".join(str(v) for v in r) + " |\n" for r in df.itertuples(index=False))
    text = (f"# Clocks through the calibration in {a.calib_dir}\n\nCommand: `python benchmarks/engine/calib_clocks.py "
            f"{a.calib_dir}`. Each row: the stage the log line reports, the interval since the line before it, "
            f"and nvidia-smi's samples in it (`at_limit`: share of samples within 5% of {a.limit_w:.0f} W).\n\n"
            + head + body)
    if a.out:
        Path(a.out).write_text(text)
        print(f"wrote {a.out}")
    else:
        print(text)


if __name__ == "__main__":
    main()
