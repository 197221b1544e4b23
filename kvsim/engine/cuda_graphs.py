"""Engine steps replayed from CUDA graphs: decode steps by batch size, prefill steps by token count.

A step of a 13B model launches about 500 kernels, and eagerly each costs the CPU
tens of microseconds (PyTorch dispatch, cuBLASLt heuristics, Triton's launcher):
a decode step at small batch and any prefill below a few hundred tokens are
bound by the CPU, not the GPU, and their time then wanders with the CPU's
state from run to run. Capturing each shape once and replaying it costs one
launch, and the step becomes as fast and as repeatable as the GPU work.

* **Decode** (:class:`DecodeGraphs`): a decode-only step of ``n`` sequences runs
  as the graph of the smallest captured batch ``b >= n``. Rows ``n .. b-1`` are
  padding: token 0 at position 0, cache slot ``-1`` (the write kernel skips it)
  and context 0 (attention reads nothing).
* **Prefill** (:class:`PrefillGraphs`): a prefill-only step of ``n`` new tokens
  over ``s`` sequences runs as the graph of the smallest captured token count
  ``b >= n`` that is not skipped, with room for ``max_seqs`` sequences. Skipped are
  the sizes asked for and, when routing, those a larger captured size replayed
  at least 5% faster when they were captured (cuBLAS picks a slow kernel for some
  token counts). Tokens ``n .. b-1`` belong to
  no sequence (slot ``-1``; attention never reads or writes their rows) and
  sequences ``s ..`` have zero new tokens (their attention programs exit at once).
  Mixed prefill+decode steps run here too: the runner lays them out with every
  decode row as a one-token chunk over its cached context
  (:func:`kvsim.engine.attention.as_unified`), so one varlen layout serves both:
  the prefill kernel takes the chunks and (``decode_kernel``, the default) the
  decode kernel the one-token sequences, both reading the same device-side offsets.

Everything a kernel would decide from the data at launch time is fixed at
capture: decode's split-KV partitions have the length the heuristic gives the
model's longest sequence (``spec.max_seq_len``; one partition per that many
positions up to ``max_context_len``, so the engine's ``max_model_len`` changes
only how many trailing, empty partitions exist, never the work), prefill's grid for ``b`` tokens and ``max_seqs``
sequences, and the static block tables are ``max_context_len / block_size``
wide. Only the first ``n`` output rows are meaningful.

Without CUDA (``capture=False``) :meth:`run` executes the same padded
static-buffer step eagerly: that is how the padding logic is tested on the CPU.
"""
from __future__ import annotations

import bisect
import time

import torch

from kvsim.engine.attention import AttnMetadata
from kvsim.graph_sizes import graph_batch_sizes, prefill_token_sizes  # noqa: F401  (re-exported)
from kvsim.graph_sizes import route_sizes


class _StepGraphs:
    """Static inputs, the graphs captured over them, and replay (see module doc)."""

    def __init__(self, model, kv_caches, *, block_size: int, sizes: list[int], rows: int, max_context_len: int,
                 backend: str):
        dev = model.device
        self.model, self.kv, self.backend = model, kv_caches, backend
        self.max_context_len = int(max_context_len)
        self.sizes = sizes
        width = -(-self.max_context_len // block_size)
        i32 = dict(dtype=torch.int32, device=dev)
        top = sizes[-1]
        self.ids = torch.zeros(top, dtype=torch.long, device=dev)
        self.pos = torch.zeros(top, dtype=torch.long, device=dev)
        self.slots = torch.full((top,), -1, dtype=torch.long, device=dev)
        self.ctx = torch.zeros(rows, **i32)                 # decode: context lens; prefill: cached lens
        self.tables = torch.zeros((rows, width), **i32)
        self._zero1 = torch.zeros(1, **i32)
        self._empty = torch.zeros(0, **i32)
        self._empty_table = torch.zeros((0, 1), **i32)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        self.capture_s = 0.0

    @property
    def captured(self) -> bool:
        return bool(self.graphs)

    @property
    def max_size(self) -> int:
        return self.sizes[-1]

    def _meta(self, b: int) -> AttnMetadata:
        raise NotImplementedError

    def _forward(self, b: int) -> torch.Tensor:
        return self.model(self.ids[:b], self.pos[:b], self.kv, self._meta(b))

    @torch.inference_mode()
    def _capture_all(self) -> None:
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
        # The first launch of a captured graph uploads it to the device, a one-off cost paid inside the first
        # step that replays it: on the H200 traces each run's first step took 20-35 ms against 6-10 ms after it,
        # and the first decode step of 9 rows (the 16-row graph's first use) 5-6 ms more than the later ones
        # (validation/H200/v02, v13). Launch each one now: the static inputs still hold padding (slot -1,
        # context 0, no sequences), so no KV is written and nothing is read.
        for b in self.sizes:
            self.graphs[b].replay()
        torch.cuda.synchronize()
        self.capture_s = time.perf_counter() - t0

    def _load_tokens(self, input_ids, positions, slots, n: int, b: int) -> None:
        self.ids[:n].copy_(input_ids, non_blocking=True)
        self.pos[:n].copy_(positions, non_blocking=True)
        self.slots[:n].copy_(slots, non_blocking=True)
        if b > n:
            self.ids[n:b].zero_()
            self.pos[n:b].zero_()
            self.slots[n:b].fill_(-1)

    def _replay(self, b: int, n: int) -> torch.Tensor:
        g = self.graphs.get(b)
        if g is None:
            return self._forward(b)[:n]
        g.replay()
        return self.outputs[b][:n]


class DecodeGraphs(_StepGraphs):
    """Decode-only steps by batch size (see module doc)."""

    def __init__(self, model, kv_caches, *, block_size: int, max_batch: int, max_context_len: int,
                 backend: str, capture: bool = True, batch_sizes: list[int] | None = None,
                 split_ref_len: int | None = None):
        """``batch_sizes`` (default :func:`graph_batch_sizes`) are the batches captured; steps of
        other sizes up to the largest are padded to the next one. ``split_ref_len``: the length the split-KV
        partitions are sized for (default: the longer of ``max_context_len`` and the model's longest sequence,
        as the engine's graphs; a diagnostic may set a shorter one)."""
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        sizes = sorted({int(b) for b in batch_sizes if 1 <= b <= max_batch}) if batch_sizes \
            else graph_batch_sizes(max_batch)
        super().__init__(model, kv_caches, block_size=block_size, sizes=sizes, rows=sizes[-1],
                         max_context_len=max_context_len, backend=backend)
        self.max_batch = self.max_size
        spec = getattr(model, "spec", None)
        self.split_ref_len = int(split_ref_len) if split_ref_len else \
            max(self.max_context_len, int(getattr(spec, "max_seq_len", 0) or 0))
        if capture and model.device.type == "cuda":
            self._capture_all()

    def _meta(self, b: int) -> AttnMetadata:
        return AttnMetadata(0, b, self.slots[:b], self._zero1, self._empty, self._empty_table, 1,
                            self.ctx[:b], self.tables[:b], self.max_context_len, self.backend,
                            decode_split_ref_len=self.split_ref_len)

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
        self._load_tokens(input_ids, positions, meta.slot_mapping, n, b)
        self.ctx[:n].copy_(meta.decode_context_lens, non_blocking=True)
        self.tables[:n, :w].copy_(meta.decode_block_tables, non_blocking=True)
        if b > n:
            self.ctx[n:b].zero_()
        return self._replay(b, n)


class PrefillGraphs(_StepGraphs):
    """Prefill-only steps by token count, up to ``max_seqs`` sequences (see module doc)."""

    def __init__(self, model, kv_caches, *, block_size: int, max_tokens: int, max_seqs: int, max_context_len: int,
                 backend: str, capture: bool = True, token_sizes: list[int] | None = None,
                 decode_kernel: bool | None = None, route: bool = False, skip: list[int] | None = None):
        """``decode_kernel`` (default :data:`kvsim.engine.attention.MIXED_DECODE_KERNEL`): the graphs attend
        one-token sequences (a mixed step's decode rows) with the decode kernel. ``skip``: sizes never replayed (a
        step padded to one runs as the next size not skipped); ``route``: after capture, time every graph and skip
        also the sizes a larger one replays :data:`~kvsim.graph_sizes.ROUTE_MARGIN` faster
        (:mod:`kvsim.engine.graph_route`; ``skipped`` and ``replay_time_s`` record it)."""
        from kvsim.engine.attention import MIXED_DECODE_KERNEL
        if max_tokens < 1 or max_seqs < 1:
            raise ValueError("max_tokens and max_seqs must be >= 1")
        self.decode_kernel = MIXED_DECODE_KERNEL if decode_kernel is None else bool(decode_kernel)
        sizes = sorted({int(t) for t in token_sizes if 1 <= t <= max_tokens}) if token_sizes \
            else prefill_token_sizes(max_tokens)
        super().__init__(model, kv_caches, block_size=block_size, sizes=sizes, rows=max_seqs,
                         max_context_len=max_context_len, backend=backend)
        self.max_seqs = max_seqs
        self.qstart = torch.zeros(max_seqs + 1, dtype=torch.int32, device=model.device)
        self.replay_time_s: list[float] = []
        skipped = {int(t) for t in skip or ()}
        if capture and model.device.type == "cuda":
            self._capture_all()
            if route:
                routed, self.replay_time_s = self._route(sorted(skipped))
                skipped |= set(routed)
        self.skipped = sorted(t for t in skipped if t in self.sizes)
        self.lookup = route_sizes(self.sizes, self.skipped)

    def _meta(self, b: int) -> AttnMetadata:
        return AttnMetadata(b, 0, self.slots[:b], self.qstart, self.ctx, self.tables, b,
                            self._empty, self._empty_table, 1, self.backend, single_rows_decode=self.decode_kernel)

    @torch.inference_mode()
    def _route(self, fixed: list[int]) -> tuple[list[int], list[float]]:
        """The sizes a larger graph replays faster, and each graph's replay time (:mod:`kvsim.engine.graph_route`;
        ``fixed``: skipped anyway)."""
        from kvsim.engine.graph_route import graph_timer, graph_warmer, route
        return route(self.sizes, graph_timer(self.graphs), warm=graph_warmer(self.graphs[self.sizes[-1]]), fixed=fixed)

    def padded_size(self, n: int) -> int:
        """The graph a step of ``n`` tokens replays: the next size not skipped, else the next captured size."""
        i = bisect.bisect_left(self.lookup, n)
        return self.lookup[i] if i < len(self.lookup) else self.sizes[bisect.bisect_left(self.sizes, n)]

    def fits(self, meta: AttnMetadata) -> bool:
        """True for a prefill-only step this object can run (``max_prefill_context_len`` is checked
        through the block tables' width)."""
        return (meta.num_decode_tokens == 0 and 0 < meta.num_prefill_tokens <= self.max_size
                and meta.prefill_context_lens.shape[0] <= self.max_seqs
                and meta.prefill_block_tables.shape[1] <= self.tables.shape[1])

    @torch.inference_mode()
    def run(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttnMetadata) -> torch.Tensor:
        """Hidden states ``[n, hidden]`` of a prefill-only step (``fits(meta)`` must hold)."""
        n = meta.num_prefill_tokens
        s = meta.prefill_context_lens.shape[0]
        b = self.padded_size(n)
        w = meta.prefill_block_tables.shape[1]
        self._load_tokens(input_ids, positions, meta.slot_mapping, n, b)
        self.qstart[:s + 1].copy_(meta.prefill_query_start, non_blocking=True)
        self.qstart[s + 1:].fill_(n)               # sequences past s: zero new tokens
        self.ctx[:s].copy_(meta.prefill_context_lens, non_blocking=True)
        self.ctx[s:].zero_()
        self.tables[:s, :w].copy_(meta.prefill_block_tables, non_blocking=True)
        return self._replay(b, n)
