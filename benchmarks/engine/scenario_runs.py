"""A validation set's engine runs in one process: ``kvsim engine`` of each scenario, the model loaded once.

Each ``kvsim engine`` process pays for its interpreter, imports and the model's load before it serves, and for its
plots after: on the H100 of 2026-12-07 (``benchmarks/engine/results_H100/async_opt_1207/stages.txt``, git history
at commit bfecda7) OPT-13B runs took 46-74 s from stage to stage for 20-40 s of serving. Here the model is built
once per (model, dtype, weights, device) and, for dummy weights, re-drawn from each scenario's seed
(:meth:`kvsim.engine.models.base.CausalLM.init_dummy` fills every parameter from the seed alone), so each run serves
the weights a fresh ``kvsim engine`` builds; each run still warms up and captures its own CUDA graphs (``RealEngine``,
no kept parts), as ``kvsim engine`` does.

Runs land where ``kvsim validate --replay`` reads them: ``OUT/<name>/<name>/engine/`` (``engine_r<R>/`` for run R
> 1), summary.json, requests.csv and iterations.csv (no plots: the validation keeps none). A folder that already
holds requests.csv is kept (a call cut short resumes); no run starts with less than ``--min-left`` of
``--time-limit`` seconds left. Each run's start and end (wall clock) go to ``OUT/scenario_runs.csv``, to line the
runs up with GPU clocks sampled over the whole call, with its position in the process and its decode steps' median
host time: on an H100 (2026-12-07, results_H100/async_1207, git history at commit 98cc84c) v26's beam steps took
0.42 ms of host work as the 11th run of a process and 0.28 ms as the 4th; on another (results_H100/async_1207b)
0.241 ms as the 10th, 0.250 ms as the 2nd and 0.236 ms alone in its own process.

usage (GPU; repository root): python benchmarks/engine/scenario_runs.py S1.yaml S2.yaml ... --out W/validation \
    [--first 1] [--repeats 1] [--set KEY=VALUE ...] [--time-limit 560] [--min-left 90]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def run_dir(out: Path, name: str, r: int) -> Path:
    """Where run ``r`` of scenario ``name`` lands (``kvsim validate``'s engine folders and ``--repeats`` layout)."""
    return out / name / name / ("engine" if r == 1 else f"engine_r{r}")


def model_key(sc) -> tuple:
    """What a built model depends on besides its dummy weights' seed."""
    return sc.model, sc.dtype, str(sc.runtime.weights), str(sc.runtime.device)


def serve_each(jobs, time_limit: float | None = None, min_left: float = 0.0, log=print, done=None) -> list[Path]:
    """Serve each job, ``(scenario, folder, label)`` (the scenario loaded, the folder its records'), one engine at a
    time in this process: a folder that already holds requests.csv is kept, no job starts with under ``min_left``
    of ``time_limit`` seconds left, and the model is reused where :func:`model_key` matches (dummy weights re-drawn
    from the job's seed). ``done(sc, folder, res, eng, start, end)`` after each run is written (wall-clock start
    and end). Returns the folders written. ``benchmarks/engine/blocksize_runs.py`` runs its jobs here too."""
    from kvsim.engine.engine import RealEngine
    from kvsim.engine.preflight import check_engine_fits
    from kvsim.output import write_engine_run
    from kvsim.validate import _release_device
    from kvsim.validate_records import record_file
    t0, model, key, written = time.perf_counter(), None, None, []
    for sc, d, label in jobs:
        if record_file(d, "requests.csv").exists():
            continue
        if time_limit is not None and time_limit - (time.perf_counter() - t0) < min_left:
            log(f"time limit: stopping before {label}; run again to resume")
            break
        check_engine_fits(sc)
        if model is not None and model_key(sc) != key:
            model = None                       # another model: built afresh
            _release_device()
        if model is not None and sc.runtime.weights == "dummy":
            model.init_dummy(sc.seed)          # the weights a fresh build draws from this seed
        start = time.time()
        eng = RealEngine(sc, model=model)
        res = eng.run()
        model, key = eng.model, model_key(sc)
        write_engine_run(res, d, kinds=("json", "csv"))
        if done is not None:
            done(sc, d, res, eng, start, time.time())
        written.append(d)
        del eng, res
        _release_device()
    return written


def run_all(scenarios: list[str], out: Path, sets: list[str], first: int = 1, last: int = 1,
            time_limit: float | None = None, min_left: float = 0.0, log=print) -> list[Path]:
    """Runs ``first`` to ``last`` of each scenario (:func:`serve_each`), each run's wall times added to
    ``OUT/scenario_runs.csv``; returns the folders written."""
    import kvsim
    times = out / "scenario_runs.csv"
    out.mkdir(parents=True, exist_ok=True)
    if not times.exists():
        times.write_text("scenario,run,start_unix,end_unix,load_s,serve_s,position,decode_host_ms\n")
    served = []        # this process's runs so far: a run's position in it (does a long-lived process slow the host?)

    def jobs():
        for path in scenarios:
            for r in range(first, max(first, last) + 1):
                sc = kvsim.load_scenario(path, list(sets))
                yield sc, run_dir(out, sc.name, r), f"{sc.name} run {r}"

    def done(sc, d, res, eng, start, end):
        r = 1 if d.name == "engine" else int(d.name.removeprefix("engine_r"))
        served.append(d)
        its = res.iterations
        host = its.host_thread_s[(its.prefill_tokens == 0) & (its.decode_seqs > 0)] \
            if {"host_thread_s", "prefill_tokens", "decode_seqs"} <= set(its.columns) else []
        host_ms = f"{1e3 * float(host.median()):.4f}" if len(host) else ""
        with times.open("a") as f:
            f.write(f"{sc.name},{r},{start:.3f},{end:.3f},{eng.load_s:.2f},{end - start:.2f},{len(served)},{host_ms}\n")
        s = res.summary
        log(f"{sc.name} run {r}: {s.get('requests_finished')}/{s.get('requests_total')} finished, "
            f"throughput {s.get('throughput_req_s', float('nan')):.3f} req/s, normalized latency "
            f"{s.get('normalized_latency_s', float('nan')):.4f} s/token, {end - start:.1f} s")
    return serve_each(jobs(), time_limit, min_left, log, done)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenarios", nargs="+")
    ap.add_argument("--out", required=True, help="the validation folder (runs in OUT/<name>/<name>/engine*)")
    ap.add_argument("--first", type=int, default=1, help="the first run's number (2: engine_r2/)")
    ap.add_argument("--repeats", type=int, default=1, help="the last run's number")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--time-limit", type=float, default=None)
    ap.add_argument("--min-left", type=float, default=0.0)
    a = ap.parse_args(argv)
    run_all(a.scenarios, Path(a.out), a.set, a.first, a.repeats, a.time_limit, a.min_left)
    return 0


if __name__ == "__main__":
    sys.exit(main())
