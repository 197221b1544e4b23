"""Attention over the paged KV cache, for one layer of one engine step.

Token order inside a step: all prefill tokens first (sequence by sequence),
then one token per decoding sequence. :class:`AttnMetadata` carries what the
kernels need; :func:`paged_attention` writes the step's new K/V into the cache
(``slot_mapping``) and then attends: prefill tokens causally over their
sequence's cached context plus themselves, decode tokens over their whole
context. Backends: ``"triton"`` (kvsim.kernels) or ``"torch"`` (the float64
references, for CPU tests).

KV-cache groups (sliding-window models, :mod:`kvsim.core.kv_groups`): each group
has its own slots and block tables, so a step carries one :class:`AttnMetadata`
per group (with that group's ``window``) in a :class:`GroupedMetadata`; a
layer reads its own with :func:`layer_meta`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch


MIXED_DECODE_KERNEL = True
"""Default for mixed steps in the unified layout: one-token sequences (the decode rows) run through the
decode kernel beside the prefill kernel's launch (:func:`paged_attention`), instead of as 64-row query tiles
with 1-4 live rows inside the prefill kernel."""


def as_unified(meta: "AttnMetadata", decode_kernel: bool | None = None) -> "AttnMetadata":
    """The same step with its decode rows turned into one-token chunks over ``context - 1`` cached
    tokens, so prefill and decode share one varlen layout (the engine's layout for mixed steps, which
    CUDA graphs capture by token count). Token order, slots and outputs are unchanged. ``decode_kernel``
    (default :data:`MIXED_DECODE_KERNEL`): the one-token sequences are served by the decode kernel."""
    d = meta.num_decode_tokens
    if d == 0:
        return meta
    dev = meta.slot_mapping.device
    qs = meta.prefill_query_start.to(dev, torch.int32)
    p = meta.num_prefill_tokens
    qstart = torch.cat([qs[:1] if qs.numel() else torch.zeros(1, dtype=torch.int32, device=dev),
                        qs[1:], p + torch.arange(1, d + 1, dtype=torch.int32, device=dev)])
    ctx = torch.cat([meta.prefill_context_lens.to(torch.int32), meta.decode_context_lens.to(torch.int32) - 1])
    pt, dt = meta.prefill_block_tables, meta.decode_block_tables
    width = max(pt.shape[1], dt.shape[1])
    tables = torch.zeros((pt.shape[0] + d, width), dtype=torch.int32, device=dev)
    tables[:pt.shape[0], :pt.shape[1]] = pt
    tables[pt.shape[0]:, :dt.shape[1]] = dt
    empty = torch.zeros(0, dtype=torch.int32, device=dev)
    return AttnMetadata(p + d, 0, meta.slot_mapping, qstart, ctx, tables, max(meta.max_prefill_query_len, 1),
                        empty, torch.zeros((0, 1), dtype=torch.int32, device=dev), 1, meta.backend,
                        single_rows_decode=MIXED_DECODE_KERNEL if decode_kernel is None else bool(decode_kernel))


@dataclass
class AttnMetadata:
    num_prefill_tokens: int
    num_decode_tokens: int
    slot_mapping: torch.Tensor            # [T] int64: cache slot (block * block_size + offset) per token
    prefill_query_start: torch.Tensor     # [P + 1] int32 cu_seqlens of the new tokens
    prefill_context_lens: torch.Tensor    # [P] int32: tokens already cached before this chunk
    prefill_block_tables: torch.Tensor    # [P, max_blocks] int32
    max_prefill_query_len: int
    decode_context_lens: torch.Tensor     # [D] int32: context incl. the new token
    decode_block_tables: torch.Tensor     # [D, max_blocks] int32
    max_decode_context_len: int
    backend: str = "triton"
    prefill_tile_starts: torch.Tensor | None = None   # per-step tile offsets of the prefill kernel (with_step_tiles)
    decode_split_ref_len: int = 0         # >0: decode's split-KV partitions sized for this length (CUDA graphs)
    window: int = 0                       # >0: sliding-window layers (a query at p sees (p - window, p])
    single_rows_decode: bool = False      # prefill lists: sequences of 1 new token go to the decode kernel
    single_seqs: torch.Tensor | None = None   # ... their indices, compacted once per step (with_step_tiles)
    single_split: torch.Tensor | None = None  # ... and their split-KV partition offsets (varlen_decode.SPLIT)

    @property
    def num_tokens(self) -> int:
        return self.num_prefill_tokens + self.num_decode_tokens


@dataclass
class GroupedMetadata:
    """One step's metadata for a model with KV groups: one :class:`AttnMetadata` per group."""

    groups: list[AttnMetadata]
    layer_group: tuple[int, ...]          # per model layer: the group whose tables and window it uses

    @property
    def num_tokens(self) -> int:
        return self.groups[0].num_tokens

    @property
    def backend(self) -> str:
        return self.groups[0].backend

    def for_layer(self, layer: int) -> AttnMetadata:
        return self.groups[self.layer_group[layer]]


def layer_meta(meta, layer: int) -> AttnMetadata:
    """The metadata layer ``layer`` attends with (``meta`` itself unless it is grouped)."""
    return meta.for_layer(layer) if isinstance(meta, GroupedMetadata) else meta


def with_step_tiles(meta: AttnMetadata, num_heads: int, num_kv_heads: int) -> AttnMetadata:
    """``meta`` plus the prefill kernel's tile offsets, computed once for every layer of the step (on
    the device, inside a CUDA graph's capture when called from the model's forward)."""
    if isinstance(meta, GroupedMetadata):
        return replace(meta, groups=[with_step_tiles(m, num_heads, num_kv_heads) for m in meta.groups])
    if meta.backend != "triton" or not meta.num_prefill_tokens or meta.prefill_tile_starts is not None:
        return meta
    from kvsim.kernels import varlen_decode
    from kvsim.kernels.prefill import prefill_tile_starts
    single = meta.single_rows_decode
    seqs = varlen_decode.single_token_seqs(meta.prefill_query_start) if single else None
    cu = None
    if single and varlen_decode.SPLIT:
        from kvsim.kernels.varlen_split import split_starts
        cu = split_starts(seqs, meta.prefill_context_lens, meta.window,
                          programs=varlen_decode.decode_programs(meta.prefill_context_lens.device, num_kv_heads))
    return replace(meta, prefill_tile_starts=prefill_tile_starts(meta.prefill_query_start, num_heads // num_kv_heads,
                                                                 skip_single=single),
                   single_seqs=seqs, single_split=cu)


def paged_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
                    v_cache: torch.Tensor, meta: AttnMetadata, scale: float, *, write: bool = True) -> torch.Tensor:
    """q ``[T, Hq, D]``, k/v ``[T, Hkv, D]``; caches ``[num_blocks, block_size, Hkv, D]``. Returns ``[T, Hq, D]``.
    ``write=False``: the step's K/V are already in the caches (written by a fused RoPE kernel)."""
    be = meta.backend
    if be == "none":          # calibration only: time everything but attention
        return q
    from kvsim.kernels import paged_decode_attention, paged_prefill_attention, write_kv
    if write:
        write_kv(k, v, k_cache, v_cache, meta.slot_mapping, backend=be)
    out = torch.empty_like(q)
    p = meta.num_prefill_tokens
    if p:
        single = meta.single_rows_decode
        paged_prefill_attention(q[:p], k_cache, v_cache, meta.prefill_block_tables,
                                meta.prefill_query_start, meta.prefill_context_lens, scale,
                                max_query_len=meta.max_prefill_query_len, out=out[:p],
                                cu_tiles=meta.prefill_tile_starts, backend=be, window=meta.window, skip_single=single)
        if single:
            from kvsim.kernels.varlen_decode import paged_varlen_decode_attention
            paged_varlen_decode_attention(q[:p], k_cache, v_cache, meta.prefill_block_tables, meta.prefill_query_start,
                                          meta.prefill_context_lens, scale, out=out[:p], single_seqs=meta.single_seqs,
                                          backend=be, window=meta.window, split=meta.single_split is not None or None,
                                          split_cu=meta.single_split)
    if meta.num_decode_tokens:
        paged_decode_attention(q[p:], k_cache, v_cache, meta.decode_block_tables, meta.decode_context_lens,
                               scale, max_context_len=meta.max_decode_context_len, out=out[p:], backend=be,
                               split_ref_len=meta.decode_split_ref_len or None, window=meta.window)
    return out
