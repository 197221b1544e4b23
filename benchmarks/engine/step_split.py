"""Where a serving run's decode steps spend the time the profile's grid does not price.

For every decode-only step of one or more engine runs (``iterations.csv``: ``gpu_s`` is input copies, the
forward pass and sampling up to the tokens on the host; ``cpu_s`` is scheduling and bookkeeping), the profile's
whole-step decode grid at the step's rows and KV tokens (equal contexts, no overhead) is subtracted from
``gpu_s``, and both remainders are fitted by least squares on the rows and the KV held:
``gpu_s − grid ≈ a + b·rows + c·(KV / 1,000)`` and ``cpu_s ≈ a + b·rows``. Compare the result with the
profile's ``step_overhead`` (printed), which the simulator adds per step.

    python benchmarks/engine/step_split.py --profile P.json RUN_DIR/engine [RUN_DIR/engine ...]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from kvsim.cost.calibrated import CalibratedCostModel, Profile
from kvsim.graph_sizes import graph_batch_sizes
from kvsim.validate_records import record_file


def decode_steps(run: Path) -> pd.DataFrame:
    d = pd.read_csv(record_file(run, "iterations.csv"))            # or iterations.csv.gz
    keep = (d.prefill_tokens == 0) & (d.decode_seqs > 0) & (d.swap_in_blocks == 0) & (d.swap_out_blocks == 0) \
        & (d.cow_copies == 0)
    return d[keep].assign(run=run.parent.name)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", required=True)
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("runs", nargs="+", type=Path, help="engine output folders (with iterations.csv)")
    a = ap.parse_args(argv)
    prof = json.loads(Path(a.profile).read_text())
    cost = CalibratedCostModel(Profile(prof), model_name=prof["model"], dtype=prof["dtype"],
                               block_size_tokens=a.block_size, decode_graph_batches=graph_batch_sizes(256))
    d = pd.concat([decode_steps(r) for r in a.runs], ignore_index=True)
    # the grid at the CUDA-graph batch the engine padded each step to, at its mean context (no overhead)
    d["grid"] = [float(cost.decode_grid_and_spread(int(n), np.array([float(m)]), np.array([0.0]))[0][0])
                 for n, m in zip(d.decode_seqs, d.mem_used)]
    rows, kv = d.decode_seqs.to_numpy(float), d.mem_used.to_numpy(float) / 1e3
    gx = np.linalg.lstsq(np.c_[np.ones(len(d)), rows, kv], (d.gpu_s - d.grid).to_numpy() * 1e3, rcond=None)[0]
    cx = np.linalg.lstsq(np.c_[np.ones(len(d)), rows], d.cpu_s.to_numpy() * 1e3, rcond=None)[0]
    print(f"{len(d)} decode steps from {d.run.nunique()} runs")
    print(f"gpu_s - grid ~ {gx[0]:.3f} ms + {gx[1]:.4f} ms x rows + {gx[2]:+.4f} ms x KV/1000")
    print(f"cpu_s        ~ {cx[0]:.3f} ms + {cx[1]:.4f} ms x rows")
    ov = prof.get("step_overhead", {})
    print("profile step_overhead:", ", ".join(f"{int(n)} rows {t * 1e3:.2f} ms"
                                             for n, t in zip(ov.get("num_seqs", []), ov.get("time_s", []))))
    bins = pd.cut(d.decode_seqs, [0, 1, 2, 4, 8, 16, 24, 32, 64, 256])
    t = d.assign(bin=bins, extra=(d.gpu_s - d.grid) * 1e3, host=d.cpu_s * 1e3, step=d.duration_s * 1e3,
                 grid_ms=d.grid * 1e3).groupby("bin", observed=True)
    print(t.agg(steps=("step", "size"), step_ms=("step", "median"), grid_ms=("grid_ms", "median"),
                gpu_minus_grid_ms=("extra", "median"), cpu_ms=("host", "median")).round(3).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
