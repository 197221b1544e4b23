"""kvsim: discrete-event simulator and capacity planner for LLM KV-cache paging.

Public API::

    sc = kvsim.load_scenario("scenarios/examples/quickstart.yaml", ["engine.block_size=32"])
    res = kvsim.simulate(sc)          # res.summary (dict), res.requests, res.iterations (DataFrames)
    df = kvsim.sweep("scenario.yaml", {"workload.rate_req_s": [1, 2, 4]}, {"workload.num_requests": 300})
    from kvsim.plan import plan       # plan("scenario.yaml", {"ttft_p99_s": 10}, seeds=10).recommended

Overrides everywhere are a ``{field: value}`` dict, a list of ``"field=value"`` or one such string.
"""
__version__ = "0.1.0"

from kvsim.errors import KvsimError  # noqa: E402 - bad input of every API call raises this (a ValueError)


def load_scenario(source, overrides=None):
    from kvsim.config import load_scenario as _load
    return _load(source, overrides)


def simulate(scenario, *, fast_forward: bool = True):
    from kvsim.sim import simulate as _simulate
    return _simulate(scenario, fast_forward=fast_forward)


def sweep(source, grid, overrides=None, jobs=None, progress=False, backend="local", resume=None, seeds=1,
          confidence=0.95):
    from kvsim.sweeps import sweep as _sweep
    return _sweep(source, grid, overrides, jobs=jobs, progress=progress, backend=backend, resume=resume,
                  seeds=seeds, confidence=confidence)


__all__ = ["KvsimError", "load_scenario", "simulate", "sweep", "__version__"]
