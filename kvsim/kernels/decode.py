"""Paged decode attention (PagedAttention / vLLM layout): one new query token per sequence.

Layout (the one vLLM's Triton backends use, and the simplest for a gathered tile):

* ``q``: ``[num_seqs, num_q_heads, head_dim]``; output has the same shape and dtype.
* ``k_cache``, ``v_cache``: ``[num_blocks, block_size, num_kv_heads, head_dim]``. One token's
  head vector is ``head_dim`` contiguous elements (256 bytes at fp16 x 128), so a tile of
  ``BLOCK_N`` token rows is ``BLOCK_N`` coalesced 256-byte reads wherever the blocks live; the same
  layout serves every block size 1 ... 256 and the cache-write kernel writes one token as
  ``num_kv_heads * head_dim`` contiguous elements.
* ``block_table``: ``[num_seqs, max_blocks]`` int32, physical block of each logical block.
* ``context_lens``: ``[num_seqs]`` int32, tokens in the cache per sequence (the new token's K/V
  must already be written). Length 0 yields zeros.

fp16 and bf16 (fp32 accepted too), MHA and GQA (``num_q_heads % num_kv_heads == 0``; all query
heads of a KV head are processed by one program so each KV tile is loaded once per KV head), any
head dim <= 256 (64/80/96/128 tested; non-powers of two are masked), any power-of-two block size
1 ... 256. Scale defaults to ``1/sqrt(head_dim)``; softmax is online with fp32 accumulation.

Split-KV (flash-decoding): when there are too few (sequence, KV head) programs to fill the GPU
the context is cut into partitions and a reduce kernel merges them. ``num_splits=None`` applies
the heuristic :func:`kvsim.kernels._attn_decode.choose_num_splits`; ``1`` forces the single-pass
kernel; ``n > 1`` forces (about) ``n`` partitions.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

import kvsim.kernels._attn_decode as _attn_decode
import kvsim.kernels.reference as reference
from kvsim.kernels._common import (check_backend, check_dtype, check_int_index, default_scale,
                                   dot_f32, is_pow2, max_int, num_sms, require)


@dataclass(frozen=True)
class DecodeConfig:
    """Launch parameters of the decode kernel (tuned on the GPU, see kernels/NOTES.md)."""

    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 2
    pipe: int = 0
    """0 (default): rely on Triton's pipeliner; 1: prefetch the next tile's block-table entries
    one iteration ahead; 2: register double-buffering of K/V (spills, 20 % slower); 3: table
    entries two tiles ahead. On the H200, 1 was within 1 % of 0 where the kernel splits and 9 %
    slower on batch 32 x 8192 MHA (no split), 3 slower everywhere: see NOTES.md. The contiguous
    layout has no table, so 0, 1 and 3 compile to the same loop there."""
    split_waves: int = _attn_decode.SPLIT_TARGET_WAVES
    """Split-KV heuristic target: aim for ``split_waves * num_sms`` programs."""


DEFAULT_CONFIG = DecodeConfig()


def check_qkv(q, k, v) -> None:
    """Shape/dtype checks of the query rows and the caches (one-line errors)."""
    require(q.dim() == 3, "q", f"shape {tuple(q.shape)} must be [num_seqs, num_q_heads, head_dim]")
    require(k.dim() == 4 and k.shape == v.shape, "k_cache",
            f"shape {tuple(k.shape)} must be 4-D and equal v's {tuple(v.shape)}")
    check_dtype("q", q)
    require(k.dtype == q.dtype and v.dtype == q.dtype, "k_cache",
            f"dtype {k.dtype}/{v.dtype} must equal q's {q.dtype}")
    require(k.shape[3] == q.shape[2], "head_dim", f"{q.shape[2]} (q) != {k.shape[3]} (cache)")
    require(q.shape[2] <= 256, "head_dim", f"{q.shape[2]} must be <= 256")
    require(q.shape[1] % k.shape[2] == 0, "num_kv_heads",
            f"{k.shape[2]} must divide num_q_heads={q.shape[1]}")
    for name, t in (("q", q), ("k_cache", k), ("v_cache", v)):
        require(t.stride(-1) == 1, name, "last dimension must be contiguous")


def check_decode_inputs(q, k, v, context_lens, *, paged: bool, block_table=None) -> None:
    """Shape/dtype checks shared by the paged and contiguous wrappers (one-line errors)."""
    check_qkv(q, k, v)
    check_int_index("context_lens", context_lens)
    require(context_lens.shape == (q.shape[0],), "context_lens",
            f"shape {tuple(context_lens.shape)} must be ({q.shape[0]},)")
    if paged:
        require(is_pow2(k.shape[1]) and k.shape[1] <= 256, "block_size",
                f"{k.shape[1]} must be a power of two in 1..256")
        check_int_index("block_table", block_table)
        require(block_table.dim() == 2 and block_table.shape[0] == q.shape[0], "block_table",
                f"shape {tuple(block_table.shape)} must be [{q.shape[0]}, max_blocks]")


def paged_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                           block_table: torch.Tensor, context_lens: torch.Tensor,
                           scale: float | None = None, *, max_context_len: int | None = None,
                           num_splits: int | None = None, split_ref_len: int | None = None, out: torch.Tensor | None = None,
                           config: DecodeConfig = DEFAULT_CONFIG,
                           backend: str = "triton", window: int = 0) -> torch.Tensor:
    """Attention of each sequence's single query token over its paged KV cache.

    ``window`` > 0 (a sliding-window layer): the query at position ``ctx - 1`` attends to the last
    ``window`` positions ``ctx - window .. ctx - 1`` only; block-table entries before them are never
    read (they may be stale, e.g. -1 for blocks freed out of the window). 0 = full attention.

    ``max_context_len`` (>= every context length) sizes the split partitions; if omitted it is
    read from ``context_lens`` with one device sync. ``split_ref_len`` (>= ``max_context_len``) takes
    the split partition length from that reference instead (see
    :func:`kvsim.kernels._attn_decode.split_partition`: CUDA graphs pass the model's longest sequence,
    so the work does not depend on the engine's ``max_model_len``). ``out`` may be given to avoid an
    allocation.
    Returns ``out`` (``[num_seqs, num_q_heads, head_dim]``, dtype of ``q``).
    """
    check_decode_inputs(q, k_cache, v_cache, context_lens, paged=True, block_table=block_table)
    check_backend(backend, q, k_cache, v_cache, block_table, context_lens)
    require(isinstance(window, int) and window >= 0, "window", f"got {window!r}, expected tokens >= 0 (0 = full)")
    scale = default_scale(q.shape[-1], scale)
    if out is None:
        out = torch.empty_like(q)
    if backend == "torch":
        out.copy_(reference.paged_decode(q, k_cache, v_cache, block_table, context_lens, scale, window=window))
        return out
    max_ctx = max_int(context_lens, max_context_len)
    if window:
        max_ctx = min(max_ctx, window)
        split_ref_len = split_ref_len and min(int(split_ref_len), window)
    per = 0
    if num_splits is None and split_ref_len:
        per = _attn_decode.split_partition(q.shape[0], k_cache.shape[2], max(int(split_ref_len), max_ctx),
                                           num_sms(q.device), config.block_n, config.split_waves)
        num_splits = 1
    elif num_splits is None:
        num_splits = _attn_decode.choose_num_splits(q.shape[0], k_cache.shape[2], max_ctx,
                                                    num_sms(q.device), config.block_n,
                                                    config.split_waves)
    return _attn_decode.launch_decode(
        q, k_cache, v_cache, block_table, context_lens, out, scale=scale,
        block_size=k_cache.shape[1], max_ctx=max_ctx, num_splits=int(num_splits),
        block_n=config.block_n, num_warps=config.num_warps, num_stages=config.num_stages,
        dot_f32=dot_f32(q.dtype), pipe=config.pipe, tokens_per_split=per, window=window)


def decode_bytes(num_seqs: int, mean_ctx: float, num_kv_heads: int, head_dim: int,
                 elem_bytes: int) -> float:
    """Bytes of K and V a decode step must read (the floor the bandwidth numbers divide by)."""
    return 2.0 * num_seqs * mean_ctx * num_kv_heads * head_dim * elem_bytes
