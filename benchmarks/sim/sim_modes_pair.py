"""Before/after speed of the simulator modes, runs interleaved so both see the same load on a shared box.

Each (mode, checkout) run is a fresh process pinned to CPU 0 (as ``sim_modes.py``); the two checkouts
alternate ``--repeat`` times per mode and the medians of wall and CPU time (``sim_modes.one``: set-up,
simulation and summary, imports excluded) are printed, one JSON line per mode.

usage:
    git archive <before-commit> | tar -x -C /tmp/before
    python benchmarks/sim/sim_modes_pair.py --before /tmp/before [--modes paged,n4] [--repeat 3] [--size 10000]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

_CODE = ("import sys, time, json; sys.path.insert(0, 'benchmarks/sim'); import sim_modes; "
         "from kvsim.build import setup_run; from kvsim.config import load_scenario; from kvsim.sim import SimEngine; "
         "import kvsim.latency; c = time.process_time(); r = sim_modes.one(sys.argv[1], int(sys.argv[2])); "
         "r['cpu_s'] = round(time.process_time() - c, 3); print(json.dumps(r))")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="a checkout of the commit to compare with")
    ap.add_argument("--modes", default="paged,orca_oracle,chunked,prefix,swap,n4")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--size", default="10000")
    a = ap.parse_args()
    roots = {"before": str(Path(a.before).resolve()), "after": str(Path(__file__).resolve().parents[2])}
    for mode in a.modes.split(","):
        runs: dict[str, list[dict]] = {k: [] for k in roots}
        for _ in range(a.repeat):
            for k, root in roots.items():
                p = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", _CODE, mode, a.size], cwd=root,
                                   capture_output=True, text=True, env={"PYTHONPATH": root, "PATH": "/usr/bin:/bin"})
                if p.returncode:
                    sys.exit(f"{k} {mode}: {p.stderr.strip().splitlines()[-1]}")
                runs[k].append(json.loads(p.stdout.strip().splitlines()[-1]))
        row = {"mode": mode}
        for k, rs in runs.items():
            row[f"{k}_wall_s"] = statistics.median(r["wall_s"] for r in rs)
            row[f"{k}_cpu_s"] = statistics.median(r["cpu_s"] for r in rs)
        row["same_iterations"] = runs["before"][0]["iterations"] == runs["after"][0]["iterations"]
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
