"""Can ``decode_serving``'s form (an overhead and a spread fraction per row count) price a card's serving
decode steps? Fit it on ONE engine run's own steps and replay OTHER runs of the same card with the result.

This is a check of the model's form on data a calibration does not have (a validation trace), not a way to
make a profile: ``kvsim calibrate`` fits the same terms on its own uniform-length workload
(:mod:`kvsim.calibrate.serving_fit`). Writes the augmented profile to ``--out`` for ``kvsim validate --replay``.

    python benchmarks/engine/serving_form_check.py --profile P.json --fit-on RUN/engine --out /tmp/p.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

import kvsim
from kvsim.calibrate import serving_fit as SF
from kvsim.cost.profile import interp1
from kvsim.graph_sizes import engine_graph_sizes
from kvsim.validate_records import record_file


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", required=True)
    ap.add_argument("--fit-on", required=True, type=Path, help="engine output folder (iterations.csv, requests.csv)")
    ap.add_argument("--rows", default="2,4,8,9,16,17,24", help="row counts to fit (both ends of each graph bucket)")
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--decode-only", action="store_true", help="fit decode_serving only (no prefill_serving)")
    a = ap.parse_args(argv)
    prof = json.loads(Path(a.profile).read_text())
    its, reqs = (pd.read_csv(record_file(a.fit_on, n)) for n in ("iterations.csv", "requests.csv"))  # or .csv.gz
    # the CUDA-graph sizes the traced engine captured: those of the scenario its summary.json records
    sc = kvsim.load_scenario(json.loads((a.fit_on / "summary.json").read_text())["scenario"])
    graphs = engine_graph_sizes(sc)
    ov = prof["step_overhead"]
    fit = SF.fit_from_runs(SF.stripped_cost(prof, a.block_size, graphs, drop=SF.FITTED, bare=True),
                           {int(n): (its, reqs) for n in a.rows.split(",")},
                           lambda n: float(interp1(float(n), np.asarray(ov["num_seqs"], float),
                                                   np.asarray(ov["time_s"], float))))
    fit["workload"] = {"fitted_on": str(a.fit_on)}
    print("rows       ", fit["num_seqs"])
    print("extra (ms) ", [round(x * 1e3, 3) for x in fit["extra_s"]])
    print("spread frac", [round(x, 3) for x in fit["spread_frac"]])
    pre = {} if a.decode_only else SF.fit_prefill_from_runs(
        SF.stripped_cost(prof, a.block_size, graphs, drop=SF.UNFITTED_PREFILL, bare=False), {0: (its, reqs)})
    prof["decode_serving"] = {str(a.block_size): fit}
    if pre:
        prof["prefill_serving"] = {str(a.block_size): pre}
        print("prefill tokens  ", [round(x) for x in pre["tokens"]])
        print("prefill extra ms", [round(x * 1e3, 3) for x in pre["extra_s"]])
    a.out.write_text(json.dumps(prof, indent=1) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
