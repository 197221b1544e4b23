"""Time the README's commands and write the table the README's timings are read from.

    PYTHONPATH=. python benchmarks/readme_timings.py                 # all (about 8 minutes on 2 cores)
    PYTHONPATH=. python benchmarks/readme_timings.py --only run,sweep  # some of them

Each command runs as the README shows it (``python -m kvsim.cli`` for ``kvsim``, outputs under a
temporary directory) and is timed in wall seconds and in CPU seconds of the child processes (user +
system, every worker included): wall depends on what else the box is doing, CPU seconds much less.
Writes ``benchmarks/readme_timings.md`` beside this file, with the README's claim next to each.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# key, README claim, kvsim arguments (OUT is replaced by a temporary directory)
COMMANDS = [
    ("run", "0.18 s wall printed (quickstart)", ["run", "scenarios/examples/quickstart.yaml", "--out", "OUT"]),
    ("sweep", "7 s on 2 cores", ["sweep", "scenarios/examples/v0_vs_v1.yaml", "--grid", "engine.policy=v0,v1",
                                 "--grid", "workload.n=1,2", "--grid", "workload.rate_req_s=1,1.5", "--jobs", "2",
                                 "--quiet", "--out", "OUT"]),
    ("report", "~25 s on 2 cores", ["report", "block-size", "scenarios/paper/fig18b_block_size_alpaca.yaml",
                                    "--slo", "normalized_latency_s=0.1", "--block-sizes", "8,16,32,64,128",
                                    "--quiet", "--out", "OUT"]),
    ("plan", "~1 min on 2 cores", ["plan", "scenarios/examples/quickstart.yaml", "--slo", "ttft_p99_s=10",
                                     "--seeds", "10", "--max-requests", "2400", "--jobs", "2", "--quiet",
                                     "--out", "OUT"]),
    ("paper-quick", "(--quick: 400 requests, fewer rates)", ["paper", "--quick", "--jobs", "2", "--quiet",
                                                              "--out", "OUT"]),
]


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def time_one(args: list[str]) -> tuple[float, float, int, str]:
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-m", "kvsim.cli"] + [str(Path(tmp) / "out") if a == "OUT" else a for a in args]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        c0, t0 = cpu_children(), time.perf_counter()
        p = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
        wall, cpu = time.perf_counter() - t0, cpu_children() - c0
    last = (p.stdout.strip().splitlines() or p.stderr.strip().splitlines() or [""])[-1]
    return wall, cpu, p.returncode, last


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help="comma-separated keys: " + ",".join(k for k, _, _ in COMMANDS))
    ap.add_argument("--out", default=str(Path(__file__).with_name("readme_timings.md")))
    a = ap.parse_args()
    keys = a.only.split(",") if a.only else [k for k, _, _ in COMMANDS]
    rows = []
    for key, claim, args in COMMANDS:
        if key not in keys:
            continue
        wall, cpu, rc, last = time_one(args)
        print(f"{key}: {wall:.1f} s wall, {cpu:.1f} CPU-s, rc {rc}", flush=True)
        rows.append(f"| {key} | `kvsim {' '.join(args).replace('OUT', 'DIR')}` | {claim} | {wall:.1f} | {cpu:.1f} "
                    f"| {rc} |")
    text = (f"# README timings ({time.strftime('%Y-%m-%d', time.gmtime())}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()})\n\nWall seconds depend on the box's other load; CPU-s are the "
            "children's user + system time (all workers).\n\n| key | command | README said | wall s | CPU-s | rc |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n(script: benchmarks/readme_timings.py)\n")
    Path(a.out).write_text(text, encoding="utf-8")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
