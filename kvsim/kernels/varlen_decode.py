"""Decode attention for the one-token sequences of a varlen batch (a mixed step's decode rows).

A mixed prefill+decode step is laid out as one varlen batch (:func:`kvsim.engine.attention.as_unified`):
every decoding sequence is a chunk of one new token over its cached context. The prefill kernel serves
such a row with a 64-row query tile of which only ``G`` rows (the query heads of one KV head) are live;
this kernel serves it the way the decode kernel does, with a ``[G_PAD, head_dim]`` query tile, while the
prefill kernel skips those sequences (``prefill_tile_starts(..., skip_single=True)``).

Everything is read from device memory, so the launch never syncs and a CUDA graph captures it at a fixed
grid whatever the step holds:

* :func:`single_token_seqs` compacts, once per step, the indices of the sequences with exactly one new
  token into ``list[0 .. count - 1]`` and stores ``count`` at ``list[num_seqs]`` (a cumsum and a scatter).
* The kernel is persistent: ``min(num_seqs, PERSISTENT_WAVES * num_sms / num_kv_heads)`` programs per KV
  head walk that list. A graph captured for 256 sequences therefore starts a few hundred programs, not
  one per possible sequence that would mostly find nothing to do (measured on the H200: one program per
  (sequence, KV head) cost ~0.6 ms a Llama-3-8B step in exits alone).

Sequence ``s`` is served over ``context_lens[s] + 1`` positions (``context_lens`` counts the cached tokens
before the new one, the prefill kernel's convention); its row is ``query_start_loc[s]``. Never split: a
long context is walked by one program, as in the prefill kernel.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

import kvsim.kernels.reference as reference
from kvsim.kernels._attn_decode import _load_kv, _table, _update, kernel_window
from kvsim.kernels._common import check_varlen_inputs, default_scale, dot_f32, num_sms, require

PERSISTENT_WAVES = 4
"""Programs per SM (summed over KV heads)."""


def decode_programs(device: torch.device, num_kv_heads: int) -> int:
    """Persistent programs per KV head on ``device`` (the simulator prices the same count without torch:
    :func:`kvsim.cost.mixed_rows.programs_per_kv_head`)."""
    return max(1, PERSISTENT_WAVES * num_sms(device) // num_kv_heads)
SPLIT = False
"""Default of ``paged_varlen_decode_attention(split=...)``: cut a step's rows into partitions when few long rows
would leave programs idle (:mod:`kvsim.kernels.varlen_split`; a step that cuts none runs this module's kernel).
Off: measured on H100s (``benchmarks/engine/results_H100/split_1207f``, ``benchmarks/engine/mixed_steps.py``'s
``+split`` setting) it sped mixed steps of few long rows 1.07-1.32x and slowed those of 64-192 rows 3-9%; gated
beside this kernel and cutting rows only below :data:`~kvsim.kernels.varlen_split.CUT_BELOW` of the programs
(``results_H100/split_1207g``, call 2) it kept 1.04-1.30x and slowed nothing beyond the bench's spread. Still off:
the committed profiles were measured without it, and :mod:`kvsim.cost.mixed_rows` prices this kernel's programs."""


@triton.jit
def _kv_head_lanes(kvh, stride_kh, stride_vh, G: tl.constexpr, G_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
                   BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """KV head ``kvh``'s lanes: the query heads it serves and their mask, the head-dim and position offsets
    and mask, and its offsets into the K and V caches. Shared by the plain and the split kernel."""
    offs_g = tl.arange(0, G_PAD)
    offs_d = tl.arange(0, BLOCK_D)
    g_mask = offs_g < G
    return (kvh * G + offs_g, g_mask, offs_d, offs_d < HEAD_DIM, tl.arange(0, BLOCK_N),
            kvh.to(tl.int64) * stride_kh, kvh.to(tl.int64) * stride_vh)


@triton.jit
def _attend_row(q_ptr, k_ptr, v_ptr, bt_ptr, seq, row, lo, hi, heads, g_mask, offs_d, d_mask, offs_n, k_head, v_head,
                scale_log2, stride_qt, stride_qh, stride_kb, stride_kt, stride_vb, stride_vt, stride_bts,
                G_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_SIZE: tl.constexpr, DOT_F32: tl.constexpr):
    """Query row ``row``'s heads of one KV head over positions ``lo .. hi-1`` of sequence ``seq``: the online
    softmax state ``(m, l, acc)`` (fp32, log2 domain), unnormalised. Shared by the plain and the split kernel."""
    q = tl.load(q_ptr + row * stride_qt + heads[:, None] * stride_qh + offs_d[None, :],
                mask=g_mask[:, None] & d_mask[None, :], other=0.0)
    if DOT_F32:
        q = q.to(tl.float32)
    m_i = tl.full([G_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([G_PAD], tl.float32)
    acc = tl.zeros([G_PAD, BLOCK_D], tl.float32)
    bt_row = bt_ptr + seq.to(tl.int64) * stride_bts
    for start in range(lo, hi, BLOCK_N):
        pos = start + offs_n
        phys = _table(bt_row, pos, hi, BLOCK_SIZE, True)
        k, v = _load_kv(k_ptr, v_ptr, phys, seq, pos, hi, offs_d, d_mask, k_head, v_head,
                        stride_kb, stride_kt, stride_vb, stride_vt, HEAD_DIM, BLOCK_D, BLOCK_SIZE, True)
        m_i, l_i, acc = _update(q, k, v, pos < hi, m_i, l_i, acc, scale_log2, DOT_F32)
    return m_i, l_i, acc


@triton.jit
def _write_row(out_ptr, row, heads, g_mask, offs_d, d_mask, l_i, acc, stride_ot, stride_oh):
    """Output row ``row``'s heads ``heads`` from a whole row's online-softmax state (``l``, ``acc``), normalised.
    Shared by the plain kernel and the split kernel's rows of one partition."""
    o = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    dst = row * stride_ot + heads * stride_oh
    tl.store(out_ptr + dst[:, None] + offs_d[None, :], o.to(out_ptr.dtype.element_ty),
             mask=g_mask[:, None] & d_mask[None, :])


@triton.jit
def _varlen_decode_kernel(
    q_ptr, k_ptr, v_ptr, bt_ptr, qsl_ptr, ctx_ptr, list_ptr, cu_ptr, num_seqs, out_ptr, scale_log2,
    stride_qt, stride_qh, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
    stride_bts, stride_ot, stride_oh, win,
    G: tl.constexpr, G_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_SIZE: tl.constexpr, DOT_F32: tl.constexpr, GATED: tl.constexpr,
):
    count = tl.load(list_ptr + num_seqs)
    if GATED:       # beside the split kernels (split_starts's cu): they serve a step that cuts any row, this one not
        count = tl.where(tl.load(cu_ptr + num_seqs) > count, 0, count)
    heads, g_mask, offs_d, d_mask, offs_n, k_head, v_head = _kv_head_lanes(
        tl.program_id(1), stride_kh, stride_vh, G, G_PAD, HEAD_DIM, BLOCK_D, BLOCK_N)
    for i in range(tl.program_id(0), count, tl.num_programs(0)):
        seq = tl.load(list_ptr + i)
        row = tl.load(qsl_ptr + seq).to(tl.int64)
        hi = tl.load(ctx_ptr + seq) + 1
        lo = tl.maximum(hi - win, 0)
        m_i, l_i, acc = _attend_row(q_ptr, k_ptr, v_ptr, bt_ptr, seq, row, lo, hi, heads, g_mask, offs_d, d_mask,
                                    offs_n, k_head, v_head, scale_log2, stride_qt, stride_qh, stride_kb, stride_kt,
                                    stride_vb, stride_vt, stride_bts, G_PAD, HEAD_DIM, BLOCK_D, BLOCK_N, BLOCK_SIZE,
                                    DOT_F32)
        _write_row(out_ptr, row, heads, g_mask, offs_d, d_mask, l_i, acc, stride_ot, stride_oh)


def single_token_seqs(query_start_loc: torch.Tensor) -> torch.Tensor:
    """int32 ``[num_seqs + 1]``: the indices of the sequences with exactly one new token, packed at the
    front in order, and their count in the last slot. On the device, no sync (CUDA-graph capturable)."""
    qsl = query_start_loc.to(torch.int32)
    n = qsl.shape[0] - 1
    single = (qsl[1:] - qsl[:-1]) == 1
    rank = torch.cumsum(single.to(torch.int32), 0, dtype=torch.int32)
    out = torch.zeros(n + 1, dtype=torch.int32, device=qsl.device)
    dest = torch.where(single, rank - 1, torch.full_like(rank, n)).long()      # others land in the last slot
    out.scatter_(0, dest, torch.arange(n, dtype=torch.int32, device=qsl.device))
    out[n:] = rank[-1:] if n else 0
    return out


def paged_varlen_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                                  block_table: torch.Tensor, query_start_loc: torch.Tensor,
                                  context_lens: torch.Tensor, scale: float | None = None, *,
                                  out: torch.Tensor, single_seqs: torch.Tensor | None = None, block_n: int = 64,
                                  num_warps: int = 4, num_stages: int = 2, backend: str = "triton",
                                  window: int = 0, split: bool | None = None,
                                  split_cu: torch.Tensor | None = None) -> torch.Tensor:
    """Rows of ``out`` for the sequences of exactly one new token (see module doc); other rows untouched.

    Inputs are the prefill kernel's (:func:`kvsim.kernels.paged_prefill_attention`). ``single_seqs``
    (from :func:`single_token_seqs`) saves recomputing the list in every layer of a step. ``split`` (default
    :data:`SPLIT`): partitions of :data:`~kvsim.kernels.varlen_split.SPLIT_TOKENS` positions, merged after
    (``split_cu`` from :func:`~kvsim.kernels.varlen_split.split_starts`, once per step).
    """
    num_seqs = check_varlen_inputs(q, k_cache, v_cache, block_table, query_start_loc, context_lens, backend, window)
    require(out.shape == q.shape and out.dtype == q.dtype, "out", "must have q's shape and dtype")
    scale = default_scale(q.shape[-1], scale)
    if num_seqs == 0 or q.shape[0] == 0:
        return out
    if backend == "torch":
        qsl = query_start_loc.tolist()
        sel = [s for s in range(num_seqs) if qsl[s + 1] - qsl[s] == 1]
        if sel:
            r = torch.tensor([qsl[s] for s in sel], device=q.device)
            out[r] = reference.paged_decode(q[r], k_cache, v_cache, block_table[sel], context_lens[sel] + 1, scale,
                                            window=window).to(out.dtype)
        return out
    if single_seqs is None:
        single_seqs = single_token_seqs(query_start_loc)
    require(single_seqs.shape == (num_seqs + 1,) and single_seqs.dtype == torch.int32, "single_seqs",
            f"must be int32 ({num_seqs + 1},) from single_token_seqs")
    hkv = k_cache.shape[2]
    group = q.shape[1] // hkv
    per_head = decode_programs(q.device, hkv)
    programs = min(num_seqs, per_head)
    gated = bool(SPLIT if split is None else split)
    if gated:           # the split kernels serve a step that cuts a row; the launch below one that cuts none
        from kvsim.kernels.varlen_split import launch_split, split_starts
        if split_cu is None:
            split_cu = split_starts(single_seqs, context_lens, window, programs=per_head)
        launch_split(q, k_cache, v_cache, block_table, query_start_loc, context_lens, single_seqs, out,
                     scale_log2=scale * 1.4426950408889634, win=kernel_window(window), window=window,
                     cu=split_cu, block_n=block_n, num_warps=num_warps, num_stages=num_stages,
                     dot_f32=dot_f32(q.dtype), programs=per_head)
    grid = (programs, hkv)
    _varlen_decode_kernel[grid](
        q, k_cache, v_cache, block_table, query_start_loc, context_lens, single_seqs,
        split_cu if gated else single_seqs, num_seqs, out,
        scale * 1.4426950408889634,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), block_table.stride(0),
        out.stride(0), out.stride(1), kernel_window(window),
        G=group, G_PAD=max(16, triton.next_power_of_2(group)), HEAD_DIM=q.shape[2],
        BLOCK_D=max(16, triton.next_power_of_2(q.shape[2])), BLOCK_N=block_n, BLOCK_SIZE=k_cache.shape[1],
        DOT_F32=dot_f32(q.dtype), GATED=gated, num_warps=num_warps, num_stages=num_stages)
    return out
