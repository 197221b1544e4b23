"""Launching tensor-parallel ranks on one machine: gloo process groups for the CPU engine and tests.

* :func:`spawn_ranks` runs ``fn(tp, *args)`` in ``world`` fresh processes (``torch.multiprocessing``
  spawn), each with its own :class:`~kvsim.engine.tp.TPGroup` over a gloo group that rendezvouses
  through a file (no network port to pick or collide on).
* :func:`run_engine_tp` is what ``kvsim engine`` does for ``tensor_parallel: N`` on CPU: this process is
  rank 0 (scheduler, sampling, records) and ranks 1..N-1 are spawned workers executing its steps.

Each rank uses one intra-op thread (``torch.set_num_threads(1)``) so N ranks do not oversubscribe a
small CPU. NCCL on GPUs is not wired here (the engine refuses tensor_parallel > 1 on CUDA).
"""
from __future__ import annotations

import os
import tempfile

import torch

from kvsim.engine.tp import TPGroup


def gloo_available() -> bool:
    import torch.distributed as dist
    return dist.is_available() and dist.is_gloo_available()


def init_rank(rank: int, world: int, init_method: str) -> TPGroup:
    """Join the gloo group ``init_method`` as ``rank`` of ``world``; the default group is the TP group."""
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
    return TPGroup(rank, world, None)


def _rank_main(rank: int, world: int, init_method: str, fn, args) -> None:
    import torch.distributed as dist
    tp = init_rank(rank, world, init_method)
    try:
        fn(tp, *args)
    finally:
        dist.destroy_process_group()


def spawn_ranks(fn, world: int, *args) -> None:
    """Run ``fn(tp, *args)`` on ``world`` spawned ranks and wait; a rank's exception is re-raised here.
    ``fn`` must be importable by name (a module-level function)."""
    import torch.multiprocessing as mp
    with tempfile.TemporaryDirectory(prefix="kvsim-tp-") as d:
        init = "file://" + os.path.join(d, "rendezvous")
        mp.spawn(_rank_main, args=(world, init, fn, args), nprocs=world, join=True)


def _engine_worker(rank: int, world: int, init_method: str, scenario, sets) -> None:
    from kvsim.config import load_scenario
    from kvsim.engine.engine import RealEngine
    _rank_main(rank + 1, world, init_method, lambda tp: RealEngine(load_scenario(scenario, sets), tp=tp).serve(), ())


def run_engine_tp(scenario, sets=(), *, world: int):
    """Rank 0 of a ``world``-rank CPU engine run in this process, ranks 1.. spawned; returns
    ``(engine, result)``. ``scenario``/``sets`` are what :func:`kvsim.config.load_scenario` takes
    (each worker loads the same scenario)."""
    import torch.distributed as dist
    import torch.multiprocessing as mp

    from kvsim.config import load_scenario
    from kvsim.engine.engine import RealEngine
    sets = list(sets)
    with tempfile.TemporaryDirectory(prefix="kvsim-tp-") as d:
        init = "file://" + os.path.join(d, "rendezvous")
        ctx = mp.start_processes(_engine_worker, args=(world, init, scenario, sets), nprocs=world - 1,
                                 join=False, start_method="spawn")
        threads = torch.get_num_threads()
        try:
            tp = init_rank(0, world, init)
            try:
                eng = RealEngine(load_scenario(scenario, sets), tp=tp)
                res = eng.run()
            finally:
                dist.destroy_process_group()
                torch.set_num_threads(threads)
        except BaseException:
            for p in ctx.processes:        # the workers wait on a step that will never come
                p.terminate()
            raise
        while not ctx.join():
            pass
    return eng, res
