"""Does a decode step's pricing error grow with its longest row? Per row count, over a set's engine steps (CPU).

The cost model prices a decode step of ``n`` rows from the whole-step grid at the CUDA-graph batch ``b`` it replays
and the rows' mean context, plus what unequal contexts add: the spread grid's fraction of the way from the uniform
step at the mean context to the uniform step at the longest (:mod:`kvsim.cost.decode_spread`). If that fraction is
right, what is left of a step's time (engine − price) does not depend on how far the longest row sits above the mean.
This prices every engine decode-only step of a committed set one by one (:func:`kvsim.validate_reprice.priced_steps`'s
steps, as ``kvsim validate`` does) and, per row count, fits ``engine − price = a + c_mean x mean + c_spread x
(longest − mean)`` by least squares: ``c_spread`` in ms per 1,000 tokens of spread (± its standard error). Beside it,
the graph batch and whether the decode kernel splits that graph's contexts (``choose_num_splits`` at the card's SMs;
unsplit, ``b x KV heads`` programs stream one row each, and with few real rows the longest one sets the step).

Result (2026-12-07, the committed sets and profiles; ``spread_slopes.md`` in results_H100/step_replay_1207g): on
both OPT-13B H100 sets (two cards) ``c_spread`` is **+0.31 to +1.00 ms per 1,000 tokens at 9-16 rows** (the unsplit
16-row graph: the step's spread is priced too low), **-0.14 to -0.94 at 17-21 rows** (the 24-row graph, priced too
high) and -0.26 to +0.61 at 22-24; the Llama-3-8B sets (graphs split up to 64 rows) sit at +0.03 to +0.34 from 9 to
32 rows (-0.30 to +0.33 at 2-8). A
variant taking the uniform step at the longest context over the step's own rows instead of the graph's batch (its
padding rows read no KV), with each serving fit refitted from its calibration's kept runs, was worse on all four
sets (steps' mean |error| 1.48 -> 1.58%, 1.28 -> 1.35%, 0.78 -> 1.21%, 1.03 -> 1.42%): not kept.

usage: python benchmarks/engine/spread_slopes.py [--sets H100-async-opt-1207f,...] [--max-rows 32] [--out FILE.md]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from extra_scaling_check import SETS, priced_set  # noqa: E402

MIN_STEPS = 40


def set_steps(name: str, profile: str) -> pd.DataFrame:
    """Every usual engine decode-only step of set ``name`` priced by ``profile``
    (:func:`extra_scaling_check.priced_set`): ``n``, ``mean`` and ``top`` (tokens a row: mean and longest),
    ``res_ms`` (engine − price) and the graph batch ``b``."""
    from kvsim.graph_sizes import padded
    parts = [pd.DataFrame({"scenario": scen, "n": st.n, "b": [padded(int(n), cost._graphs) for n in st.n],
                           "mean": st.ctx_per_row, "top": st.ctx_max,
                           "res_ms": (st.measured_s - st.priced_s) * 1e3})
             for scen, cost, st in priced_set(name, profile)]
    return pd.concat(parts, ignore_index=True)


def slopes(steps: pd.DataFrame, max_rows: int = 32) -> pd.DataFrame:
    """Per row count (2 .. ``max_rows``, at least :data:`MIN_STEPS` steps): the least-squares fit of ``res_ms`` on
    the mean context and the spread, both per 1,000 tokens, with standard errors."""
    out = []
    for n, g in steps.groupby("n"):
        if n < 2 or n > max_rows or len(g) < MIN_STEPS:
            continue
        spread = (g.top - g["mean"]).to_numpy() / 1e3
        X = np.column_stack([np.ones(len(g)), g["mean"].to_numpy() / 1e3, spread])
        y = g.res_ms.to_numpy()
        coef, *_ = np.linalg.lstsq(X, y, rcond=None)
        r = y - X @ coef
        cov = np.linalg.pinv(X.T @ X) * (r @ r) / max(len(y) - 3, 1)
        se = np.sqrt(np.maximum(np.diag(cov), 0.0))
        out.append({"n": int(n), "b": int(g.b.iloc[0]), "steps": len(g), "mean_res_ms": float(y.mean()),
                    "mean_spread": float(spread.mean() * 1e3), "c_mean": coef[1], "c_mean_se": se[1],
                    "c_spread": coef[2], "c_spread_se": se[2]})
    return pd.DataFrame(out)


def split_note(model: str, b: int, sms: int = 132) -> str:
    """``split`` or ``unsplit``: how the decode kernel runs graph batch ``b`` of ``model`` (its longest sequence as
    the reference length, the engine's graphs)."""
    from kvsim.catalogue import get_model
    from kvsim.kernels.decode_splits import choose_num_splits
    spec = get_model(model)
    return "split" if choose_num_splits(b, spec.num_kv_heads, spec.max_seq_len, sms, 64) > 1 else "unsplit"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--max-rows", type=int, default=32)
    ap.add_argument("--out", help="also write the tables here (markdown)")
    a = ap.parse_args()
    lines = []
    for name in a.sets.split(","):
        model = "opt-13b" if "opt" in name else "llama-3-8b"
        t = slopes(set_steps(name, SETS[name]), a.max_rows)
        lines += [f"## {name} (`{SETS[name]}`)", "",
                  "| rows | graph batch | decode kernel | steps | engine − price (ms) | spread (tokens) | "
                  "c_spread (ms per 1k) | c_mean (ms per 1k) |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r.n} | {r.b} | {split_note(model, r.b)} | {r.steps} | {r.mean_res_ms:+.3f} | {r.mean_spread:.0f} | "
                  f"{r.c_spread:+.3f} ± {r.c_spread_se:.3f} | {r.c_mean:+.3f} ± {r.c_mean_se:.3f} |"
                  for r in t.itertuples()]
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if a.out:
        Path(a.out).write_text("# Decode steps' pricing error against their spread, by row count\n\n"
                               "`python benchmarks/engine/spread_slopes.py --out <this file>` (see its docstring).\n\n"
                               + text)


if __name__ == "__main__":
    main()
