"""Does running the calibration's engine runs through kept engine parts change what they measure?

The OPT-13B calibration of 2026-12-05 04:13 (the first with :class:`kvsim.engine.reuse.EngineParts`) measured
1-row and 4-row decode steps in its step-overhead runs ~0.3 ms slower than engine runs of the same card did
(9.16 ms against 8.80 at 1 row; benchmarks/engine/results_H200/calib_0413/README.md), and ~0.3 ms slower than the
calibration of 2026-12-04 20:27 on another H200, where each run built its own engine. This times the step-overhead
fit's runs (:func:`kvsim.calibrate.profile.fit_overhead`) through a profile's grids, alternating: fresh engines,
kept parts reserved as the calibration reserves them, fresh again, kept again; one line per (way, rows).
If kept parts make the steps slower, the fit's residuals differ between the two ways by about that much.

usage (GPU): python benchmarks/engine/overhead_parts_check.py --profile calibrate/profiles/H200/opt-13b.json \
    --out DIR [--rows 1,4,16,64] [--rounds 2]
(CPU smoke: --model tiny-opt --device cpu, with a synthetic profile of that model.)
Writes DIR/overhead_parts_check.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from kvsim.calibrate import measure as M
from kvsim.calibrate.engine_runs import calibration_parts, overhead_blocks
from kvsim.calibrate.profile import fit_overhead
from kvsim.engine.reuse import EngineParts

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_setup import add_common_args, profile_and_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    add_common_args(ap)
    ap.add_argument("--rows", default="1,4,16,64")
    a = ap.parse_args()
    prof, model, _, graphs = profile_and_model(a)
    rows = [int(x) for x in a.rows.split(",")]
    out = {"gpu": torch.cuda.get_device_name() if graphs else "cpu", "profile": a.profile, "rows": rows, "runs": []}
    for r in range(a.rounds):
        for way in ("fresh", "kept"):
            if way == "kept":
                parts = calibration_parts(prof, a.block_size, a.device) if graphs else EngineParts()
                parts.reserve(max(overhead_blocks(n, a.block_size) for n in rows))
            else:
                parts = None
            t0 = time.perf_counter()
            fit = fit_overhead(model, prof, a.block_size, device=a.device, batches=rows, cuda_graphs=graphs,
                               parts=parts)
            run = {"round": r, "way": way, "seconds": round(time.perf_counter() - t0, 1),
                   "residual_ms": [round(x * 1e3, 3) for x in fit["time_s"]],
                   "kept_blocks": parts.kept.cache.num_blocks if parts is not None and parts.kept else None}
            out["runs"].append(run)
            M._log(f"{way} (round {r + 1}): residuals {run['residual_ms']} ms at rows {rows}, {run['seconds']} s")
            del parts
            if graphs:
                torch.cuda.empty_cache()
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "overhead_parts_check.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
