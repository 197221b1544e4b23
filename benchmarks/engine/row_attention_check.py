"""Is a padded decode step's attention its real rows' own? An offline check on committed engine steps (CPU only).

The cost model prices a decode step of ``n`` rows, which replays the CUDA graph of ``b = padded(n)`` rows, as the
whole-step grid at ``b`` rows and the rows' mean context over ``b`` (``sum / b``: the padded rows count as context
0), what unequal contexts add at ``b``, the step overhead and the serving fit's ``extra_s[n]``. Priced one by one,
OPT-13B's engine steps on an H100 (``validation/H100-async-opt-1207d``) come out by exact row count in a pattern
that follows the graph sizes: 9-12 rows +1.0% to +2.1% (graph 16), 17-28 rows -1.7% to -2.9% (graphs 24 and 32).
If the padded rows cost nothing but their share of the GEMMs, a step would be the grid's fixed part at ``b`` rows
(the curve at context 0) plus the attention of ``n`` rows at their own mean context: the grid at ``n`` rows (it
interpolates between measured batches) less its own context-0 value, and the unequal-context term at ``n`` rows::

    step(n) = G(b, 0) + [G(n, sum / n) - G(n, 0)] + spread at n rows

This refits each set's serving fit from its calibration's kept runs both ways (the extras are what the engine took
beyond the price, so they move with it), prices each set's engine decode-only steps one by one both ways
(:func:`kvsim.validate_reprice.priced_steps`, as ``kvsim validate`` does), and prints the steps' mean |error|, the
(rows, context) cells' |error| weighted by steps, and the error by exact row count. No change to the cost model.

Result (2026-12-07, commit 13f0f24's sets, profiles and kept runs): the hypothesis does not hold; every set is priced
worse. Steps' mean |error| now -> own rows: H100-async-opt-1207d 1.28% -> 1.49%, H100-async-1207b 0.78% -> 1.13%,
H200-async 1.03% -> 1.65%; cells weighted by steps 0.88% -> 1.22%, 0.29% -> 0.60%, 0.45% -> 0.83%. 17-23 rows gain
(OPT-13B -2.0% -> -0.8% at 17) and 9-12 rows lose on every set (OPT-13B +1.5% -> +3.6% at 9, Llama-3-8B H100 +0.3%
-> +2.7%): padded rows cost more than the GEMMs' share, and the graph's own batch is the better unit. The fifteen
on a fifth H100 (H100-async-opt-1207f, 2026-12-07 evening) say the same: 1.48% -> 1.63%, cells 0.72% -> 0.78%, 9
rows +2.5% -> +4.9%, 17 rows -1.7% -> +0.1%.

usage: python benchmarks/engine/row_attention_check.py [--sets H100-async-opt-1207d,...]
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import serving_refit as SRF  # noqa: E402
from extra_scaling_check import priced_set  # noqa: E402

import kvsim.cost.decode_price as DP  # noqa: E402
import kvsim.cost.decode_spread as DS  # noqa: E402
from kvsim.calibrate import serving_fit as SF  # noqa: E402
from kvsim.cost.calibrated import CalibratedCostModel  # noqa: E402
from kvsim.graph_sizes import padded  # noqa: E402
from kvsim.validate_context import ROW_BINS, binned  # noqa: E402
from kvsim.validate_reprice import CTX_BINS  # noqa: E402

# set: (its profile, its calibration's kept serving runs)
SETS = {"H100-async-opt-1207d": ("calibrate/profiles/H100/opt-13b-async-1207d.json",
                                 "benchmarks/engine/results_H100/async_1207d/serving_runs/opt-13b-b16"),
        "H100-async-opt-1207f": ("calibrate/profiles/H100/opt-13b-async-1207f.json",
                                 "benchmarks/engine/results_H100/async_1207f/serving_runs/opt-13b-b16"),
        "H100-async-1207b": ("calibrate/profiles/H100/llama-3-8b-async-1207b.json",
                             "benchmarks/engine/results_H100/async_1207b/serving_runs"),
        "H200-async": ("calibrate/profiles/H200/llama-3-8b-async.json",
                       "benchmarks/engine/results_H200/async_1206/serving_runs")}


@contextlib.contextmanager
def own_rows():
    """The decode step priced at its real rows, with the fixed part at its graph's rows (module doc), while open."""
    saved = DP.padded, DS.padded, CalibratedCostModel._grid_at
    grid_at = saved[2]

    def at_rows(n, graphs=None):
        return n

    def shifted(self, grid, n, ctx_sum):
        v = grid_at(self, grid, n, ctx_sum)
        if grid is self._step:       # the fixed part at the graph's rows: G(b, 0) - G(n, 0) added
            b = float(padded(int(round(n)), self._graphs))
            if b != n:
                v = v + (float(self._grid_curve(grid, b)[1][0]) - float(self._grid_curve(grid, n)[1][0]))
        return v
    DP.padded = DS.padded = at_rows
    CalibratedCostModel._grid_at = shifted
    try:
        yield
    finally:
        DP.padded, DS.padded, CalibratedCostModel._grid_at = saved


def refit(prof_path: str, runs_dir: str, out: Path) -> None:
    """The profile with its decode serving fit refitted from its kept runs under the pricing in force, to ``out``."""
    prof = json.loads((ROOT / prof_path).read_text())
    runs = SF.load_runs(ROOT / runs_dir)
    _, bare, overhead = SRF.fit_inputs(prof, 16, runs)
    kept = {k: SF.load_runs(ROOT / runs_dir / k) for k in ("stepped", "beam", "short", "beam_short")}
    fit = SF.fit_from_runs(bare, runs, overhead, "grid", stepped_runs=kept["stepped"] or None,
                           beam_runs=kept["beam"] or None, short_runs=kept["short"] or None,
                           beam_short_runs=kept["beam_short"] or None)
    doc = copy.deepcopy(prof)
    doc["decode_serving"]["16"].update({k: fit[k] for k in ("num_seqs", "extra_s", "stepped", "beam", "short")
                                        if k in fit})
    out.write_text(json.dumps(doc))


def set_steps(name: str, prof: Path) -> pd.DataFrame:
    """Every scenario's engine decode-only steps of set ``name``, priced one by one by ``prof``."""
    return pd.concat([st for _, _, st in priced_set(name, str(prof))], ignore_index=True)


def summary(df: pd.DataFrame) -> tuple[float, float, pd.Series]:
    """(steps' mean |error| %, cells' |error| weighted by steps %, error % by exact rows up to 40)."""
    df = df.assign(rows=binned(df.n.to_numpy(float), ROW_BINS), ctx=binned(df.ctx_per_row.to_numpy(float), CTX_BINS))
    g = df.groupby(["rows", "ctx"]).agg(steps=("n", "size"), meas=("measured_s", "mean"), pr=("priced_s", "mean"))
    g = g[g.steps >= 20]
    err = (g.pr / g.meas - 1).abs() * 100
    by_n = df[df.n <= 40].groupby("n").apply(lambda x: (x.priced_s.mean() / x.measured_s.mean() - 1) * 100)
    return float((df.priced_s / df.measured_s - 1).abs().mean() * 100), float((err * g.steps).sum() / g.steps.sum()), \
        by_n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default=",".join(SETS))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.sets.split(","):
            if name not in SETS:
                sys.exit(f"error: --sets: {name!r} is not one of {', '.join(SETS)}")
            out = {}
            for way, ctx in (("now", contextlib.nullcontext()), ("own rows", own_rows())):
                with ctx:
                    prof = Path(tmp) / f"{name}-{way.replace(' ', '_')}.json"
                    refit(*SETS[name], prof)
                    out[way] = summary(set_steps(name, prof))
            (s0, c0, n0), (s1, c1, n1) = out["now"], out["own rows"]
            print(f"== {name}: steps' mean |error| now {s0:.2f}% own rows {s1:.2f}%; cells weighted by steps "
                  f"now {c0:.2f}% own rows {c1:.2f}%")
            print("   rows: " + " ".join(f"{int(k)}:{v:+.1f}/{n1.get(k, np.nan):+.1f}" for k, v in n0.items()))


if __name__ == "__main__":
    main()
