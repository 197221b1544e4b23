"""Where an engine step's host time goes, per scenario: scheduling, input preparation, the launch-to-sync span
and the bookkeeping after it, step by step (GPU machine; CPU works with tiny models).

The engine records each step's ``cpu_s`` (scheduling + input preparation + bookkeeping after the step) and
``gpu_s`` (launch to sync). This wraps the scheduler's ``schedule`` / ``complete_step`` and the runner's
``prepare`` to split ``cpu_s``, for scenario files and for the serving fit's own workload at ``n`` rows
(``serving:N``, :func:`kvsim.calibrate.serving_fit.serving_scenario`, which needs ``--profile``), all in one
process in the order given, so a difference between the fit's runs and a scenario's can be told apart from
one between processes.

usage: python benchmarks/engine/host_split.py serving:17 scenarios/validation/v21_*.yaml serving:17 \
           --profile calibrate/profiles/H200/llama-3-8b.json --out DIR [--set runtime.max_wall_s=30]
"""
from __future__ import annotations

import argparse
import json
import pathlib
import time

import pandas as pd


def _timed(obj, name: str, sink: list[float]) -> None:
    fn = getattr(obj, name)

    def wrapper(*a, **k):
        t = time.perf_counter()
        out = fn(*a, **k)
        sink.append(time.perf_counter() - t)
        return out
    setattr(obj, name, wrapper)


def load(spec: str, profile: str | None, sets: list[str]):
    import kvsim
    from kvsim.calibrate import serving_fit as SF
    if spec.startswith("serving:"):       # the fit's own run: its scenario as the calibration builds it
        if profile is None:
            raise SystemExit("error: --profile: serving:N needs the profile whose serving fit it repeats")
        prof = json.loads(pathlib.Path(profile).read_text())
        import torch
        gpu = torch.cuda.is_available()
        return SF.serving_scenario(prof, 16, int(spec.split(":", 1)[1]), "cuda" if gpu else "cpu", cuda_graphs=gpu)
    return kvsim.load_scenario(spec, sets or None)


def split_run(sc) -> pd.DataFrame:
    """The run's iterations with ``schedule_s``, ``prepare_s``, ``complete_s`` beside ``cpu_s`` / ``gpu_s``."""
    from kvsim.engine.engine import RealEngine
    eng = RealEngine(sc)
    sched_t, prep_t, done_t = [], [], []
    _timed(eng.sched, "schedule", sched_t)
    _timed(eng.runner, "prepare", prep_t)
    _timed(eng.sched, "complete_step", done_t)
    res = eng.run()
    its = res.iterations.copy()
    k = len(its)
    its["reference_step_s"] = (res.info.get("reference_step") or {}).get("time_s")   # the card's speed, this run
    its["schedule_s"], its["prepare_s"], its["complete_s"] = sched_t[:k], prep_t[:k], done_t[:k]
    return its


def summary(its: pd.DataFrame, cols=("duration_s", "gpu_s", "cpu_s", "schedule_s", "prepare_s", "complete_s")
            ) -> pd.DataFrame:
    """Decode-only steps without copies by rows: the medians of ``cols`` in ms, rows of at least 20 steps."""
    d = its[(its.prefill_tokens == 0) & (its.decode_seqs > 0) & (its.cow_copies == 0)]
    out = d.groupby("decode_seqs")[list(cols)].median().mul(1e3)
    out["steps"] = d.groupby("decode_seqs").size()
    return out[out.steps >= 20].round(3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("specs", nargs="+", help="scenario files, or serving:N")
    ap.add_argument("--profile", default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--set", action="append", default=[], help="applied to scenario files only")
    a = ap.parse_args()
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for i, spec in enumerate(a.specs):
        sc = load(spec, a.profile, [] if spec.startswith("serving:") else a.set)
        its = split_run(sc)
        name = f"{i:02d}_{spec.replace(':', '').replace('/', '_').removesuffix('.yaml')[-40:]}"
        its.to_csv(out / f"{name}.csv", index=False)
        ref = its.reference_step_s.iloc[0] if len(its) else None
        print(f"## {name} ({len(its)} steps; reference step {ref * 1e3 if ref else float('nan'):.3f} ms; "
              "decode-only steps by rows, medians in ms)")
        print(summary(its).to_string())


if __name__ == "__main__":
    main()
