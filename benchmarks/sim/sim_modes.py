"""Simulator speed in every mode (issue #14's table): wall time and peak memory per run, each in its own process.

OPT-13B on one A100-40GB, roofline cost model, ShareGPT-like lengths, Poisson 1 req/s, seed 0; modes:
paged, Orca-Oracle, chunked prefill (512-token budget), prefix caching (128-token shared prefix), swap
preemption, parallel sampling n=4, beam width 4; and paged at 3 req/s, past the ~2 req/s capacity (the
regime ``kvsim plan``'s probes spend most time in: ~11,000 preemptions). Each (mode, size) runs in a fresh Python process so its
peak RSS is its own; `wall_s` is setup + simulation (imports excluded), `records_s` the summary and
record frames. Vidur is compared on one trace by ``vidur_pair.py``; ``speed_devbox.sh`` runs both and the README's table.

usage (one core, as the README quotes it):
    taskset -c 0 python benchmarks/sim/sim_modes.py [--sizes 10000[,100000,...]] [--modes paged,beam4]
        [--repeat 3] [--out benchmarks/sim/sim_modes_devbox]      # writes OUT.csv and OUT.md

``--repeat N`` runs each (mode, size) N times, each in a fresh process, and keeps the run with the median
wall time (a loaded box varies by tens of percent from run to run); one discarded warm-up run comes first
(``--warmup 0`` skips it): without it the table's first mode read ~15% slow on the dev box.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

# time the checkout this script sits in, not whichever kvsim is installed (an editable install of another tree
# would otherwise be timed: seen 2026-12-05); sim_modes_pair.py sets PYTHONPATH per checkout and runs no copy of this
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

MODES = {
    "paged": {},
    "orca_oracle": {"engine.allocator": "orca_oracle"},
    "chunked": {"engine.scheduler": "chunked", "engine.max_num_batched_tokens": 512},
    "prefix": {"engine.enable_prefix_caching": True, "workload.prefix_len": 128},
    "swap": {"engine.preemption_mode": "swap"},
    "n4": {"workload.n": 4},
    "beam4": {"workload.beam_width": 4},
    "paged_sat": {"workload.rate_req_s": 3.0},      # past capacity (~2 req/s): preemptions, as plan's probes see
}


def one(mode: str, n: int) -> dict:
    """Run one (mode, size) in this process; imports are done before the clock starts."""
    from kvsim.build import setup_run
    from kvsim.config import load_scenario
    from kvsim.sim import SimEngine
    base = {"name": f"speed-{mode}-{n}", "model": "opt-13b", "gpu": "a100-40gb",
            "engine": {"allocator": "paged", "block_size": 16},
            "workload": {"dataset": "sharegpt_like", "rate_req_s": 1.0, "num_requests": n}, "seed": 0}
    t0 = time.perf_counter()
    sc = load_scenario(base, [f"{k}={json.dumps(v)}" for k, v in MODES[mode].items()])
    eng = SimEngine(setup_run(sc))
    res = eng.run()
    t1 = time.perf_counter()
    s = res.summary
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024     # Linux: KiB
    return {"mode": mode, "requests": n, "wall_s": round(t1 - t0, 3), "s_per_1k": round((t1 - t0) / n * 1000, 3),
            "peak_rss_mib": round(rss_mib, 1), "iterations": int(s["num_iterations"]),
            "ff_share": round(eng.ff_steps / max(s["num_iterations"], 1), 4),
            "finished": int(s["requests_finished"]), "throughput_req_s": round(s["throughput_req_s"], 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--out", default=None, help="path prefix for .csv and .md")
    ap.add_argument("--repeat", type=int, default=1, help="runs per (mode, size); the median-wall run is kept")
    ap.add_argument("--warmup", type=int, default=1, choices=(0, 1),
                    help="run the first (mode, size) once, discarded, before measuring (default 1)")
    ap.add_argument("--one", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one[0], int(a.one[1]))))
        return
    rows = []
    if a.warmup:            # one discarded run first: the first processes of a table ran ~15% slow on the dev box
        subprocess.run([sys.executable, __file__, "--one", a.modes.split(",")[0], a.sizes.split(",")[0]],
                       capture_output=True, text=True)
    for n in (int(x) for x in a.sizes.split(",")):
        for mode in a.modes.split(","):
            if mode not in MODES:
                sys.exit(f"error: --modes: {mode!r} is not one of {', '.join(MODES)}")
            runs = []
            for _ in range(max(1, a.repeat)):
                p = subprocess.run([sys.executable, __file__, "--one", mode, str(n)], capture_output=True, text=True)
                if p.returncode:
                    runs = [{"mode": mode, "requests": n, "error": p.stderr.strip().splitlines()[-1][:200]}]
                    break
                runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
            runs.sort(key=lambda r: r.get("wall_s", 0.0))
            rows.append(runs[(len(runs) - 1) // 2])
            print(json.dumps(rows[-1]), flush=True)
    head = (f"{platform.processor() or platform.machine()}, python {platform.python_version()} "
            "(Vidur on the same trace: vidur_pair.py)")
    cols = ["mode", "requests", "wall_s", "s_per_1k", "peak_rss_mib", "iterations", "ff_share", "finished"]
    if a.repeat > 1:
        head += f"; median wall of {a.repeat} runs per row"
    md = [f"# Simulator speed by mode\n\n{head}. Command: `{' '.join(['python'] + sys.argv)}`\n",
          "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(str(r.get(c, r.get("error", ""))) for c in cols) + " |" for r in rows]
    print("\n".join(md))
    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        import csv
        with open(out.with_suffix(".csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols + ["throughput_req_s", "error"], extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        out.with_suffix(".md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
