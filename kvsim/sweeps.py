"""Grid sweeps over scenario fields, on local processes or a Ray cluster, resumable.

* ``backend="local"`` (default) runs the points in a process pool;
  ``backend="ray"`` runs each point as a Ray task (``pip install 'kvsim[ray]'``;
  joins a running Ray instance — ``ray.init(...)`` or ``RAY_ADDRESS`` — or starts
  a local one with ``jobs`` CPUs and shuts it down afterwards).
* ``resume=path/to/sweep.csv`` keeps the rows of that file whose grid values
  match a point of this grid (and that have no error) and runs only the rest.
  Points are keyed by their grid values, normalised so that ``1``, ``1.0`` and
  ``"1"`` are the same point.
* Rows come back in grid order whatever the backend, so the same grid gives the
  same table locally and on Ray.
"""
from __future__ import annotations

import itertools
import os
from concurrent.futures import ProcessPoolExecutor

import pandas as pd
import yaml

from kvsim.config import check_key, load_scenario
from kvsim.errors import KvsimError
from kvsim.limits import MAX_GRID_POINTS
from kvsim.textio import parse_value


def parse_grid(items: list[str], field: str = "--grid") -> dict[str, list]:
    """``["engine.block_size=8,16,32"]`` (or ``=[8, 16, 32]``) -> ``{"engine.block_size": [8, 16, 32]}``.

    Keys must name scenario fields; a key given twice, an empty value list, a
    value that is not valid YAML and grids over MAX_GRID_POINTS points are errors.
    """
    grid: dict[str, list] = {}
    for item in items or []:
        if not isinstance(item, str) or "=" not in item:
            raise KvsimError(field, f"expected key=v1,v2,..., got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        check_key(key, field)
        if key in grid:
            raise KvsimError(field, f"{key!r} is given twice; give each field once with all its values")
        if raw.strip().startswith("["):
            values = parse_value(raw, field)
            if not isinstance(values, list) or any(isinstance(v, (list, dict)) for v in values):
                raise KvsimError(field, f"{key}={raw!r} is not a list of values; expected v1,v2,... or [v1, v2, ...]")
        else:
            parts = raw.split(",")
            if any(not v.strip() for v in parts[:-1]) or (len(parts) > 1 and not parts[-1].strip()):
                raise KvsimError(field, f"{key}={raw!r} has an empty value; expected v1,v2,...")
            values = [parse_value(v, field) for v in parts if v.strip()]
            bad = [v for v in values if isinstance(v, (list, dict))]
            if bad:
                raise KvsimError(field, f"{key}: {bad[0]!r} is not a single value; expected v1,v2,... or [v1, v2, ...]")
        if not values:
            raise KvsimError(field, f"no values for {key!r}; expected {key}=v1,v2,...")
        grid[key] = values
    points = 1
    for v in grid.values():
        points *= len(v)
    if points > MAX_GRID_POINTS:
        raise KvsimError(field, f"the grid has {points} points; allowed: at most {MAX_GRID_POINTS}")
    return grid


def grid_points(grid: dict[str, list]) -> list[dict]:
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def check_point(data, overrides: list[str], point: dict, field: str):
    """The grid point's scenario; refuse it (KvsimError on ``field``, naming the point) where it does not load or
    names a model or GPU the catalogue does not know: bad input, found before anything runs."""
    from kvsim.catalogue import get_gpu, get_model
    try:
        sc = load_scenario(data, overrides + _point_overrides(point))
        get_model(sc.model)
        get_gpu(sc.gpu)
    except KvsimError as e:
        where = ", ".join(f"{k}={v}" for k, v in point.items())
        raise KvsimError(field, f"at {where}: {e}") from None
    return sc


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
    except Exception as e:  # noqa: BLE001 - one failing point keeps its row; the others still run
        return {**point, "error": f"internal error: {type(e).__name__}: {e}".splitlines()[0]}


def _norm(v) -> str:
    if isinstance(v, str):
        try:
            v = yaml.safe_load(v)
        except yaml.YAMLError:
            return v
    if isinstance(v, bool) or v is None:
        return repr(v)
    if isinstance(v, (int, float)):
        return repr(float(v))
    return str(v)


def point_key(point: dict, keys: list[str]) -> tuple:
    """The identity of a grid point: its values for ``keys``, normalised (module doc)."""
    return tuple(_norm(point[k]) for k in keys)


_NON_NEGATIVE = ("throughput_req_s", "normalized_latency_s", "requests_finished", "num_iterations")


def _done_rows(resume, keys: list[str]) -> dict[tuple, dict]:
    """Rows of an earlier sweep.csv by point key (only rows without an error and with every key)."""
    from pathlib import Path
    path = Path(resume)
    if not path.exists():
        return {}
    try:
        df = pd.read_csv(path)
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise KvsimError("--out", f"cannot read {path} to resume: {e}".splitlines()[0]) from None
    if any(k not in df for k in keys):
        return {}
    done = {}
    for i, row in enumerate(df.to_dict(orient="records")):
        if "error" in raw and raw.loc[i, "error"] not in ("", "nan"):
            continue
        for col, v in row.items():             # a run's summary values are numbers (finite or not, never text)
            if col in keys or col == "error" or v is None or (isinstance(v, float) and pd.isna(v)):
                continue
            try:
                x = float(v)
            except (TypeError, ValueError):
                x = None
            if x is None or (col in _NON_NEGATIVE and x < 0):
                raise KvsimError("--out", f"{path}: line {i + 2}: {col} is {raw.loc[i, col]!r}, not a result "
                                          f"kvsim writes; move the file away (or fix it) to run the sweep afresh")
            row[col] = x if isinstance(v, str) else v
        rec = {k: (None if isinstance(v, float) and pd.isna(v) else v) for k, v in row.items()}
        if "error" in rec:
            rec["error"] = ""
        done[point_key(raw.loc[i].to_dict(), keys)] = rec
    return done


def _map_ray(tasks: list, jobs: int, bar) -> list[dict]:
    try:
        import ray
    except ImportError:
        raise KvsimError("--backend", "ray is not installed; pip install 'kvsim[ray]'") from None
    started = not ray.is_initialized()
    if started:
        if os.environ.get("RAY_ADDRESS"):
            ray.init(log_to_driver=False)
        else:
            ray.init(num_cpus=jobs, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1)(_run_point)
        refs = [remote.remote(t) for t in tasks]
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            bar and bar.update(len(ready))
        return ray.get(refs)
    finally:
        if started:
            ray.shutdown()


def sweep(source, grid: dict[str, list], overrides: list[str] | None = None, jobs: int | None = None,
          progress: bool = False, backend: str = "local", resume=None, seeds: int = 1,
          confidence: float = 0.95) -> pd.DataFrame:
    """Run every grid point of ``source`` (a YAML path or dict); one summary row per point.

    A point whose scenario does not load or names a model or GPU the catalogue does
    not know is bad input, refused before anything runs; points that fail when run
    (e.g. a model that does not fit) keep their row with the error message in the
    ``error`` column instead of stopping the sweep. With
    ``seeds`` > 1 each point runs under seeds ``seed .. seed+seeds-1``; a row holds
    each metric's mean, ``<metric>_ci_lo``/``_ci_hi`` and ``runs``, and
    ``df.attrs["runs"]`` the one-row-per-run table (``resume`` then names that table).
    """
    from kvsim.config import normalize_overrides
    from kvsim.replicate import check_seeds
    overrides = normalize_overrides(overrides)
    if check_seeds(seeds) > 1:
        from kvsim.sweep_seeds import replicated_sweep
        return replicated_sweep(source, grid, overrides, jobs=jobs, progress=progress, backend=backend,
                                resume=resume, seeds=seeds, confidence=confidence)
    from kvsim.config import read_yaml
    data = source if isinstance(source, dict) else read_yaml(source)
    load_scenario(data, overrides)                      # fail fast on a bad base scenario
    if not isinstance(grid, dict) or not grid:
        raise KvsimError("--grid", f"expected a mapping of field -> values, got {grid!r}")
    for k, values in grid.items():
        check_key(k, "--grid")
        if not isinstance(values, (list, tuple)) or not values:
            raise KvsimError("--grid", f"{k}: expected a non-empty list of values, got {values!r}")
    if backend not in ("local", "ray"):
        raise KvsimError("--backend", f"got {backend!r}, expected local or ray")
    keys = list(grid)
    points = grid_points(grid)
    for p in points:                                    # a point that cannot load is bad input: refuse it now
        check_point(data, overrides, p, "--grid")
    done = _done_rows(resume, keys) if resume else {}
    todo = [p for p in points if point_key(p, keys) not in done]
    tasks = [(data, overrides, p) for p in todo]
    jobs = max(1, min(jobs or os.cpu_count() or 1, max(1, len(tasks))))
    new: list[dict] = []
    bar = None
    if progress and tasks and backend == "ray":
        from tqdm import tqdm
        bar = tqdm(total=len(tasks), desc="sweep", unit="run")
    if not tasks:
        pass
    elif backend == "ray":
        new = _map_ray(tasks, jobs, bar)
    else:
        new = map_local(_run_point, tasks, jobs, progress=progress, desc="sweep", unit="run")
    if bar:
        bar.close()
    by_key = dict(done)
    by_key.update({point_key(r, keys): r for r in new})
    rows = [{**by_key[point_key(p, keys)], **p} for p in points]
    errors = [r["error"] for r in rows if r.get("error")]
    if errors and len(errors) == len(rows):              # nothing ran: that is bad input, not a result
        raise KvsimError("--grid", f"every grid point failed; the first: {errors[0]}")
    return pd.DataFrame(rows)


def map_local(fn, tasks: list, jobs: int, *, progress: bool = False, desc: str = "", unit: str = "it") -> list:
    """``[fn(t) for t in tasks]`` in ``jobs`` local processes (in order), with an optional progress bar."""
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(tasks), desc=desc, unit=unit)
    out = []
    if jobs == 1:
        for t in tasks:
            out.append(fn(t))
            bar and bar.update()
    else:
        with ProcessPoolExecutor(max_workers=jobs) as ex:
            for r in ex.map(fn, tasks):
                out.append(r)
                bar and bar.update()
    if bar:
        bar.close()
    return out
