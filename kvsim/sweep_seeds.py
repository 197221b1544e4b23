"""Replicated sweeps: every grid point under N seeds, then mean and interval per point.

The seeds become one more grid axis (``seed``), so the runs go through the same
local/Ray machinery and resume as any sweep; :func:`aggregate_runs` then folds
the per-run rows back into one row per grid point with each metric's mean,
``<metric>_ci_lo`` / ``<metric>_ci_hi`` (Student t, :mod:`kvsim.stats`) and
``runs`` (the replications without an error).
"""
from __future__ import annotations

import pandas as pd

from kvsim.errors import KvsimError
from kvsim.stats import aggregate, check_confidence


def aggregate_runs(runs: pd.DataFrame, keys: list[str], confidence: float) -> pd.DataFrame:
    rows = []
    for _, group in runs.groupby(keys, sort=False, dropna=False) if keys else [((), runs)]:
        point = {k: group.iloc[0][k] for k in keys}
        ok = group[group.error == ""] if "error" in group else group
        if not len(ok):
            rows.append({**point, "runs": 0, "error": group.error.iloc[0]})
            continue
        summaries = [{k: v for k, v in r.items() if k not in keys and k not in ("seed", "error")}
                     for r in ok.to_dict(orient="records")]
        rows.append({**point, **aggregate(summaries, confidence), "error": ""})
    return pd.DataFrame(rows)


def replicated_sweep(source, grid, overrides=None, *, jobs=None, progress=False, backend="local", resume=None,
                     seeds: int = 2, confidence: float = 0.95) -> pd.DataFrame:
    from kvsim.config import load_scenario, read_yaml
    from kvsim.replicate import seed_list
    from kvsim.sweeps import sweep
    confidence = check_confidence(confidence)
    if not isinstance(grid, dict) or not grid:
        raise KvsimError("--grid", f"expected a mapping of field -> values, got {grid!r}")
    if "seed" in grid:
        raise KvsimError("--grid", "seed is a grid axis and --seeds is given; use one of them")
    data = source if isinstance(source, dict) else read_yaml(source)
    base = load_scenario(data, overrides).seed
    runs = sweep(data, {**grid, "seed": seed_list(base, seeds)}, overrides, jobs=jobs, progress=progress,
                 backend=backend, resume=resume)
    out = aggregate_runs(runs, list(grid), confidence)
    out.attrs["runs"] = runs
    return out
