"""Grid sweeps over scenario fields, run in parallel processes."""
from __future__ import annotations

import itertools
import os
from concurrent.futures import ProcessPoolExecutor

import pandas as pd
import yaml

from kvsim.config import load_scenario, parse_override
from kvsim.errors import KvsimError


def parse_grid(items: list[str]) -> dict[str, list]:
    """``["engine.block_size=8,16,32"]`` -> ``{"engine.block_size": [8, 16, 32]}``."""
    grid: dict[str, list] = {}
    for item in items:
        if "=" not in item:
            raise KvsimError("--grid", f"expected key=v1,v2,..., got {item!r}")
        key, raw = item.split("=", 1)
        values = [yaml.safe_load(v) for v in raw.split(",") if v.strip()]
        if not values:
            raise KvsimError("--grid", f"no values for {key!r}")
        grid[key.strip()] = values
    return grid


def grid_points(grid: dict[str, list]) -> list[dict]:
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def _point_overrides(point: dict) -> list[str]:
    return [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
            for k, v in point.items()]


def _run_point(args) -> dict:
    data, overrides, point = args
    from kvsim.sim import simulate
    try:
        sc = load_scenario(data, overrides + _point_overrides(point))
        res = simulate(sc)
        return {**point, **res.summary, "error": ""}
    except KvsimError as e:
        return {**point, "error": str(e)}


def sweep(source, grid: dict[str, list], overrides: list[str] | None = None, jobs: int | None = None,
          progress: bool = False) -> pd.DataFrame:
    """Run every grid point of ``source`` (a YAML path or dict); one summary row per point.

    Points that are invalid (e.g. a model that does not fit) keep their row with the
    error message in the ``error`` column instead of stopping the sweep.
    """
    from kvsim.config import read_yaml
    data = source if isinstance(source, dict) else read_yaml(source)
    overrides = list(overrides or [])
    load_scenario(data, overrides)                      # fail fast on a bad base scenario
    for k in grid:
        parse_override(f"{k}=0")
    points = grid_points(grid)
    tasks = [(data, overrides, p) for p in points]
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(points)))
    rows: list[dict] = []
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(tasks), desc="sweep", unit="run")
    if jobs == 1:
        for t in tasks:
            rows.append(_run_point(t))
            bar and bar.update()
    else:
        with ProcessPoolExecutor(max_workers=jobs) as ex:
            for r in ex.map(_run_point, tasks):
                rows.append(r)
                bar and bar.update()
    if bar:
        bar.close()
    return pd.DataFrame(rows)
