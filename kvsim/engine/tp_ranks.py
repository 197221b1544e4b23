"""Tensor-parallel ranks of the engine: the step broadcast and the gloo launcher (issue #16).

One scheduler, N model ranks. Why rank 0 broadcasts each step rather than every
rank running the same deterministic scheduler: the engine's scheduler is driven by the wall clock (requests enter when their
arrival time has passed, ``schedule(now)``), so two ranks scheduling on their
own could admit a request one step apart and diverge. Rank 0 owns the
scheduler, the block manager, the token ids and sampling; after preparing a
step it broadcasts a :class:`WorkerStep` — the :class:`~kvsim.core.plan.StepPlan`'s
cache operations (swap-out, swap-in, copy-on-write, in the runner's order) and
the prepared model inputs (token ids, positions and the attention metadata with
its slot mapping and block tables) — so every rank writes and reads the same
physical blocks by construction. Workers run the cache operations and the
forward pass (whose row-parallel all-reduces pair up with rank 0's) and nothing
else: they never sample, so they need no logits.

The broadcast is ``torch.distributed.broadcast_object_list`` (pickled CPU
tensors), right for gloo; on NCCL the inputs would be sent as device tensors
(see the report of issue #16).

Launching (one machine):

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
from dataclasses import dataclass, field

import torch

from kvsim.engine.tp import TPGroup


@dataclass
class WorkerStep:
    swap_out: list = field(default_factory=list)
    swap_in: list = field(default_factory=list)
    copy_pairs: list = field(default_factory=list)
    input_ids: torch.Tensor | None = None
    positions: torch.Tensor | None = None
    meta: object = None


def _broadcast(obj, tp: TPGroup):
    import torch.distributed as dist
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=tp.group)
    return box[0]


def send_step(tp: TPGroup, plan, batch) -> WorkerStep:
    """Rank 0: broadcast this step to the workers (before running it itself)."""
    step = WorkerStep(list(plan.swap_out), list(plan.swap_in), list(plan.copy_pairs),
                      batch.input_ids, batch.positions, batch.meta)
    if tp.world_size > 1:
        _broadcast(step, tp)
    return step


def send_stop(tp: TPGroup) -> None:
    """Rank 0: tell the workers the run is over."""
    if tp.world_size > 1:
        _broadcast(None, tp)


def block_tables(meta) -> list[list[list[int]]]:
    """The step's block tables as lists (prefill then decode, per KV group): what a rank attends over."""
    metas = getattr(meta, "groups", None) or [meta]
    return [m.prefill_block_tables.tolist() + m.decode_block_tables.tolist() for m in metas]


def step_trace(meta) -> tuple:
    """``(block tables, slot mapping)`` of a step, as plain lists (what tests compare across ranks)."""
    first = (getattr(meta, "groups", None) or [meta])[0]
    return block_tables(meta), first.slot_mapping.tolist()


@torch.inference_mode()
def worker_loop(model, cache, tp: TPGroup, *, trace: list | None = None) -> int:
    """Ranks 1..N-1: run broadcast steps until rank 0 sends stop; returns the number of steps.

    ``trace`` (optional): gets ``(block tables, slot mapping)`` of every step, for tests."""
    steps = 0
    while True:
        step = _broadcast(None, tp)
        if step is None:
            return steps
        if step.swap_out:
            cache.swap_out(step.swap_out)
        if step.swap_in:
            cache.swap_in(step.swap_in)
        if step.copy_pairs:
            cache.copy(step.copy_pairs)
        steps += 1
        if trace is not None:
            trace.append(step_trace(step.meta))
        if step.meta is None or step.meta.num_tokens == 0:
            continue
        dev = cache.device
        model(step.input_ids.to(dev), step.positions.to(dev), cache.gpu, step.meta)


# -- launching ranks ------------------------------------------------------------
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
