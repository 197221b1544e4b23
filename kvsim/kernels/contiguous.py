"""Contiguous-KV decode attention: the paging-overhead baseline.

KV per sequence is one contiguous slab, ``k``/``v``: ``[num_seqs, max_ctx, num_kv_heads,
head_dim]`` (what an Orca-style "reserve max length" allocator gives), with ``context_lens``
``[num_seqs]`` valid tokens each. The kernel is *the same Triton body* as the paged one
(:mod:`kvsim.kernels._attn_decode` with ``PAGED=False``): identical tiles, softmax, GQA grouping
and split-KV heuristic; only the address of token ``p`` differs (``seq * stride + p * stride``
instead of a block-table lookup). So ``paged time / contiguous time - 1`` is the cost of the
indirection, kernel vs kernel.
"""
from __future__ import annotations

import torch

import kvsim.kernels._attn_decode as _attn_decode
import kvsim.kernels.reference as reference
from kvsim.kernels._common import (check_backend, default_scale, dot_f32, max_int, num_sms,
                                   require)
from kvsim.kernels.decode import DEFAULT_CONFIG, DecodeConfig, check_decode_inputs


def contiguous_decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                context_lens: torch.Tensor, scale: float | None = None, *,
                                max_context_len: int | None = None,
                                num_splits: int | None = None, out: torch.Tensor | None = None,
                                config: DecodeConfig = DEFAULT_CONFIG,
                                backend: str = "triton") -> torch.Tensor:
    """Decode attention over contiguous per-sequence KV; arguments as
    :func:`kvsim.kernels.decode.paged_decode_attention` minus the block table."""
    check_decode_inputs(q, k, v, context_lens, paged=False)
    require(k.shape[0] == q.shape[0], "k", f"first dim {k.shape[0]} must equal num_seqs {q.shape[0]}")
    check_backend(backend, q, k, v, context_lens)
    scale = default_scale(q.shape[-1], scale)
    if out is None:
        out = torch.empty_like(q)
    if backend == "torch":
        out.copy_(reference.contiguous_decode(q, k, v, context_lens, scale))
        return out
    max_ctx = max_int(context_lens, max_context_len)
    if num_splits is None:
        num_splits = _attn_decode.choose_num_splits(q.shape[0], k.shape[2], max_ctx,
                                                    num_sms(q.device), config.block_n,
                                                    config.split_waves)
    return _attn_decode.launch_decode(
        q, k, v, None, context_lens, out, scale=scale, block_size=1, max_ctx=max_ctx,
        num_splits=int(num_splits), block_n=config.block_n, num_warps=config.num_warps,
        num_stages=config.num_stages, dot_f32=dot_f32(q.dtype), pipe=config.pipe)
