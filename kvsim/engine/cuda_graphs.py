"""Decode steps replayed from CUDA graphs, one graph per captured batch size.

A decode step of a 13B model launches about 400 kernels; at small batches the
GPU finishes each faster than Python can launch the next, so the step is
launch-bound. Capturing the step once per batch size and replaying it costs
one launch.

A decode-only step of ``n <= max_batch`` sequences runs as the graph of the
smallest captured batch ``b >= n``: the step's inputs are copied into static
buffers and rows ``n .. b-1`` are padding — token 0 at position 0, cache slot
``-1`` (the write kernel skips it) and context length 0 (attention reads
nothing and writes zeros). Only the first ``n`` output rows are used.

What the kernels decide from the data at launch time is fixed at capture:
the decode kernel's split-KV partitioning is chosen for ``max_context_len``
(the engine's longest sequence), so one graph serves every context up to it
(partitions past a sequence's end exit at once). The static block tables are
``max_context_len / block_size`` wide.

Without CUDA (``capture=False``) :meth:`DecodeGraphs.run` executes the same
padded static-buffer step eagerly: that is how the padding logic is tested on
the CPU.
"""
from __future__ import annotations

import bisect

import torch

from kvsim.engine.attention import AttnMetadata


def graph_batch_sizes(max_batch: int) -> list[int]:
    """1, 2, 4, then every 8 up to 64, every 16 up to 256, every 32 beyond, and ``max_batch`` itself."""
    sizes = [b for b in (1, 2, 4) if b <= max_batch]
    step_for = ((64, 8), (256, 16))
    b = 8
    while b <= max_batch:
        sizes.append(b)
        b += next((s for lim, s in step_for if b < lim), 32)
    if max_batch >= 1 and sizes[-1] != max_batch:
        sizes.append(max_batch)
    return sizes


class DecodeGraphs:
    """Static decode inputs and the graphs captured over them (see module doc)."""

    def __init__(self, model, kv_caches, *, block_size: int, max_batch: int, max_context_len: int,
                 backend: str, capture: bool = True, batch_sizes: list[int] | None = None):
        """``batch_sizes`` (default :func:`graph_batch_sizes`) are the batches captured; steps of
        other sizes up to the largest are padded to the next one."""
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        dev = model.device
        self.model, self.kv = model, kv_caches
        self.backend = backend
        self.max_context_len = int(max_context_len)
        self.sizes = sorted({int(b) for b in batch_sizes if 1 <= b <= max_batch}) if batch_sizes \
            else graph_batch_sizes(max_batch)
        self.max_batch = self.sizes[-1]
        width = -(-self.max_context_len // block_size)
        i32 = dict(dtype=torch.int32, device=dev)
        self.ids = torch.zeros(self.max_batch, dtype=torch.long, device=dev)
        self.pos = torch.zeros(self.max_batch, dtype=torch.long, device=dev)
        self.slots = torch.full((self.max_batch,), -1, dtype=torch.long, device=dev)
        self.ctx = torch.zeros(self.max_batch, **i32)
        self.tables = torch.zeros((self.max_batch, width), **i32)
        self._qstart = torch.zeros(1, **i32)
        self._empty = torch.zeros(0, **i32)
        self._empty_table = torch.zeros((0, 1), **i32)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        self.capture_s = 0.0
        if capture and dev.type == "cuda":
            self._capture_all()

    @property
    def captured(self) -> bool:
        return bool(self.graphs)

    def _meta(self, b: int) -> AttnMetadata:
        return AttnMetadata(0, b, self.slots[:b], self._qstart, self._empty, self._empty_table, 1,
                            self.ctx[:b], self.tables[:b], self.max_context_len, self.backend)

    def _forward(self, b: int) -> torch.Tensor:
        return self.model(self.ids[:b], self.pos[:b], self.kv, self._meta(b))

    @torch.inference_mode()
    def _capture_all(self) -> None:
        import time
        t0 = time.perf_counter()
        pool = None
        stream = torch.cuda.Stream()
        for b in reversed(self.sizes):            # largest first: later graphs reuse its pool memory
            self._forward(b)                       # compile every kernel variant outside the capture
            torch.cuda.synchronize()
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, pool=pool, stream=stream):
                out = self._forward(b)
            pool = g.pool() if pool is None else pool
            self.graphs[b], self.outputs[b] = g, out
        torch.cuda.synchronize()
        self.capture_s = time.perf_counter() - t0

    def fits(self, meta: AttnMetadata) -> bool:
        """True for a decode-only step this object can run."""
        return (meta.num_prefill_tokens == 0 and 0 < meta.num_decode_tokens <= self.max_batch
                and meta.max_decode_context_len <= self.max_context_len
                and meta.decode_block_tables.shape[1] <= self.tables.shape[1])

    @torch.inference_mode()
    def run(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttnMetadata) -> torch.Tensor:
        """Hidden states ``[n, hidden]`` of a decode-only step (``fits(meta)`` must hold)."""
        n = meta.num_decode_tokens
        b = self.sizes[bisect.bisect_left(self.sizes, n)]
        w = meta.decode_block_tables.shape[1]
        self.ids[:n].copy_(input_ids, non_blocking=True)
        self.pos[:n].copy_(positions, non_blocking=True)
        self.slots[:n].copy_(meta.slot_mapping, non_blocking=True)
        self.ctx[:n].copy_(meta.decode_context_lens, non_blocking=True)
        self.tables[:n, :w].copy_(meta.decode_block_tables, non_blocking=True)
        if b > n:
            self.ids[n:b].zero_()
            self.pos[n:b].zero_()
            self.slots[n:b].fill_(-1)
            self.ctx[n:b].zero_()
        g = self.graphs.get(b)
        if g is None:
            return self._forward(b)[:n]
        g.replay()
        return self.outputs[b][:n]
