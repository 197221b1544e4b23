"""Triton decode-attention kernels shared by the paged and the contiguous wrappers.

One kernel body serves both layouts (constexpr ``PAGED``), so the paged-vs-contiguous comparison
measures exactly the block-table indirection and nothing else.

Work decomposition: one program per (sequence, KV head, split). The program loads the query
vectors of *all* ``G = num_q_heads // num_kv_heads`` query heads that share the KV head as a
``[G_PAD, BLOCK_D]`` tile (``G_PAD = max(16, next_pow2(G))`` because ``tl.dot`` wants M >= 16; padded
rows are masked), then walks the context in tiles of ``BLOCK_N`` token positions. Each K/V tile
is loaded once per KV head and used by all G heads (GQA reuse). For a paged cache every token
position ``p`` maps to ``block_table[seq, p // BLOCK_SIZE]`` and offset ``p % BLOCK_SIZE``; the
gather is done per row, so a tile may span many physical blocks (block size 1 ... 256 all use
the same tile, which keeps the arithmetic identical across block sizes). Head dims that are not
powers of two (80, 96) are padded to ``BLOCK_D`` with masks.

Softmax is online (running max ``m``, running sum ``l``) in float32, in the log2 domain
(``scale * log2(e)`` folded into the scores, ``exp2``). With ``SPLIT`` the context is cut into
partitions of ``tokens_per_split`` positions (flash-decoding); each program writes its unnormalised
fp32 accumulator and its ``m``/``l`` and :func:`_reduce_kernel` merges the partitions.

Sliding window (``window`` > 0): the query at position ``ctx - 1`` attends to positions
``ctx - window .. ctx - 1`` only, so the walk (and the split partitions) start at
``max(ctx - window, 0)``; blocks before it are never read (their table entries may be stale).
The kernel takes ``win = window`` or, for full attention, :data:`NO_WINDOW`.
"""
from __future__ import annotations

import triton
import triton.language as tl

# the split plan (plain Python, importable without triton), re-exported: kvsim.kernels.decode_splits
from kvsim.kernels.decode_splits import (MAX_SPLITS, MIN_SPLIT_TOKENS, NO_SPLIT_WAVES, NO_WINDOW,  # noqa: F401
                                         SPLIT_TARGET_WAVES, choose_num_splits, kernel_window, split_partition)


@triton.jit
def _table(bt_row, pos, hi, BLOCK_SIZE: tl.constexpr, PAGED: tl.constexpr):
    """Physical block of each position (int64); zeros for the contiguous layout."""
    if PAGED:
        phys = tl.load(bt_row + pos // BLOCK_SIZE, mask=pos < hi, other=0).to(tl.int64)
    else:
        phys = tl.zeros(pos.shape, tl.int64)
    return phys


@triton.jit
def _load_kv(k_ptr, v_ptr, phys, seq, pos, hi, offs_d, d_mask, k_head, v_head,
             stride_kb, stride_kt, stride_vb, stride_vt,
             HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_SIZE: tl.constexpr,
             PAGED: tl.constexpr):
    """Load the ``[BLOCK_N, BLOCK_D]`` K and V tiles of positions ``pos`` (rows >= hi masked)."""
    n_mask = pos < hi
    if PAGED:
        off = (pos % BLOCK_SIZE).to(tl.int64)
        row_k = phys * stride_kb + off * stride_kt + k_head
        row_v = phys * stride_vb + off * stride_vt + v_head
    else:
        row_k = seq.to(tl.int64) * stride_kb + pos.to(tl.int64) * stride_kt + k_head
        row_v = seq.to(tl.int64) * stride_vb + pos.to(tl.int64) * stride_vt + v_head
    if BLOCK_D == HEAD_DIM:
        kv_mask = n_mask[:, None]
    else:
        kv_mask = n_mask[:, None] & d_mask[None, :]
    k = tl.load(k_ptr + row_k[:, None] + offs_d[None, :], mask=kv_mask, other=0.0)
    v = tl.load(v_ptr + row_v[:, None] + offs_d[None, :], mask=kv_mask, other=0.0)
    return k, v


@triton.jit
def _update(q, k, v, n_mask, m_i, l_i, acc, scale_log2, DOT_F32: tl.constexpr):
    """One online-softmax step over a K/V tile (fp32 state; log2 domain)."""
    if DOT_F32:
        k = k.to(tl.float32)
    s = tl.dot(q, tl.trans(k)) * scale_log2
    s = tl.where(n_mask[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    if DOT_F32:
        acc = acc * alpha[:, None] + tl.dot(p, v.to(tl.float32))
    else:
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return m_new, l_i, acc


@triton.jit
def _decode_kernel(
    q_ptr, k_ptr, v_ptr, bt_ptr, ctx_ptr, out_ptr, m_ptr, l_ptr,
    scale_log2,
    stride_qs, stride_qh,
    stride_kb, stride_kt, stride_kh,
    stride_vb, stride_vt, stride_vh,
    stride_bts,
    stride_os, stride_oh,
    tokens_per_split, win,
    G: tl.constexpr, G_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_SIZE: tl.constexpr, PAGED: tl.constexpr,
    SPLIT: tl.constexpr, DOT_F32: tl.constexpr, PIPE: tl.constexpr,
):
    seq = tl.program_id(0)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    ctx = tl.load(ctx_ptr + seq)
    lo = tl.maximum(ctx - win, 0) + split * tokens_per_split    # a sliding window starts at ctx - win
    hi = tl.minimum(lo + tokens_per_split, ctx)

    offs_g = tl.arange(0, G_PAD)
    offs_d = tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    g_mask = offs_g < G
    d_mask = offs_d < HEAD_DIM
    heads = kvh * G + offs_g
    q = tl.load(q_ptr + seq.to(tl.int64) * stride_qs + heads[:, None] * stride_qh + offs_d[None, :],
                mask=g_mask[:, None] & d_mask[None, :], other=0.0)
    if DOT_F32:
        q = q.to(tl.float32)

    m_i = tl.full([G_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([G_PAD], tl.float32)
    acc = tl.zeros([G_PAD, BLOCK_D], tl.float32)
    k_head = kvh.to(tl.int64) * stride_kh
    v_head = kvh.to(tl.int64) * stride_vh

    bt_row = bt_ptr + seq.to(tl.int64) * stride_bts
    if PIPE == 0:
        # plain loop: Triton's software pipeliner (num_stages) overlaps loads with compute
        for start in range(lo, hi, BLOCK_N):
            pos = start + offs_n
            phys = _table(bt_row, pos, hi, BLOCK_SIZE, PAGED)
            k, v = _load_kv(k_ptr, v_ptr, phys, seq, pos, hi, offs_d, d_mask, k_head, v_head,
                            stride_kb, stride_kt, stride_vb, stride_vt,
                            HEAD_DIM, BLOCK_D, BLOCK_SIZE, PAGED)
            m_i, l_i, acc = _update(q, k, v, pos < hi, m_i, l_i, acc, scale_log2, DOT_F32)
    elif PIPE == 1:
        # the next tile's block-table entries are fetched one iteration ahead
        phys_nx = _table(bt_row, lo + offs_n, hi, BLOCK_SIZE, PAGED)
        for start in range(lo, hi, BLOCK_N):
            pos = start + offs_n
            phys = phys_nx
            k, v = _load_kv(k_ptr, v_ptr, phys, seq, pos, hi, offs_d, d_mask, k_head, v_head,
                            stride_kb, stride_kt, stride_vb, stride_vt,
                            HEAD_DIM, BLOCK_D, BLOCK_SIZE, PAGED)
            phys_nx = _table(bt_row, pos + BLOCK_N, hi, BLOCK_SIZE, PAGED)
            m_i, l_i, acc = _update(q, k, v, pos < hi, m_i, l_i, acc, scale_log2, DOT_F32)
    elif PIPE == 3:
        # block-table entries fetched two tiles ahead (matches a 3-stage software pipeline)
        phys_n1 = _table(bt_row, lo + offs_n, hi, BLOCK_SIZE, PAGED)
        phys_n2 = _table(bt_row, lo + BLOCK_N + offs_n, hi, BLOCK_SIZE, PAGED)
        for start in range(lo, hi, BLOCK_N):
            pos = start + offs_n
            phys = phys_n1
            k, v = _load_kv(k_ptr, v_ptr, phys, seq, pos, hi, offs_d, d_mask, k_head, v_head,
                            stride_kb, stride_kt, stride_vb, stride_vt,
                            HEAD_DIM, BLOCK_D, BLOCK_SIZE, PAGED)
            phys_n1 = phys_n2
            phys_n2 = _table(bt_row, pos + 2 * BLOCK_N, hi, BLOCK_SIZE, PAGED)
            m_i, l_i, acc = _update(q, k, v, pos < hi, m_i, l_i, acc, scale_log2, DOT_F32)
    else:
        # register double buffering: K/V of tile i+1 and the table of tile i+2 are in flight
        # while tile i is computed
        pos0 = lo + offs_n
        phys0 = _table(bt_row, pos0, hi, BLOCK_SIZE, PAGED)
        k_nx, v_nx = _load_kv(k_ptr, v_ptr, phys0, seq, pos0, hi, offs_d, d_mask, k_head, v_head,
                              stride_kb, stride_kt, stride_vb, stride_vt,
                              HEAD_DIM, BLOCK_D, BLOCK_SIZE, PAGED)
        phys_nx = _table(bt_row, pos0 + BLOCK_N, hi, BLOCK_SIZE, PAGED)
        for start in range(lo, hi, BLOCK_N):
            pos = start + offs_n
            k = k_nx
            v = v_nx
            k_nx, v_nx = _load_kv(k_ptr, v_ptr, phys_nx, seq, pos + BLOCK_N, hi, offs_d, d_mask,
                                  k_head, v_head, stride_kb, stride_kt, stride_vb, stride_vt,
                                  HEAD_DIM, BLOCK_D, BLOCK_SIZE, PAGED)
            phys_nx = _table(bt_row, pos + 2 * BLOCK_N, hi, BLOCK_SIZE, PAGED)
            m_i, l_i, acc = _update(q, k, v, pos < hi, m_i, l_i, acc, scale_log2, DOT_F32)

    o_mask = g_mask[:, None] & d_mask[None, :]
    if SPLIT:
        # partial buffer [S, Hq, NSPLIT, HEAD_DIM] and m/l buffers [S, Hq, NSPLIT], all contiguous
        idx = (seq.to(tl.int64) * (tl.num_programs(1) * G) + heads) * tl.num_programs(2) + split
        tl.store(out_ptr + idx[:, None] * HEAD_DIM + offs_d[None, :], acc, mask=o_mask)
        tl.store(m_ptr + idx, m_i, mask=g_mask)
        tl.store(l_ptr + idx, l_i, mask=g_mask)
    else:
        denom = tl.where(l_i > 0, l_i, 1.0)
        o = acc / denom[:, None]
        row = seq.to(tl.int64) * stride_os + heads * stride_oh
        tl.store(out_ptr + row[:, None] + offs_d[None, :], o.to(out_ptr.dtype.element_ty), mask=o_mask)


@triton.jit
def _reduce_kernel(
    part_ptr, m_ptr, l_ptr, out_ptr,
    num_splits,
    stride_os, stride_oh,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, SPLIT_PAD: tl.constexpr,
):
    """Merge the partitions of one (sequence, query head): out = sum_s w_s acc_s / sum_s w_s l_s."""
    seq = tl.program_id(0)
    head = tl.program_id(1)
    num_heads = tl.num_programs(1)
    offs_s = tl.arange(0, SPLIT_PAD)
    offs_d = tl.arange(0, BLOCK_D)
    s_mask = offs_s < num_splits
    d_mask = offs_d < HEAD_DIM
    base = (seq.to(tl.int64) * num_heads + head) * num_splits
    m = tl.load(m_ptr + base + offs_s, mask=s_mask, other=float("-inf"))
    l = tl.load(l_ptr + base + offs_s, mask=s_mask, other=0.0)
    m_max = tl.max(m, 0)
    m_max = tl.where(m_max == float("-inf"), 0.0, m_max)
    w = tl.exp2(m - m_max)
    denom = tl.sum(w * l, 0)
    denom = tl.where(denom > 0, denom, 1.0)
    part = tl.load(part_ptr + (base + offs_s)[:, None] * HEAD_DIM + offs_d[None, :],
                   mask=s_mask[:, None] & d_mask[None, :], other=0.0)
    o = tl.sum(part * w[:, None], 0) / denom
    tl.store(out_ptr + seq.to(tl.int64) * stride_os + head * stride_oh + offs_d,
             o.to(out_ptr.dtype.element_ty), mask=d_mask)


# ----------------------------------------------------------------------------- host side (the split plan: decode_splits.py)
def launch_decode(q, k, v, block_table, ctx_lens, out, *, scale, block_size, max_ctx,
                  num_splits, block_n, num_warps, num_stages, dot_f32, pipe=0, tokens_per_split=0, window=0):
    """Launch the decode kernel (and the reduce kernel when ``num_splits > 1``) into ``out``.

    ``block_table is None`` selects the contiguous layout ``[num_seqs, max_ctx, Hkv, D]``; otherwise
    ``k``/``v`` are ``[num_blocks, block_size, Hkv, D]``. ``tokens_per_split`` (a multiple of
    ``block_n``) fixes the partition length; ``num_splits`` is then ignored and follows from
    ``max_ctx``. ``window`` > 0 attends to the last ``window`` positions only (``max_ctx`` may then
    be the windowed span: partitions start at each sequence's window). All validation is the caller's job.
    """
    import torch

    num_seqs, num_q_heads, head_dim = q.shape
    num_kv_heads = k.shape[2]
    group = num_q_heads // num_kv_heads
    g_pad = max(16, triton.next_power_of_2(group))
    block_d = max(16, triton.next_power_of_2(head_dim))
    scale_log2 = scale * 1.4426950408889634
    paged = block_table is not None
    bt = block_table if paged else ctx_lens
    stride_bts = block_table.stride(0) if paged else 0
    win = kernel_window(window)
    max_ctx = min(max_ctx, win)
    if tokens_per_split:
        num_splits = -(-max_ctx // tokens_per_split)
    if num_splits <= 1:
        grid = (num_seqs, num_kv_heads, 1)
        _decode_kernel[grid](
            q, k, v, bt, ctx_lens, out, out, out, scale_log2,
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2), stride_bts,
            out.stride(0), out.stride(1), max(max_ctx, 1), win,
            G=group, G_PAD=g_pad, HEAD_DIM=head_dim, BLOCK_D=block_d, BLOCK_N=block_n,
            BLOCK_SIZE=block_size, PAGED=paged, SPLIT=False, DOT_F32=dot_f32, PIPE=pipe,
            num_warps=num_warps, num_stages=num_stages)
        return out
    per = tokens_per_split
    if not per:
        per = -(-max_ctx // num_splits)
        per = -(-per // block_n) * block_n
    num_splits = -(-max_ctx // per)
    dev = q.device
    n_rows = num_seqs * num_q_heads * num_splits
    ws = torch.empty(n_rows * (head_dim + 2), dtype=torch.float32, device=dev)  # one allocation
    part = ws[: n_rows * head_dim].view(num_seqs, num_q_heads, num_splits, head_dim)
    m = ws[n_rows * head_dim: n_rows * (head_dim + 1)]
    l = ws[n_rows * (head_dim + 1):]
    grid = (num_seqs, num_kv_heads, num_splits)
    _decode_kernel[grid](
        q, k, v, bt, ctx_lens, part, m, l, scale_log2,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), stride_bts,
        part.stride(0), part.stride(1), per, win,
        G=group, G_PAD=g_pad, HEAD_DIM=head_dim, BLOCK_D=block_d, BLOCK_N=block_n,
        BLOCK_SIZE=block_size, PAGED=paged, SPLIT=True, DOT_F32=dot_f32, PIPE=pipe,
        num_warps=num_warps, num_stages=num_stages)
    _reduce_kernel[(num_seqs, num_q_heads)](
        part, m, l, out, num_splits, out.stride(0), out.stride(1),
        HEAD_DIM=head_dim, BLOCK_D=block_d, SPLIT_PAD=max(2, triton.next_power_of_2(num_splits)),
        num_warps=4)
    return out
