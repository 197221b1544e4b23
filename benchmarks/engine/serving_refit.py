"""How well the serving fit carries from row to row: its own runs, each row predicted from the others (CPU).

`kvsim calibrate --serving-runs DIR` keeps the engine records of the serving fit's runs
(:mod:`kvsim.calibrate.serving_fit`). This refits them with the profile made in the same calibration and, per
row ``n``, prices that row's decode steps three ways: with the fit of all rows (what the profile holds), with
the fit of the other rows only (leave one row out: how the fit does at a batch it was not fitted on, which is
every batch but seven in serving), and with the profile's evenly spaced spread grid instead of the fit. The
data are the calibration's own runs, not a validation scenario's, so choosing a fit form on them does not tune
to the validation set.

With ``--write OUT.json`` it also writes the profile with ``decode_serving`` refitted in ``--form`` (with its
``stepped``, ``beam`` and ``short`` tables from ``RUNS_DIR/stepped``, ``beam`` (and ``beam_short``) and ``short``
where the calibration kept them) and
``prefill_serving`` refitted from those runs (what the calibration writes; the runs and the profile are from one
calibration, one card).

usage: python benchmarks/engine/serving_refit.py --profile P.json RUNS_DIR [--block-size 16] [--form grid|row]
           [--write OUT.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from kvsim.calibrate import serving_fit as SF
from kvsim.cost.profile import interp1
from kvsim.graph_sizes import engine_graph_sizes


def fit_inputs(prof: dict, bs: int, runs: dict):
    """``(graphs, bare, overhead)``: the serving runs' CUDA-graph sizes, the profile's cost model without its
    serving tables and step overhead, and its step overhead by rows, as the calibration fits with them."""
    graphs = engine_graph_sizes(SF.serving_scenario(prof, bs, max(runs), device="cpu"))
    ov = prof["step_overhead"]

    def overhead(n):
        return float(interp1(float(n), np.asarray(ov["num_seqs"], float), np.asarray(ov["time_s"], float)))
    return graphs, SF.stripped_cost(prof, bs, graphs, drop=SF.FITTED, bare=True), overhead


def row_errors(prof: dict, bs: int, runs: dict, form: str = "grid") -> list[dict]:
    """Per row: measured mean decode step and the three prices' mean errors (see module doc)."""
    graphs, bare, overhead = fit_inputs(prof, bs, runs)
    grid_priced = SF.stripped_cost(prof, bs, graphs, drop=SF.FITTED, bare=False)

    def priced(fit, n, ctx):      # the cost model itself, with ``fit`` as the profile's decode_serving
        cost = SF.stripped_cost(dict(prof, decode_serving={str(bs): fit}), bs, graphs, drop=("prefill_serving",),
                                bare=False)
        return cost.decode_step_times(n, ctx.ctx_sum.to_numpy(float), ctx.ctx_max.to_numpy(float))
    full = SF.fit_from_runs(bare, runs, overhead, form)
    out = []
    for n, (its, reqs) in sorted(runs.items()):
        ctx = SF.step_contexts(its, reqs)
        ctx = ctx[ctx.valid & (ctx.n == n)]
        if len(ctx) < SF.MIN_STEPS:
            continue
        measured = its.loc[ctx.index, "duration_s"].to_numpy(float)
        others = SF.fit_from_runs(bare, {m: r for m, r in runs.items() if m != n}, overhead, form)
        grid = grid_priced.decode_step_times(n, ctx.ctx_sum.to_numpy(float), ctx.ctx_max.to_numpy(float))
        row = {"n": n, "steps": len(ctx), "measured_ms": 1e3 * float(measured.mean()),
               "fit_all": float(priced(full, n, ctx).mean() / measured.mean() - 1) if full else float("nan"),
               "fit_others": float(priced(others, n, ctx).mean() / measured.mean() - 1) if others else float("nan"),
               "spread_grid": float(np.mean(grid) / measured.mean() - 1)}
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", help="the --serving-runs directory of a calibration")
    ap.add_argument("--profile", required=True, help="the profile that calibration wrote")
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--form", choices=("grid", "row"), default="grid",
                    help="the serving fit's form (kvsim.calibrate.serving_fit.fit_from_runs)")
    ap.add_argument("--write", default=None, help="write the profile with decode_serving refitted here")
    a = ap.parse_args()
    prof = json.load(open(a.profile))
    runs = SF.load_runs(a.runs)
    if not runs:
        raise SystemExit(f"error: runs: no n<N>/iterations.csv under {a.runs}")
    rows = row_errors(prof, a.block_size, runs, a.form)
    errs = [abs(r["fit_others"]) for r in rows]
    print(f"form {a.form}: leave one row out, mean |error| {np.mean(errs):.2%}, worst {max(errs):.2%}\n")
    print("| rows | steps | measured mean (ms) | fit, all rows | fit, other rows | spread grid |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']} | {r['steps']} | {r['measured_ms']:.3f} | {r['fit_all']:+.2%} | {r['fit_others']:+.2%} "
              f"| {r['spread_grid']:+.2%} |")

    if a.write:
        graphs, bare, overhead = fit_inputs(prof, a.block_size, runs)
        # an overlapped calibration's stepped runs and any calibration's beam runs, kept beside the others: without
        # them the refit would drop decode_serving's stepped and beam tables
        extra = {k: SF.load_runs(Path(a.runs) / k) for k in ("stepped", "beam", "short", "beam_short")}
        fit = SF.fit_from_runs(bare, runs, overhead, a.form, stepped_runs=extra["stepped"] or None,
                               beam_runs=extra["beam"] or None, short_runs=extra["short"] or None,
                               beam_short_runs=extra["beam_short"] or None)
        pre = SF.fit_prefill_from_runs(SF.stripped_cost(prof, a.block_size, graphs, drop=SF.UNFITTED_PREFILL,
                                                        bare=False), runs)
        old = prof.get("decode_serving", {}).get(str(a.block_size), {})
        fit["reference_step_s"] = old.get("reference_step_s")
        prof["decode_serving"] = dict(prof.get("decode_serving", {}), **{str(a.block_size): fit})
        if pre:
            prof["prefill_serving"] = dict(prof.get("prefill_serving", {}), **{str(a.block_size): pre})
        prof.setdefault("meta", {})["decode_serving_refit"] = (
            f"benchmarks/engine/serving_refit.py --form {a.form} on the calibration's kept serving runs "
            "(decode_serving and prefill_serving)")
        with open(a.write, "w") as f:
            json.dump(prof, f, indent=1)
        print(f"wrote {a.write}")


if __name__ == "__main__":
    main()
