"""Swaps through a staging buffer: one gather (or scatter) over every layer, one PCIe copy per run of CPU blocks.

The per-layer path (:func:`kvsim.kernels.swap_blocks` for each layer's K and V) issues ``2 x layers`` copies for
every run of consecutive block ids, each a torch ``copy_`` call of ~10-15 us of host time: on the H200 traces an
OPT-13B swap step paid ~1.0 ms per 16-token block (80 copies of 164 KB each), ~4x what the block's 13 MB need
at PCIe speed, and about the same per block at block size 64 (``validation/H200/v07``, ``v20``): the host's
calls, not the bus, set the price. vLLM issues the same copies from C++ at a few microseconds each.

Here the CPU pool holds each CPU block's planes (every layer's K and V) together, ``[cpu_blocks, planes,
block_size, kv_heads, head_dim]``, so a swap-out is one ``index_select`` of the GPU blocks over all planes into
a staging buffer ``[n, planes, ...]`` and one device-to-host copy per run of consecutive CPU ids; a swap-in the
reverse (host-to-device copies into staging, one ``index_copy_`` into the planes). Everything is issued on the
current stream, in order, so the staging memory is reused only after the copies that read it. Swaps larger than
``STAGE_BYTES`` go in chunks so the staging buffer stays small beside the KV cache.
"""
from __future__ import annotations

import torch

from kvsim.engine.draws import rows_index   # (ids sent non_blocking: no wait for the step before)

STAGE_BYTES = 128 << 20     # staging buffer per chunk (a swap of more blocks is done in chunks of this size)


def cpu_runs(cpu_ids: list[int]) -> list[tuple[int, int, int]]:
    """``(first CPU id, first index into cpu_ids, count)`` for each run of consecutive ids of ``cpu_ids``
    (already sorted ascending, distinct)."""
    runs: list[list[int]] = []
    for j, c in enumerate(cpu_ids):
        if runs and c == runs[-1][0] + runs[-1][2]:
            runs[-1][2] += 1
        else:
            runs.append([c, j, 1])
    return [(c, j, n) for c, j, n in runs]


def _chunks(pairs: list[tuple[int, int]], per_chunk: int):
    for i in range(0, len(pairs), per_chunk):
        yield pairs[i:i + per_chunk]


def _per_chunk(planes: torch.Tensor) -> int:
    block_bytes = planes.shape[0] * planes[0, 0].numel() * planes.element_size()
    return max(1, STAGE_BYTES // max(1, block_bytes))


def _check(pairs, gpu_blocks: int, cpu_blocks: int) -> None:
    g = [p[0] for p in pairs]
    c = [p[1] for p in pairs]
    if min(g) < 0 or max(g) >= gpu_blocks or min(c) < 0 or max(c) >= cpu_blocks:
        raise ValueError(f"swap block ids must be in [0, {gpu_blocks}) on the GPU and [0, {cpu_blocks}) on the "
                         f"CPU, got {pairs}")
    if len(set(c)) != len(c) or len(set(g)) != len(g):
        raise ValueError(f"swap block ids must be distinct, got {pairs}")


def swap_out_staged(planes: torch.Tensor, pool: torch.Tensor, pairs: list[tuple[int, int]]) -> int:
    """GPU block -> CPU block for ``(gpu, cpu)`` pairs, all planes; returns the PCIe copies issued."""
    if not pairs:
        return 0
    _check(pairs, planes.shape[1], pool.shape[0])
    order = sorted(pairs, key=lambda p: p[1])          # by CPU id: consecutive ids become one copy
    non_blocking = planes.is_cuda != pool.is_cuda
    copies = 0
    for part in _chunks(order, _per_chunk(planes)):
        gids = rows_index([g for g, _ in part], planes.device)
        stage = planes.index_select(1, gids).transpose(0, 1).contiguous()     # [n, planes, ...]
        for c, j, n in cpu_runs([c for _, c in part]):
            pool[c:c + n].copy_(stage[j:j + n], non_blocking=non_blocking)
            copies += 1
    return copies


def swap_in_staged(planes: torch.Tensor, pool: torch.Tensor, pairs: list[tuple[int, int]]) -> int:
    """CPU block -> GPU block for ``(cpu, gpu)`` pairs, all planes; returns the PCIe copies issued."""
    if not pairs:
        return 0
    _check([(g, c) for c, g in pairs], planes.shape[1], pool.shape[0])
    order = sorted(pairs)                               # by CPU id
    non_blocking = planes.is_cuda != pool.is_cuda
    copies = 0
    for part in _chunks(order, _per_chunk(planes)):
        stage = torch.empty((len(part),) + tuple(pool.shape[1:]), dtype=pool.dtype, device=planes.device)
        for c, j, n in cpu_runs([c for c, _ in part]):
            stage[j:j + n].copy_(pool[c:c + n], non_blocking=non_blocking)
            copies += 1
        gids = rows_index([g for _, g in part], planes.device)
        planes.index_copy_(1, gids, stage.transpose(0, 1))
    return copies
