"""Split-KV for the varlen decode kernel: a mixed step's few, long decode rows cut into partitions.

:mod:`kvsim.kernels.varlen_decode` gives each one-token sequence one program per KV head that walks its whole
context. With few decode rows and long contexts that is few programs, each long: 8 rows x 2,048 tokens of
Llama-3-8B are 64 programs of 32 KV tiles on a 132-SM card (the H200 profile of such a mixed step,
``benchmarks/engine/results_H200/mixed_1845``, found its attention 3-4x the bandwidth floor). Here every row's
context is cut into partitions of ``SPLIT_TOKENS`` positions (flash-decoding), all computed on the device:

* :func:`split_starts` (once per step): ``cu[i]`` = the first work item of the ``i``-th one-token sequence of
  the compacted list (:func:`~kvsim.kernels.varlen_decode.single_token_seqs`), ``cu[num_seqs]`` the item count,
  ``cu[num_seqs + 1]`` the step's partition length: balanced over the persistent programs (:data:`BALANCED`),
  so that only a step of few long rows is cut finer than whole rows (fixed 512-position partitions sped steps with
  a few long or unequal rows 1.04-1.31x and slowed steps of 32-192 uniform rows 2-7%: ``benchmarks/engine/
  results_H200/calib_0413`` and ``results_H100/split_1127``), and only while its rows are fewer than
  :data:`CUT_BELOW` of the programs (more rows already give every program one of its own).
  A row gets ``positions // length`` partitions (at least one), the last running to its end, so no row ends in
  a sliver of a partition (1,025 positions at a 1,024 length are one partition, not 1,024 + 1).
* :func:`_split_kernel`: persistent programs (per KV head) loop over the items; an item finds its sequence by
  bisection over ``cu`` (as prefill tiles do). A row of one partition is written to the output there and then;
  a partition of a cut row writes the unnormalised fp32 accumulator and its ``m``/``l``.
* :func:`_merge_kernel`: persistent programs loop over the sequences, merge the partitions of the cut rows for
  all query heads at once and write their output rows.
* A step that cuts no row (``cu[num_seqs]``, its item count, equals its row count) is left to the plain
  :func:`~kvsim.kernels.varlen_decode._varlen_decode_kernel`, launched beside these with ``GATED``: each of the
  three reads the two counts on the device and only one does the work, so a CUDA graph holds all three. Balanced
  steps of 64-192 uniform rows ran 3-9% slower through the split kernels than through the plain one on an H100,
  whether every row went through the merge or whole rows were written by the split kernel
  (``benchmarks/engine/results_H100/split_1207f``).

The partial buffers are sized on the host for the worst case the block tables allow (``num_seqs x
ceil(positions / SPLIT_TOKENS)``), so no launch syncs and a CUDA graph captures both at fixed grids.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kvsim.kernels.varlen_decode import _attend_row, _kv_head_lanes, _write_row

SPLIT_TOKENS = 512
"""Shortest partition (positions)."""
BALANCED = True
"""Partitions sized per step for the work at hand (:func:`split_starts` with ``programs``): at least
:data:`SPLIT_TOKENS` positions, longer when the step's listed positions would give more partitions than
persistent programs (so many uniform rows are left whole). Off: every partition :data:`SPLIT_TOKENS` long."""
ALIGN = 64
"""A balanced partition's length is a multiple of this (the kernels' default KV tile)."""
CUT_BELOW = 0.5
"""A balanced step cuts rows only while its listed rows are fewer than this fraction of the persistent programs
per KV head; from there on every row is one partition (so the gated plain kernel serves the step). Uncut, each such
row already has a program of its own, and the split kernel's item loop cost more than the idle programs it fills:
on an H100 (``benchmarks/engine/results_H100/split_1207g``, 66 programs a KV head) gated without this, 8-24 long
rows gained 1.05-1.26x and 64 unequal rows lost 7%; with it (call 2) 1.04-1.30x and 1.00x."""
WHOLE = 1 << 30
"""The partition length that leaves every row whole (one partition each)."""


@triton.jit
def _split_kernel(
    q_ptr, k_ptr, v_ptr, bt_ptr, qsl_ptr, ctx_ptr, list_ptr, cu_ptr, num_seqs, part_ptr, m_ptr, l_ptr, out_ptr,
    scale_log2, stride_qt, stride_qh, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh, stride_bts,
    stride_ot, stride_oh, win,
    G: tl.constexpr, G_PAD: tl.constexpr, NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_SIZE: tl.constexpr, DOT_F32: tl.constexpr,
):
    total = tl.load(cu_ptr + num_seqs)
    total = tl.where(total > tl.load(list_ptr + num_seqs), total, 0)   # no row cut: the plain kernel's step
    per = tl.load(cu_ptr + num_seqs + 1)        # this step's partition length (split_starts)
    heads, g_mask, offs_d, d_mask, offs_n, k_head, v_head = _kv_head_lanes(
        tl.program_id(1), stride_kh, stride_vh, G, G_PAD, HEAD_DIM, BLOCK_D, BLOCK_N)
    for t in range(tl.program_id(0), total, tl.num_programs(0)):
        lo_i = 0
        hi_i = num_seqs
        while lo_i < hi_i:                      # the sequence whose items hold t
            mid = (lo_i + hi_i) // 2
            if tl.load(cu_ptr + mid + 1) <= t:
                lo_i = mid + 1
            else:
                hi_i = mid
        seq = tl.load(list_ptr + lo_i)
        first = tl.load(cu_ptr + lo_i)
        parts = tl.load(cu_ptr + lo_i + 1) - first
        part = t - first
        row = tl.load(qsl_ptr + seq).to(tl.int64)
        end = tl.load(ctx_ptr + seq) + 1
        lo = tl.maximum(end - win, 0) + part * per
        hi = tl.where(part == parts - 1, end, tl.minimum(lo + per, end))     # the last partition runs to the end
        m_i, l_i, acc = _attend_row(q_ptr, k_ptr, v_ptr, bt_ptr, seq, row, lo, hi, heads, g_mask, offs_d, d_mask,
                                    offs_n, k_head, v_head, scale_log2, stride_qt, stride_qh, stride_kb, stride_kt,
                                    stride_vb, stride_vt, stride_bts, G_PAD, HEAD_DIM, BLOCK_D, BLOCK_N, BLOCK_SIZE,
                                    DOT_F32)
        if parts == 1:                                  # a whole row: its output now, nothing to merge
            _write_row(out_ptr, row, heads, g_mask, offs_d, d_mask, l_i, acc, stride_ot, stride_oh)
        else:
            idx = (heads + t * NUM_HEADS).to(tl.int64)      # [items, heads] (and [items, heads, head_dim])
            tl.store(part_ptr + idx[:, None] * HEAD_DIM + offs_d[None, :], acc,
                     mask=g_mask[:, None] & d_mask[None, :])
            tl.store(m_ptr + idx, m_i, mask=g_mask)
            tl.store(l_ptr + idx, l_i, mask=g_mask)


@triton.jit
def _merge_kernel(
    qsl_ptr, list_ptr, cu_ptr, num_seqs, part_ptr, m_ptr, l_ptr, out_ptr, stride_ot, stride_oh,
    NUM_HEADS: tl.constexpr, H_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
):
    count = tl.load(list_ptr + num_seqs)
    count = tl.where(tl.load(cu_ptr + num_seqs) > count, count, 0)     # no row cut: the plain kernel's step
    offs_h = tl.arange(0, H_PAD)
    offs_d = tl.arange(0, BLOCK_D)
    h_mask = offs_h < NUM_HEADS
    mask = h_mask[:, None] & (offs_d < HEAD_DIM)[None, :]
    for i in range(tl.program_id(0), count, tl.num_programs(0)):
        first = tl.load(cu_ptr + i)
        last = tl.load(cu_ptr + i + 1)
        if last - first > 1:                # a row of one partition was written whole by the split kernel
            row = tl.load(qsl_ptr + tl.load(list_ptr + i)).to(tl.int64)
            m_run = tl.full([H_PAD], float("-inf"), tl.float32)
            l_run = tl.zeros([H_PAD], tl.float32)
            acc = tl.zeros([H_PAD, BLOCK_D], tl.float32)
            for t in range(first, last):
                idx = (offs_h + t * NUM_HEADS).to(tl.int64)
                m = tl.load(m_ptr + idx, mask=h_mask, other=float("-inf"))
                m_new = tl.maximum(m_run, m)
                m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
                a_old = tl.exp2(m_run - m_use)
                a_new = tl.exp2(m - m_use)
                l_run = l_run * a_old + tl.load(l_ptr + idx, mask=h_mask, other=0.0) * a_new
                acc = acc * a_old[:, None] + tl.load(part_ptr + idx[:, None] * HEAD_DIM + offs_d[None, :], mask=mask,
                                                     other=0.0) * a_new[:, None]
                m_run = m_new
            o = acc / tl.where(l_run > 0, l_run, 1.0)[:, None]
            tl.store(out_ptr + row * stride_ot + offs_h[:, None] * stride_oh + offs_d[None, :],
                     o.to(out_ptr.dtype.element_ty), mask=mask)


def split_starts(single_seqs: torch.Tensor, context_lens: torch.Tensor, window: int = 0,
                 per: int | None = None, programs: int | None = None) -> torch.Tensor:
    """int32 ``[num_seqs + 2]``: prefix sums of the partitions of each listed one-token sequence (its
    ``context_lens + 1`` positions, or its window; ``positions // length`` of them, at least one, the last one
    longer), 0 past the list's count, then the partition length in the last slot. The length is ``per`` when given; else, with ``programs`` (persistent programs per KV head) and
    :data:`BALANCED`, the listed positions over ``programs`` rounded up to :data:`ALIGN`, at least
    :data:`SPLIT_TOKENS`, or :data:`WHOLE` once the listed rows reach :data:`CUT_BELOW` of ``programs``; else
    :data:`SPLIT_TOKENS`. On the device, no sync."""
    n = context_lens.shape[0]
    idx = single_seqs[:n].long()
    span = context_lens.to(torch.int32)[idx] + 1
    if window:
        span = torch.clamp(span, max=int(window))
    live = torch.arange(n, device=span.device) < single_seqs[n:]
    span = torch.where(live, span, torch.zeros_like(span))
    if per is None and programs and BALANCED:
        even = (span.sum(dtype=torch.int32) + (programs - 1)) // programs
        length = torch.clamp((even + (ALIGN - 1)) // ALIGN * ALIGN, min=SPLIT_TOKENS).to(torch.int32)
        crowded = single_seqs[n].to(torch.float32) >= CUT_BELOW * programs     # rows enough to fill the programs
        length = torch.where(crowded, torch.full_like(length, WHOLE), length)
    else:
        length = torch.full((), per or SPLIT_TOKENS, dtype=torch.int32, device=span.device)
    cu = torch.zeros(n + 2, dtype=torch.int32, device=span.device)
    parts = torch.where(live, torch.clamp(span // length, min=1), torch.zeros_like(span))   # the last one longer
    torch.cumsum(parts, 0, out=cu[1:n + 1])
    cu[n + 1:] = length
    return cu


def launch_split(q, k_cache, v_cache, block_table, query_start_loc, context_lens, single_seqs, out, *, scale_log2,
                 win, window, cu, block_n, num_warps, num_stages, dot_f32, programs) -> torch.Tensor:
    """Both launches (partials, merge) into ``out``'s rows of the listed sequences when ``cu`` (from
    :func:`split_starts`) cuts any row; when it cuts none they write nothing and the plain kernel, launched gated
    beside them, serves the step. The caller checked inputs."""
    num_seqs = context_lens.shape[0]
    hkv, heads, dim = k_cache.shape[2], q.shape[1], q.shape[2]
    positions = block_table.shape[1] * k_cache.shape[1]
    items = num_seqs * -(-(min(positions, window) if window else positions) // SPLIT_TOKENS)
    ws = torch.empty(items * heads * (dim + 2), dtype=torch.float32, device=q.device)
    part, m, l = ws[:items * heads * dim], ws[items * heads * dim:items * heads * (dim + 1)], ws[items * heads * (dim + 1):]
    group = heads // hkv
    block_d = max(16, triton.next_power_of_2(dim))
    _split_kernel[(max(1, programs), hkv)](
        q, k_cache, v_cache, block_table, query_start_loc, context_lens, single_seqs, cu, num_seqs, part, m, l, out,
        scale_log2, q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), block_table.stride(0), out.stride(0), out.stride(1),
        win,
        G=group, G_PAD=max(16, triton.next_power_of_2(group)), NUM_HEADS=heads, HEAD_DIM=dim, BLOCK_D=block_d,
        BLOCK_N=block_n, BLOCK_SIZE=k_cache.shape[1], DOT_F32=dot_f32, num_warps=num_warps, num_stages=num_stages)
    _merge_kernel[(max(1, min(num_seqs, programs * hkv)),)](
        query_start_loc, single_seqs, cu, num_seqs, part, m, l, out, out.stride(0), out.stride(1),
        NUM_HEADS=heads, H_PAD=max(16, triton.next_power_of_2(heads)), HEAD_DIM=dim, BLOCK_D=block_d, num_warps=4)
    return out
