"""What a run of a sliding-window model needs from its scenario, and its KV budget in pages.

A model with ``sliding_window`` runs on :class:`~kvsim.core.kv_window.WindowedPagedKV`
(policy v0) or :class:`~kvsim.core.kv_window_v1.WindowedPagedKVV1` (policy v1):
KV-cache groups (:mod:`kvsim.core.kv_groups`) on the paged allocator, one
sequence per request under v0 (v1 fans ``n`` out into single-sequence requests),
no prefix caching, no CPU swap. Anything else is a one-line
:class:`~kvsim.errors.KvsimError` naming the field.

The budget keeps the memory arithmetic of :func:`kvsim.memory.kv_budget` (the
same KV bytes) and re-cuts it into pages of ``block_size`` tokens of
``layers_per_page`` layers: ``num_gpu_blocks`` counts pages, shared by all groups.
"""
from __future__ import annotations

import dataclasses

from kvsim.catalogue import ModelSpec
from kvsim.config import Scenario
from kvsim.core.kv_groups import KVGroupLayout
from kvsim.errors import KvsimError
from kvsim.memory import KVBudget


def check_window_scenario(sc: Scenario, model: ModelSpec) -> None:
    """Refuse the engine settings KV groups do not support (one line naming the field)."""
    e = sc.engine
    why = f"{model.name} has sliding-window layers (KV groups)"
    if e.allocator != "paged":
        raise KvsimError("engine.allocator", f"got {e.allocator}: {why}, which need the paged allocator")
    if e.enable_prefix_caching:
        raise KvsimError("engine.enable_prefix_caching", f"{why}, which run without a prefix cache")
    if e.preemption_mode == "swap":
        raise KvsimError("engine.preemption_mode", f"got swap: {why}, which have no CPU swap pool; use recompute")


def check_window_requests(requests, policy: str) -> None:
    """KV groups run one sequence per group: no beam search, and under v0 no parallel sampling."""
    for r in requests:
        if r.beam_width > 1:
            raise KvsimError("workload.beam_width", f"request {r.request_id} asks for beam width {r.beam_width}, "
                                                    f"but sliding-window models run one sequence per request under "
                                           f"policy v0; use engine.policy v1 (it fans samples out)")
        if r.n > 1 and policy == "v0":
            raise KvsimError("workload.n", f"request {r.request_id} asks for {r.n} samples, "
                                           f"but sliding-window models run one sequence per request under "
                                           f"policy v0; use engine.policy v1 (it fans samples out)")


def window_budget(sc: Scenario, model: ModelSpec, budget: KVBudget) -> KVBudget:
    """The budget in pages of the model's KV groups (``engine.num_gpu_blocks``, if set, counts pages)."""
    e = sc.engine
    layout = KVGroupLayout.from_windows(model.layer_windows())
    page = layout.page_bytes(model.kv_bytes_per_token(sc.dtype_bytes, sc.tensor_parallel), model.num_layers,
                             e.block_size)
    pages = e.num_gpu_blocks if e.num_gpu_blocks is not None else budget.kv_cache_bytes // page
    return dataclasses.replace(budget, block_bytes=page, num_gpu_blocks=pages, num_cpu_blocks=0,
                               kv_cache_bytes=pages * page if e.num_gpu_blocks is not None else budget.kv_cache_bytes,
                               kv_capacity_tokens=pages * e.block_size)
