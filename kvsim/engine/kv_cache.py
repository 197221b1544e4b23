"""The engine's KV cache tensors: per-layer GPU blocks and a pinned CPU swap pool.

Layout per layer: K and V each ``[num_blocks, block_size, num_kv_heads, head_dim]``, the planes of one
tensor ``planes`` ``[2 x layers, num_blocks, ...]`` (layer ``i``'s K is plane ``2i``, its V ``2i + 1``), so a
copy-on-write is one launch over all of them.
Block ids are the ones the ``kvsim.core`` block manager hands out, so a
``StepPlan``'s copy-on-write pairs and swap maps apply directly.

KV-cache groups (``layer_slot``, :mod:`kvsim.core.kv_groups`): a page holds
``block_size`` tokens of ``layers_per_page`` layers, so only that many tensor
pairs exist and layer ``l`` uses pair ``layer_slot[l]``, shared with the layers
of the other groups at the same slot (their page ids never collide: one pool).

The CPU swap pool is per layer (K and V tensors ``[cpu_blocks, block_size, ...]``), or with ``staged_swap`` one
tensor holding each CPU block's planes together, swapped through a staging buffer
(:mod:`kvsim.engine.swap_staged`: one copy per run of CPU blocks instead of one per layer, K and V, and run).
"""
from __future__ import annotations

import torch

from kvsim.engine.draws import rows_index
from kvsim.engine.swap_staged import swap_in_staged, swap_out_staged


class KVCache:
    def __init__(self, num_layers: int, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int,
                 num_cpu_blocks: int, dtype: torch.dtype, device: torch.device, backend: str,
                 layer_slot: tuple[int, ...] | None = None, staged_swap: bool = False):
        shape = (num_blocks, block_size, num_kv_heads, head_dim)
        slots = layer_slot if layer_slot is not None else tuple(range(num_layers))
        distinct = max(slots) + 1
        # every layer's K and V as planes of one tensor, so a copy-on-write is one launch for all of them
        self.planes = torch.empty((2 * distinct,) + shape, dtype=dtype, device=device)
        pairs = [(self.planes[2 * i], self.planes[2 * i + 1]) for i in range(distinct)]
        self.gpu = [pairs[i] for i in slots]
        self._distinct = distinct
        pin = device.type == "cuda"
        cpu_shape = (num_cpu_blocks,) + shape[1:]
        self.staged_swap = bool(staged_swap)
        self.pool = None            # staged swaps: each CPU block's planes together (kvsim.engine.swap_staged)
        if num_cpu_blocks and self.staged_swap:
            self.pool = torch.empty((num_cpu_blocks, 2 * distinct) + shape[1:], dtype=dtype, pin_memory=pin)
            self.cpu = [(self.pool[:, 2 * i], self.pool[:, 2 * i + 1]) for i in slots]     # views, per layer
        else:
            self.cpu = [(torch.empty(cpu_shape, dtype=dtype, pin_memory=pin),
                         torch.empty(cpu_shape, dtype=dtype, pin_memory=pin))
                        for _ in range(num_layers)] if num_cpu_blocks else []
        self.backend = backend
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.device = device
        self.transfers = 0

    @property
    def bytes(self) -> int:
        k, _ = self.gpu[0]
        return 2 * self._distinct * k.numel() * k.element_size()

    def copy(self, pairs: list[tuple[int, int]]) -> None:
        """Copy-on-write: block dst := block src in every layer's K and V, one kernel launch over all the
        cache's planes. The ids are checked once here, on the host, so the launch needs no sync; they are sent
        ``non_blocking`` (``torch.tensor(..., device=...)`` synchronised the stream: an overlapped step that
        copies waited there for the step before it)."""
        from kvsim.kernels import copy_blocks_planes
        if not pairs:
            return
        ids = [i for pair in pairs for i in pair]
        if min(ids) < 0 or max(ids) >= self.num_blocks:
            raise ValueError(f"copy-on-write block ids must be in [0, {self.num_blocks}), got {pairs}")
        t = rows_index(pairs, self.device)
        copy_blocks_planes(self.planes, t, backend=self.backend, ids_checked=True)

    def swap_out(self, pairs: list[tuple[int, int]]) -> None:
        """GPU block -> CPU block for ``(gpu, cpu)`` pairs, every layer; runs of consecutive ids batch (staged:
        one gather over all layers, one copy per run of consecutive CPU ids)."""
        from kvsim.kernels import swap_blocks
        if self.pool is not None:
            self.transfers += swap_out_staged(self.planes, self.pool, pairs)
            return
        for (gk, gv), (ck, cv) in zip(self.gpu, self.cpu):
            self.transfers += swap_blocks(gk, ck, pairs) + swap_blocks(gv, cv, pairs)

    def swap_in(self, pairs: list[tuple[int, int]]) -> None:
        """CPU block -> GPU block for ``(cpu, gpu)`` pairs, every layer."""
        from kvsim.kernels import swap_blocks
        if self.pool is not None:
            self.transfers += swap_in_staged(self.planes, self.pool, pairs)
            return
        for (gk, gv), (ck, cv) in zip(self.gpu, self.cpu):
            self.transfers += swap_blocks(ck, gk, pairs) + swap_blocks(cv, gv, pairs)
