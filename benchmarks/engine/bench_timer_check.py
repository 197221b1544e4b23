"""The calibration's timer before and after 2026-12-05, on the same steps in one process: does the shorter
``kvsim.calibrate.measure._bench`` (two untimed calls, then the timed ones) give the medians of the older one
(``triton.testing.do_bench`` with warm-up 3x and repetitions 12x a first timed call)?

Times a small step grid (decode steps, unequal-context decode steps, mixed steps, through the engine's CUDA
graphs; :func:`kvsim.calibrate.steps.measure_steps`) with each timer in turn, twice (old, new, old, new),
and prints each point's ratio new / old beside old / old (the run-to-run noise), plus each pass's seconds.
usage (GPU): python benchmarks/engine/bench_timer_check.py --model opt-13b --out DIR
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from kvsim.calibrate import measure as M
from kvsim.calibrate import steps as S
from kvsim.catalogue import get_model
from kvsim.engine.models import build_model

GRID = {"batch": [1, 8, 32, 128], "ctx": [256, 1024, 2048], "spread": [1024], "prefill": [512],
        "mix": ([8, 64], [1024], [64, 256, 1024]), "prefill_batch": None, "prefill_cached": None}


def old_bench(fn, warmup=10, rep=40) -> float:
    """The timer of the calibrations up to 2026-12-04 (commit e764189's kvsim.calibrate.measure._bench)."""
    from triton.testing import do_bench
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    once_ms = (time.perf_counter() - t0) * 1e3
    return float(do_bench(fn, warmup=max(warmup, 3 * once_ms), rep=max(rep, M.MIN_SAMPLES * once_ms),
                          return_mode="median")) / 1e3


def points(model, dev) -> tuple[list[float], float]:
    t0 = time.perf_counter()
    dec, spread, _pre, mixed, _ref, _pb, _pc = S.measure_steps(model, 16, dev, grid=GRID)
    vals = [x for row in dec["time_s"] for x in row] + [x for row in spread["time_s"] for x in row]
    vals += [x for plane in mixed["time_s"] for row in plane for x in row]
    return vals, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="opt-13b")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    dev = torch.device("cuda")
    model = build_model(get_model(a.model), dtype=torch.float16, device=dev, weights="dummy")
    new = M._bench
    runs = {}
    for label, timer in (("old1", old_bench), ("new1", new), ("old2", old_bench), ("new2", new)):
        M._bench = timer
        runs[label] = points(model, dev)
        print(f"{label}: {len(runs[label][0])} points in {runs[label][1]:.1f} s", flush=True)
    M._bench = new
    old1, new1, old2, new2 = (np.array(runs[k][0]) for k in ("old1", "new1", "old2", "new2"))
    noise = old2 / old1 - 1
    diff = (new1 + new2) / (old1 + old2) - 1
    print(f"old2 / old1 - 1: median {np.median(noise):+.2%}, max |.| {np.abs(noise).max():.2%}")
    print(f"new / old - 1:   median {np.median(diff):+.2%}, max |.| {np.abs(diff).max():.2%}")
    print(f"seconds: old {runs['old1'][1] + runs['old2'][1]:.1f}, new {runs['new1'][1] + runs['new2'][1]:.1f}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_timer_check.json").write_text(json.dumps(
        {"gpu": torch.cuda.get_device_name(), "model": a.model, "grid": {k: v for k, v in GRID.items()},
         "runs": {k: {"time_s": v[0], "seconds": v[1]} for k, v in runs.items()}}, indent=1))


if __name__ == "__main__":
    main()
