"""Engine steps against the GPU's clocks: does a step run slower when the SM clock is lower?

On 2026-12-04 one H200 ran OPT-13B's small lone prefills (16-96 tokens) at per-run median GPU times from 9.88 to
10.86 ms, and the calibration's serving runs were the slowest (benchmarks/engine/results_H200/calib_2027). The
clocks were logged only during the calibration, so the cause stayed open. ``gpu_h200.sh`` now logs them during
every engine run (``clocks/<scenario>_<run>.csv``: nvidia-smi's timestamp, SM MHz, memory MHz, W, degrees C every
250 ms) and the engine records the wall clock at which its step clock starts (``engine.serve_start_unix``).
This script lines the two up: each step gets the SM clock and power of the last sample at or before its start,
and the steps of each kind (decode by rows, prefill-only by tokens) are compared across SM-clock bands.

usage: python benchmarks/engine/clock_steps.py RUN_DIR CLOCKS_CSV [--out FILE.md] [--utc-offset-h H]
       (RUN_DIR holds summary.json and iterations.csv; nvidia-smi writes the device's local time: --utc-offset-h
       is that time minus UTC, 0 on the lent machines)
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from kvsim.validate_records import record_file

BANDS = [0, 1500, 1800, 1900, 10_000]           # SM MHz: throttled, low, near max, at max (H200 max 1,980)


def read_clocks(path: str, utc_offset_h: float = 0.0) -> pd.DataFrame:
    """``unix, sm_mhz, mem_mhz, power_w, temp_c`` from an nvidia-smi CSV (no header, nounits)."""
    df = pd.read_csv(path, header=None, names=["ts", "sm_mhz", "mem_mhz", "power_w", "temp_c"], skipinitialspace=True)
    if df.empty:
        raise SystemExit(f"error: {path}: no clock samples")
    stamps = pd.to_datetime(df.ts, format="%Y/%m/%d %H:%M:%S.%f", errors="coerce")
    if stamps.isna().any():
        raise SystemExit(f"error: {path}: timestamps not in nvidia-smi's YYYY/MM/DD HH:MM:SS.mmm form")
    epoch = datetime.datetime(1970, 1, 1)
    unix = (stamps - epoch).dt.total_seconds() - utc_offset_h * 3600.0
    return pd.DataFrame({"unix": unix, "sm_mhz": df.sm_mhz.astype(float), "mem_mhz": df.mem_mhz.astype(float),
                         "power_w": df.power_w.astype(float), "temp_c": df.temp_c.astype(float)}).sort_values("unix")


def steps_with_clocks(run_dir: str, clocks: pd.DataFrame) -> pd.DataFrame:
    """The run's iterations, each with the clocks of the last sample at or before its start (NaN before the first)."""
    run = Path(run_dir)
    doc = json.loads((run / "summary.json").read_text())
    t0 = (doc.get("engine") or {}).get("serve_start_unix")
    if t0 is None:
        raise SystemExit(f"error: {run / 'summary.json'}: no engine.serve_start_unix (a run from before it was "
                         "recorded cannot be lined up with a clock log)")
    its = pd.read_csv(record_file(run, "iterations.csv"))          # or iterations.csv.gz
    its["unix"] = float(t0) + its.start_s
    j = np.searchsorted(clocks.unix.to_numpy(), its.unix.to_numpy(), side="right") - 1
    ok = j >= 0
    for col in ("sm_mhz", "mem_mhz", "power_w", "temp_c"):
        vals = np.full(len(its), np.nan)
        vals[ok] = clocks[col].to_numpy()[j[ok]]
        its[col] = vals
    return its


def kind_of(its: pd.DataFrame) -> pd.Series:
    """``decode 1-8 / 9-32 / 33+ rows``, ``prefill <=128 / <=512 / >512 tokens``, ``mixed``, or ``other``."""
    dec = its.decode_seqs
    pre = its.prefill_tokens
    kinds = np.select(
        [(pre == 0) & (dec > 0) & (dec <= 8), (pre == 0) & (dec > 8) & (dec <= 32), (pre == 0) & (dec > 32),
         (dec == 0) & (pre > 0) & (pre <= 128), (dec == 0) & (pre > 128) & (pre <= 512), (dec == 0) & (pre > 512),
         (dec > 0) & (pre > 0)],
        ["decode 1-8 rows", "decode 9-32 rows", "decode 33+ rows", "prefill <=128 tokens", "prefill 129-512 tokens",
         "prefill >512 tokens", "mixed"], default="other")
    return pd.Series(kinds, index=its.index)


def table(its: pd.DataFrame) -> pd.DataFrame:
    """Median GPU ms and steps per (kind, SM band)."""
    its = its.assign(kind=kind_of(its), band=pd.cut(its.sm_mhz, BANDS, right=False))
    g = its.dropna(subset=["sm_mhz"]).groupby(["kind", "band"], observed=True)
    return g.agg(steps=("gpu_s", "size"), gpu_ms=("gpu_s", lambda s: 1e3 * s.median()),
                 power_w=("power_w", "median")).reset_index()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("clocks_csv")
    ap.add_argument("--out")
    ap.add_argument("--utc-offset-h", type=float, default=0.0)
    a = ap.parse_args(argv)
    its = steps_with_clocks(a.run_dir, read_clocks(a.clocks_csv, a.utc_offset_h))
    covered = its.sm_mhz.notna().mean()
    t = table(its)
    lines = [f"# Steps against SM clocks: {a.run_dir}", "",
             f"{len(its)} steps, {covered:.0%} with a clock sample at or before their start; SM clock median "
             f"{its.sm_mhz.median():.0f} MHz (min {its.sm_mhz.min():.0f}).", "",
             "| step kind | SM band (MHz) | steps | GPU ms (median) | power W (median) |", "|---|---|---|---|---|"]
    lines += [f"| {r.kind} | {r.band} | {r.steps} | {r.gpu_ms:.2f} | {r.power_w:.0f} |" for r in t.itertuples()]
    text = "\n".join(lines) + "\n"
    if a.out:
        Path(a.out).write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
