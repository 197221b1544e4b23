"""Does the serving fit's per-row extra belong to the step's attention? An offline check on committed engine steps.

The serving fit prices a decode step of ``n`` rows as the whole-step grid (at the CUDA-graph batch ``b`` it replays
and the rows' mean context over ``b``), what unequal contexts add, the step overhead and ``extra_s[n]``: a constant
per row count, fitted from serving runs whose rows hold ~300-900 tokens each (``decode_serving[bs].ctx_per_row``).
The overlapped sets price short-context steps one way by rows (3-8 rows fast, 9-16 slow), as the extras' signs are
(e.g. OPT-13B on an H100: -0.32 ms at 8 rows, +0.47 at 9). If the extra corrects how the grid prices the step's
attention (a 9-row step replays the 16-row graph: its attention is 9 long rows, not 16 of the mean), it should
shrink with the attention: ``extra_s[n] * A(step) / A(fit)``, ``A`` the grid's curve at the step's mean context less
its value at context 0, ``A(fit)`` the same at the fit's ``ctx_per_row`` (``--fit-ctx`` where the profile has none).

This prices every committed overlapped set's engine decode-only steps one by one both ways
(:func:`kvsim.validate_reprice.priced_steps`, as ``kvsim validate`` does) and prints, per set and per (rows,
context) cell, the priced mean over the measured mean less one, now and scaled, and the steps' mean |error| both
ways. CPU only, no change to the cost model.

Result (2026-12-07, commit 862ed99's sets and profiles; H200-async's profile records no ``ctx_per_row``: 600 taken):
the hypothesis does not hold. Steps' mean |error| now -> scaled: H100-async-1207b 0.78% -> 0.90%, H200-async 1.03%
-> 1.27%, H100-async-opt-1207c 1.49% -> 1.42%; the cells' |error| weighted by steps 0.29% -> 0.59%, 0.45% -> 0.99%,
0.66% -> 0.67%. Scaling mends the short cells of 3-16 rows (H200-async 9-16 rows at <=64 tokens +1.49% -> -0.02%)
and breaks the big ones below the fit's context (9-16 rows at 257-512 tokens, 13,491 steps, +0.04% -> -0.56%; 17-32
rows -0.68% -> -1.67%): the extra is not proportional to the grid's attention time. The cost model keeps it constant.
H100-async-opt-1207c's set left the tree at commit b1d3dba; its successor H100-async-opt-1207d (a profile with the
grid's 32- and 64-token columns) says the same: 1.28% -> 1.20%, cells 0.88% -> 0.93%; and so does
H100-async-opt-1207f (the fifteen on a fifth H100, 2026-12-07 evening): 1.48% -> 1.38%, cells 0.72% -> 0.68%, 9-16
rows at 129-256 tokens +0.24% -> -1.12% and at <=64 +5.05% -> +2.86%.

usage: python benchmarks/engine/extra_scaling_check.py [--sets H100-async-1207b,...] [--fit-ctx 600]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from kvsim.graph_sizes import padded  # noqa: E402
from kvsim.validate import calibrated_scenario  # noqa: E402
from kvsim.validate_context import ROW_BINS, binned  # noqa: E402
from kvsim.validate_records import read_engine_records  # noqa: E402
from kvsim.validate_reprice import CTX_BINS, priced_steps  # noqa: E402

SETS = {"H100-async-1207b": "calibrate/profiles/H100/llama-3-8b-async-1207b.json",
        "H200-async": "calibrate/profiles/H200/llama-3-8b-async.json",
        "H100-async-opt-1207d": "calibrate/profiles/H100/opt-13b-async-1207d.json",
        "H100-async-opt-1207f": "calibrate/profiles/H100/opt-13b-async-1207f.json"}


def cost_of(scenario: Path, profile: str):
    from kvsim.build import setup_run
    return setup_run(calibrated_scenario(str(scenario), profile)).cost


def scenario_yaml(name: str) -> Path | None:
    """The scenario file a set's run folder is named after (validation or holdout), or None."""
    return next((p for p in (ROOT / "scenarios" / "validation" / f"{name}.yaml",
                             ROOT / "scenarios" / "holdout" / f"{name}.yaml") if p.exists()), None)


def priced_set(name: str, profile: str):
    """``(scenario name, cost model, steps)`` per scenario of set ``name`` with engine records: its engine's usual
    decode-only steps priced one by one by ``profile`` (:func:`kvsim.validate_reprice.priced_steps`)."""
    for d in sorted((ROOT / "validation" / name).iterdir()):
        scen = scenario_yaml(d.name)
        if not (d / "engine").is_dir() or scen is None:
            continue
        cost = cost_of(scen, profile)
        _, reqs, its = read_engine_records(d / "engine")
        st = priced_steps(cost, its, reqs)
        st = st[st.usual.astype(bool)].reset_index(drop=True)
        if len(st):
            yield d.name, cost, st


def rescaled(cost, steps: pd.DataFrame, fit: list[float] | None, fit_ctx: float) -> np.ndarray:
    """Each step's price with its row count's extra scaled by the attention ratio (module doc). ``fit``: the
    profile's ``ctx_per_row`` at the fit's rows (``fit_ctx`` for every row where it has none)."""
    xs, extra, _ = cost._serving
    out = steps.priced_s.to_numpy(float).copy()
    for n, g in steps.groupby("n"):
        b = float(padded(int(n), cost._graphs))
        xs_c, ys_c = cost._grid_curve(cost._step, b)
        zero = float(np.interp(0.0, xs_c, ys_c))
        e = float(np.interp(float(n), xs, extra))
        c_fit = float(np.interp(float(n), xs, fit)) if fit else fit_ctx
        a_fit = float(np.interp(n * c_fit / b, xs_c, ys_c)) - zero
        mean = g.ctx_per_row.to_numpy(float) * n / b
        a = np.interp(mean, xs_c, ys_c) - zero
        ratio = np.clip(a / a_fit, 0.0, None) if a_fit > 0 else np.ones_like(a)
        out[g.index] = g.priced_s.to_numpy(float) - e + e * ratio
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--fit-ctx", type=float, default=600.0)
    a = ap.parse_args()
    for name in a.sets.split(","):
        prof = SETS[name]
        doc = json.loads((ROOT / prof).read_text())
        parts = []
        for scen, cost, st in priced_set(name, prof):
            fit = doc["decode_serving"][str(cost.bs)].get("ctx_per_row")
            st["scaled_s"] = rescaled(cost, st, fit, a.fit_ctx)
            st["scenario"] = scen
            parts.append(st)
        df = pd.concat(parts, ignore_index=True)
        df["rows"] = binned(df.n.to_numpy(float), ROW_BINS)
        df["ctx"] = binned(df.ctx_per_row.to_numpy(float), CTX_BINS)
        g = df.groupby(["rows", "ctx"]).agg(steps=("n", "size"), meas=("measured_s", "mean"), now=("priced_s", "mean"),
                                             scaled=("scaled_s", "mean"))
        g = g[g.steps >= 20]
        g["now_err"] = (g.now / g.meas - 1) * 100
        g["scaled_err"] = (g.scaled / g.meas - 1) * 100
        e_now = (df.priced_s / df.measured_s - 1).abs().mean() * 100
        e_sc = (df.scaled_s / df.measured_s - 1).abs().mean() * 100
        w_now = (g.now_err.abs() * g.steps).sum() / g.steps.sum()
        w_sc = (g.scaled_err.abs() * g.steps).sum() / g.steps.sum()
        print(f"== {name} ({prof}): {len(df)} steps; mean |step error| now {e_now:.2f}% scaled {e_sc:.2f}%; "
              f"cells' |error| weighted by steps now {w_now:.2f}% scaled {w_sc:.2f}%")
        print(g[["steps", "now_err", "scaled_err"]].round(2).to_string())


if __name__ == "__main__":
    main()
