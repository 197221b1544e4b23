"""One scheduler, N model ranks: rank 0 broadcasts each step to the tensor-parallel workers.

Why broadcast rather than run the same deterministic scheduler on every rank:
the engine's scheduler is driven by the wall clock (requests enter when their
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
"""
from __future__ import annotations

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
