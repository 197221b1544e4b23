"""Attention over the paged KV cache, for one layer of one engine step.

Token order inside a step: all prefill tokens first (sequence by sequence),
then one token per decoding sequence. :class:`AttnMetadata` carries what the
kernels need; :func:`paged_attention` writes the step's new K/V into the cache
(``slot_mapping``) and then attends: prefill tokens causally over their
sequence's cached context plus themselves, decode tokens over their whole
context. Backends: ``"triton"`` (kvsim.kernels) or ``"torch"`` (the float64
references, for CPU tests).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


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

    @property
    def num_tokens(self) -> int:
        return self.num_prefill_tokens + self.num_decode_tokens


def paged_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
                    v_cache: torch.Tensor, meta: AttnMetadata, scale: float) -> torch.Tensor:
    """q ``[T, Hq, D]``, k/v ``[T, Hkv, D]``; caches ``[num_blocks, block_size, Hkv, D]``. Returns ``[T, Hq, D]``."""
    be = meta.backend
    if be == "none":          # calibration only: time everything but attention
        return q
    from kvsim.kernels import paged_decode_attention, paged_prefill_attention, write_kv
    write_kv(k, v, k_cache, v_cache, meta.slot_mapping, backend=be)
    out = torch.empty_like(q)
    p = meta.num_prefill_tokens
    if p:
        paged_prefill_attention(q[:p], k_cache, v_cache, meta.prefill_block_tables,
                                meta.prefill_query_start, meta.prefill_context_lens, scale,
                                max_query_len=meta.max_prefill_query_len, out=out[:p], backend=be)
    if meta.num_decode_tokens:
        paged_decode_attention(q[p:], k_cache, v_cache, meta.decode_block_tables, meta.decode_context_lens,
                               scale, max_context_len=meta.max_decode_context_len, out=out[p:], backend=be)
    return out
