"""Simulator at scale (issue #14): whole ``kvsim run`` processes, outputs written, wall time and peak RSS.

OPT-13B on one A100-40GB, roofline cost model, ShareGPT-like lengths, Poisson 1 req/s, paged, block 16,
seed 0 (the setup of ``sim_speed.py``). Each size runs as its own ``python -m kvsim.cli run`` process
writing ``--outputs`` (default json,csv: summary.json, requests.csv and, per ``--iterations`` (default auto),
iterations.csv up to 1,000,000 iterations or segments.csv above) into a temporary folder; ``wall_s`` is the whole process (imports, simulation, outputs), ``sim_s`` what ``kvsim run``
reports for the simulation, ``peak_rss_mib`` the process's maximum resident set (``wait4``'s rusage,
what ``/usr/bin/time -v`` reports).

usage (one core):
    python benchmarks/sim/sim_scale.py [--sizes 10000,100000,1000000] [--cpu 0] [--outputs json,csv] [--iterations auto|rows|segments]
        [--set engine.preemption_mode=swap ...] [--csv out.csv]
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCENARIO = """name: scale
model: opt-13b
gpu: a100-40gb
engine: {allocator: paged, block_size: 16}
workload: {dataset: sharegpt_like, rate_req_s: 1.0, num_requests: 1000}
seed: 0
"""


def one(n: int, cpu: int | None, outputs: str, sets: list[str], tmp: Path, iterations: str = "auto") -> dict:
    scen = tmp / "scale.yaml"
    scen.write_text(SCENARIO)
    cmd = ([] if cpu is None else ["taskset", "-c", str(cpu)]) + [
        sys.executable, "-m", "kvsim.cli", "run", str(scen), "--set", f"workload.num_requests={n}", *sum(
            (["--set", s] for s in sets), []), "--outputs", outputs, "--iterations", iterations,
        "--out", str(tmp / f"out{n}")]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"n={n}: kvsim run failed:\n{out}")
    m = re.search(r"in ([0-9.]+) s wall \((\d+) of (\d+) iterations", out)
    files = sum(f.stat().st_size for f in (tmp / f"out{n}").iterdir())
    return {"requests": n, "wall_s": round(wall, 2), "sim_s": float(m.group(1)) if m else None,
            "peak_rss_mib": round(ru.ru_maxrss / 1024, 1), "iterations": int(m.group(3)) if m else None,
            "output_mib": round(files / 2**20, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--cpu", type=int, default=0, help="pin to this core (-1: no pinning)")
    ap.add_argument("--outputs", default="json,csv")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--iterations", default="auto", help="kvsim run --iterations: auto, rows or segments")
    ap.add_argument("--csv")
    a = ap.parse_args()
    cols = ("requests", "wall_s", "sim_s", "peak_rss_mib", "iterations", "output_mib")
    print(" ".join(f"{c:>12}" for c in cols))
    rows = []
    with tempfile.TemporaryDirectory(prefix="kvsim-scale-") as d:
        for n in (int(s) for s in a.sizes.split(",")):
            r = one(n, None if a.cpu < 0 else a.cpu, a.outputs, a.set, Path(d), a.iterations)
            rows.append(r)
            print(" ".join(f"{r[c]!s:>12}" for c in cols), flush=True)
    if a.csv:
        with open(a.csv, "w") as f:
            f.write(",".join(cols) + "\n")
            for r in rows:
                f.write(",".join(str(r[c]) for c in cols) + "\n")


if __name__ == "__main__":
    main()
