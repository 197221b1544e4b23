"""Lone prefills of a closed loop's joiners against prompts arriving into a busy engine: are the joiners slower?

The serving fit prices a lone prefill from its closed-loop runs' joiners (a request enters as another finishes:
:mod:`kvsim.calibrate.serving_fit`). On the H200, those joiners' prefills of <= 128 tokens took 0.6-1.0 ms more GPU
time above the grid than the lone prefills of the validation runs on the same card (Llama-3-8B, calib_1817; OPT-13B,
calib_2027), and the same calibrations' busy-engine prefill runs measured 0.8-1.0 ms under the price that fit sets
(``calibrate.log``: "prefill overhead (busy) T=16: measured step 5.76 ms, priced 6.66 ms"). This runs, in one
process on one card, alternating: the serving fit's closed loop at ``--rows`` requests in flight (joiners), the
same lengths arriving as a Poisson stream at 0.8x that loop's measured rate (arrivals into a busy engine), and the
closed loop again through the calibration's kept engine parts. Per run: the lone prefills of <= ``--max-tokens``
prompt tokens, their median step and GPU time beyond the profile's prefill grid at their token count, and their
median host time. If the joiners stand out in one process, the cause is the closed loop, not the card or the run.

usage (GPU): python benchmarks/engine/lone_prefill_probe.py --profile calibrate/profiles/H200/llama-3-8b.json \
    --out DIR [--rows 16] [--rounds 2] [--max-tokens 128]
(CPU smoke: --model tiny-opt --device cpu, with a synthetic profile of that model.)
Writes DIR/lone_prefill_probe.json and prints one line per run.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import kvsim
from kvsim.calibrate import measure as M
from kvsim.calibrate.engine_runs import calibration_parts
from kvsim.calibrate.serving_fit import serving_scenario_doc
from kvsim.calibrate.serving_runs import lone_prefills
from kvsim.engine.engine import RealEngine
from kvsim.engine.reuse import EngineParts

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_setup import add_common_args, profile_and_model  # noqa: E402


def arrival_scenario(doc: dict, rate: float):
    """The serving-fit scenario ``doc`` with its requests arriving as a Poisson stream at ``rate`` instead."""
    w = {k: v for k, v in doc["workload"].items() if k != "max_concurrency"}
    return kvsim.load_scenario({**doc, "name": "lone-prefill-arrivals",
                                "workload": {**w, "arrival": "poisson", "rate_req_s": rate}})


def summarise(res, prof: dict, bs: int, max_tokens: int) -> dict:
    """The run's lone prefills of at most ``max_tokens`` tokens against the profile's prefill grid."""
    grid = prof["prefill_step"][str(bs)]
    xs, ys = np.asarray(grid["tokens"], float), np.asarray(grid["time_s"], float)
    lp = lone_prefills(res.iterations)
    lp = lp[lp.prefill_tokens <= max_tokens]
    at = np.interp(lp.prefill_tokens.to_numpy(float), xs, ys)
    med = (lambda v: round(float(np.median(v)) * 1e3, 3) if len(v) else None)
    return {"lone_prefills": int(len(lp)),
            "tokens_median": float(np.median(lp.prefill_tokens)) if len(lp) else None,
            "step_over_grid_ms": med(lp.duration_s.to_numpy() - at),
            "gpu_over_grid_ms": med(lp.gpu_s.to_numpy() - at) if "gpu_s" in lp else None,
            "host_ms": med(lp.cpu_s.to_numpy()) if "cpu_s" in lp else None,
            "throughput_req_s": round(float(res.summary["throughput_req_s"]), 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    add_common_args(ap)
    ap.add_argument("--rows", type=int, default=16, help="requests in flight in the closed loop (default 16)")
    ap.add_argument("--max-tokens", type=int, default=128)
    a = ap.parse_args()
    prof, model, _, graphs = profile_and_model(a)
    doc = serving_scenario_doc(prof, a.block_size, a.rows, a.device, cuda_graphs=graphs)
    closed = kvsim.load_scenario(doc)
    out = {"gpu": torch.cuda.get_device_name() if graphs else "cpu", "profile": a.profile, "rows": a.rows,
           "max_tokens": a.max_tokens, "runs": []}
    for r in range(a.rounds):
        runs = []
        t0 = time.perf_counter()
        joined = RealEngine(closed, model=model).run()
        runs.append(("joiners", joined, time.perf_counter() - t0))
        rate = 0.8 * float(joined.summary["throughput_req_s"])      # near the loop's load, below saturation
        t0 = time.perf_counter()
        runs.append(("arrivals", RealEngine(arrival_scenario(doc, rate), model=model).run(), time.perf_counter() - t0))
        t0 = time.perf_counter()
        parts = calibration_parts(prof, a.block_size, a.device) if graphs else EngineParts()
        runs.append(("joiners, kept parts", RealEngine(closed, model=model, parts=parts).run(),
                     time.perf_counter() - t0))
        del parts
        for way, res, seconds in runs:
            row = {"round": r, "way": way, "seconds": round(seconds, 1), **summarise(res, prof, a.block_size,
                                                                                  a.max_tokens)}
            out["runs"].append(row)
            M._log(f"{way} (round {r + 1}): {row}")
        if graphs:
            torch.cuda.empty_cache()
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "lone_prefill_probe.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
