"""Paged prefill / prefix attention: new query tokens against cached context plus themselves.

Design (the simplest correct one): the new tokens' K/V are first written into the paged cache
by :func:`kvsim.kernels.cache_ops.write_kv`; this kernel then reads *everything* — cached prefix
and new tokens alike — through the block table. One launch handles a variable-length batch:

* ``q``: ``[total_new_tokens, num_q_heads, head_dim]``, sequence ``s`` owns rows
  ``query_start_loc[s] .. query_start_loc[s+1]`` (cu_seqlens style, int32, length num_seqs+1).
* ``context_lens``: ``[num_seqs]`` int32, cached tokens *before* the new ones (0 for a plain prompt,
  > 0 for prefix caching or chunked prefill). New token ``i`` sits at position ``ctx + i`` and
  attends causally to cache positions ``0 .. ctx + i`` (with a ``window``: ``ctx + i - window + 1 ..``).
* caches and ``block_table`` as in :mod:`kvsim.kernels.decode`.

Grid: (query tile, KV head), the tiles of all sequences laid end to end: sequence ``s`` owns
``ceil(q_len_s / TQ)`` consecutive tiles, and a program finds its sequence by bisection over
their prefix sums (computed on the device, so the launch needs no host sync and can be captured
in a CUDA graph at a fixed grid). A program's ``BLOCK_M`` rows are ``TQ = BLOCK_M // G`` query
tokens x the ``G`` query heads of one KV head (row r -> token r // G, head r % G), so GQA reuses
each KV tile across the group, as in decode. Tiles past the last sequence's exit at once.
fp32 accumulation, online softmax in the log2 domain.

This is also the engine's *unified* kernel for mixed steps: a decoding sequence is a sequence of
one new token over ``context - 1`` cached ones, so prefill chunks and decode rows share one
launch (see :mod:`kvsim.engine.attention`).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

import kvsim.kernels.reference as reference
from kvsim.kernels._attn_decode import kernel_window
from kvsim.kernels._common import check_varlen_inputs, default_scale, dot_f32, num_sms, require


@triton.jit
def _attend_block(q, m_i, l_i, acc, start, kvh, seq, qpos, kv_hi, win, k_ptr, v_ptr, bt_ptr, scale_log2,
                  stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh, stride_bts, d_mask, offs_d,
                  BLOCK_N: tl.constexpr, BLOCK_SIZE: tl.constexpr, DOT_F32: tl.constexpr, MASKED: tl.constexpr):
    """One ``BLOCK_N``-key block of the online softmax. ``MASKED`` False: every key of the block is visible to
    every row of the tile (strictly before the tile's first query, inside its last query's window), so the
    causal / window / length mask is skipped."""
    offs_n = tl.arange(0, BLOCK_N)
    pos = start + offs_n
    if MASKED:
        n_mask = pos < kv_hi
        phys = tl.load(bt_ptr + seq.to(tl.int64) * stride_bts + pos // BLOCK_SIZE, mask=n_mask, other=0).to(tl.int64)
        kv_mask = n_mask[:, None] & d_mask[None, :]
    else:
        phys = tl.load(bt_ptr + seq.to(tl.int64) * stride_bts + pos // BLOCK_SIZE).to(tl.int64)
        kv_mask = d_mask[None, :]
    off = (pos % BLOCK_SIZE).to(tl.int64)
    row_k = phys * stride_kb + off * stride_kt + kvh * stride_kh
    row_v = phys * stride_vb + off * stride_vt + kvh * stride_vh
    k = tl.load(k_ptr + row_k[:, None] + offs_d[None, :], mask=kv_mask, other=0.0)
    v = tl.load(v_ptr + row_v[:, None] + offs_d[None, :], mask=kv_mask, other=0.0)
    if DOT_F32:
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    s = tl.dot(q, tl.trans(k)) * scale_log2
    if MASKED:
        causal = (pos[None, :] <= qpos[:, None]) & (pos[None, :] > qpos[:, None] - win) & n_mask[None, :]
        s = tl.where(causal, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    # a row may have no key yet in a windowed tile (all -inf): keep its state at zero, not NaN
    m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m_i - m_use)
    p = tl.exp2(s - m_use[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return m_new, l_i, acc


@triton.jit
def _prefill_tile(
    t, kvh, q_ptr, k_ptr, v_ptr, bt_ptr, qsl_ptr, ctx_ptr, cut_ptr, num_seqs, out_ptr, scale_log2,
    stride_qt, stride_qh, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
    stride_bts, stride_ot, stride_oh, win,
    G: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_SIZE: tl.constexpr, DOT_F32: tl.constexpr, DIAG_SPLIT: tl.constexpr,
):
    TQ = BLOCK_M // G
    # flattened tiles: sequence s owns tiles cu_tiles[s] .. cu_tiles[s+1]; find s by bisection
    lo = 0
    hi = num_seqs
    while lo < hi:
        mid = (lo + hi) // 2
        if tl.load(cut_ptr + mid + 1) <= t:
            lo = mid + 1
        else:
            hi = mid
    seq = lo
    if seq < num_seqs:
        tile = t - tl.load(cut_ptr + seq)
        q_start = tl.load(qsl_ptr + seq)
        q_len = tl.load(qsl_ptr + seq + 1) - q_start
        ctx = tl.load(ctx_ptr + seq)
        offs_m = tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        tok = tile * TQ + offs_m // G
        head = kvh * G + offs_m % G
        m_mask = (offs_m < TQ * G) & (tok < q_len)
        d_mask = offs_d < HEAD_DIM
        row_q = (q_start + tok).to(tl.int64) * stride_qt + head * stride_qh
        q = tl.load(q_ptr + row_q[:, None] + offs_d[None, :],
                    mask=m_mask[:, None] & d_mask[None, :], other=0.0)
        if DOT_F32:
            q = q.to(tl.float32)
        qpos = ctx + tok
        first_q = ctx + tile * TQ
        kv_hi = ctx + tl.minimum((tile + 1) * TQ, q_len)

        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        kv_lo = tl.maximum(first_q - win + 1, 0)     # the tile's first query's window
        if DIAG_SPLIT:
            # whole blocks every row sees: at or after the last query's window start, at or before the first query
            free_lo = kv_lo + (tl.maximum(kv_hi - win - kv_lo, 0) + BLOCK_N - 1) // BLOCK_N * BLOCK_N
            free_hi = free_lo + tl.maximum(first_q + 1 - free_lo, 0) // BLOCK_N * BLOCK_N
            for start in range(kv_lo, free_lo, BLOCK_N):
                m_i, l_i, acc = _attend_block(q, m_i, l_i, acc, start, kvh, seq, qpos, kv_hi, win, k_ptr, v_ptr,
                                              bt_ptr, scale_log2, stride_kb, stride_kt, stride_kh, stride_vb,
                                              stride_vt, stride_vh, stride_bts, d_mask, offs_d, BLOCK_N, BLOCK_SIZE,
                                              DOT_F32, True)
            for start in range(free_lo, free_hi, BLOCK_N):
                m_i, l_i, acc = _attend_block(q, m_i, l_i, acc, start, kvh, seq, qpos, kv_hi, win, k_ptr, v_ptr,
                                              bt_ptr, scale_log2, stride_kb, stride_kt, stride_kh, stride_vb,
                                              stride_vt, stride_vh, stride_bts, d_mask, offs_d, BLOCK_N, BLOCK_SIZE,
                                              DOT_F32, False)
        else:               # one masked loop, as the kernel was before DIAG_SPLIT
            free_hi = kv_lo
        for start in range(free_hi, kv_hi, BLOCK_N):
            m_i, l_i, acc = _attend_block(q, m_i, l_i, acc, start, kvh, seq, qpos, kv_hi, win, k_ptr, v_ptr, bt_ptr,
                                          scale_log2, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
                                          stride_bts, d_mask, offs_d, BLOCK_N, BLOCK_SIZE, DOT_F32, True)
        o = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
        row_o = (q_start + tok).to(tl.int64) * stride_ot + head * stride_oh
        tl.store(out_ptr + row_o[:, None] + offs_d[None, :], o.to(out_ptr.dtype.element_ty),
                 mask=m_mask[:, None] & d_mask[None, :])


@triton.jit
def _prefill_kernel(
    q_ptr, k_ptr, v_ptr, bt_ptr, qsl_ptr, ctx_ptr, cut_ptr, num_seqs, out_ptr, scale_log2,
    stride_qt, stride_qh, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
    stride_bts, stride_ot, stride_oh, win,
    G: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_SIZE: tl.constexpr, DOT_F32: tl.constexpr, PERSISTENT: tl.constexpr,
    DIAG_SPLIT: tl.constexpr,
):
    kvh = tl.program_id(1)
    if PERSISTENT:      # a fixed number of programs walks the step's real tiles (count read on the device)
        total = tl.load(cut_ptr + num_seqs)
        for t in range(tl.program_id(0), total, tl.num_programs(0)):
            _prefill_tile(t, kvh, q_ptr, k_ptr, v_ptr, bt_ptr, qsl_ptr, ctx_ptr, cut_ptr, num_seqs, out_ptr,
                          scale_log2, stride_qt, stride_qh, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt,
                          stride_vh, stride_bts, stride_ot, stride_oh, win, G, HEAD_DIM, BLOCK_D, BLOCK_M, BLOCK_N,
                          BLOCK_SIZE, DOT_F32, DIAG_SPLIT)
    else:               # one program per tile of the host's upper bound; those past the last tile exit
        _prefill_tile(tl.program_id(0), kvh, q_ptr, k_ptr, v_ptr, bt_ptr, qsl_ptr, ctx_ptr, cut_ptr, num_seqs,
                      out_ptr, scale_log2, stride_qt, stride_qh, stride_kb, stride_kt, stride_kh, stride_vb,
                      stride_vt, stride_vh, stride_bts, stride_ot, stride_oh, win, G, HEAD_DIM, BLOCK_D, BLOCK_M,
                      BLOCK_N, BLOCK_SIZE, DOT_F32, DIAG_SPLIT)


PERSISTENT = False
"""Default of ``paged_prefill_attention(persistent=...)``. Off: the engine's timings and the committed profiles
were measured with one program per tile; a benchmark may switch it on to compare (issue #10: inside a CUDA
graph the grid is sized for 256 sequences, so most programs only find they have no tile)."""
PERSISTENT_WAVES = 4
"""Persistent programs per SM (summed over KV heads)."""
LAUNCH = dict(block_m=64, block_n=64, num_warps=4, num_stages=2)
"""The launch configuration :func:`paged_prefill_attention` and :func:`prefill_tile_starts` use where their caller
names none (``block_m`` rows a program: ``block_m // G`` query tokens x ``G`` query heads)."""
DIAG_SPLIT = False
"""Default of ``paged_prefill_attention(diag_split=...)``: a tile walks the key blocks every one of its rows sees
without the causal/window mask, and masks only the blocks at its window's start and on its diagonal (the same
blocks in the same order: bit-equal under the interpreter, within fp16 rounding compiled). Off: on an H100 it made
the kernel 1.03-1.09x faster at most shapes but whole graph-replayed steps only 0.98-1.03x
(benchmarks/engine/results_H100/prefill_tiles_1207h)."""


def tile_tokens(group: int, block_m: int | None = None) -> int:
    """Query tokens per program: ``BLOCK_M // G`` rows of ``G`` query heads each (``block_m`` default
    :data:`LAUNCH`'s)."""
    return max(block_m or LAUNCH["block_m"], triton.next_power_of_2(group)) // group


def prefill_tile_starts(query_start_loc: torch.Tensor, group: int, block_m: int | None = None, *,
                        skip_single: bool = False) -> torch.Tensor:
    """int32 ``[num_seqs + 1]`` prefix sums of each sequence's query tiles, computed on the device
    (no host sync, so a CUDA graph can capture it); one per step serves every layer. ``skip_single``:
    sequences with exactly one new token get no tile (the decode kernel serves them:
    :func:`kvsim.kernels.decode.paged_varlen_decode_attention`)."""
    tq = tile_tokens(group, block_m)
    qsl = query_start_loc.to(torch.int32)
    lens = qsl[1:] - qsl[:-1]
    cu_tiles = torch.zeros(qsl.shape[0], dtype=torch.int32, device=qsl.device)
    tiles = (lens + (tq - 1)) // tq
    torch.cumsum(tiles * (lens != 1) if skip_single else tiles, 0, out=cu_tiles[1:])
    return cu_tiles


def paged_prefill_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                            block_table: torch.Tensor, query_start_loc: torch.Tensor,
                            context_lens: torch.Tensor, scale: float | None = None, *,
                            max_query_len: int | None = None, out: torch.Tensor | None = None,
                            block_m: int | None = None, block_n: int | None = None, num_warps: int | None = None,
                            num_stages: int | None = None, cu_tiles: torch.Tensor | None = None,
                            persistent: bool | None = None, backend: str = "triton",
                            window: int = 0, skip_single: bool = False,
                            diag_split: bool | None = None) -> torch.Tensor:
    """Causal attention of the packed new tokens ``q`` over their sequences' paged KV.

    ``block_m``, ``block_n``, ``num_warps``, ``num_stages``: the launch (default :data:`LAUNCH`).
    ``window`` > 0 (a sliding-window layer): the token at position ``p`` attends to positions
    ``p - window + 1 .. p`` only, and a tile reads no block before its first token's window. 0 = full.

    The new tokens' K/V must already be in the cache (see :func:`write_kv`). ``max_query_len``
    is accepted for compatibility and unused: the grid needs only the token and sequence counts,
    so the launch never syncs. ``cu_tiles`` (from :func:`prefill_tile_starts` with the same
    ``block_m``) saves recomputing the tile offsets in every layer of a step. ``persistent`` (default
    :data:`PERSISTENT`) launches at most ``PERSISTENT_WAVES * num_sms`` programs that loop over the real tiles
    instead of one program per tile of the host's upper bound. ``skip_single``: rows of sequences with
    exactly one new token are left to :func:`~kvsim.kernels.decode.paged_varlen_decode_attention` and not
    written here (``cu_tiles``, when given, must have been computed with the same flag). ``diag_split`` (default
    :data:`DIAG_SPLIT`): mask only the key blocks that need it (see there). Returns ``out``
    (``[total_new_tokens, num_q_heads, head_dim]``, dtype of ``q``).
    """
    num_seqs = check_varlen_inputs(q, k_cache, v_cache, block_table, query_start_loc, context_lens, backend, window)
    scale = default_scale(q.shape[-1], scale)
    if out is None:
        out = torch.empty_like(q)
    if backend == "torch":
        ref = reference.paged_prefill(q, k_cache, v_cache, block_table, query_start_loc, context_lens, scale,
                                      window=window)
        if skip_single:
            lens = (query_start_loc[1:] - query_start_loc[:-1]).tolist()
            keep = [t for s, n in enumerate(lens) if n != 1
                    for t in range(int(query_start_loc[s]), int(query_start_loc[s]) + n)]
            out[keep] = ref[keep].to(out.dtype)
        else:
            out.copy_(ref)
        return out
    group = q.shape[1] // k_cache.shape[2]
    block_m, block_n = block_m or LAUNCH["block_m"], block_n or LAUNCH["block_n"]
    num_warps, num_stages = num_warps or LAUNCH["num_warps"], num_stages or LAUNCH["num_stages"]
    tq = tile_tokens(group, block_m)
    if num_seqs == 0 or q.shape[0] == 0:
        return out
    if cu_tiles is None:
        cu_tiles = prefill_tile_starts(query_start_loc, group, block_m, skip_single=skip_single)
    block_m = max(block_m, triton.next_power_of_2(group))
    require(cu_tiles.shape == (num_seqs + 1,) and cu_tiles.dtype == torch.int32, "cu_tiles",
            f"must be int32 ({num_seqs + 1},) from prefill_tile_starts")
    # the grid is an upper bound on the tiles known on the host: sum ceil(len/tq) <= ceil(tokens/tq) + num_seqs
    grid0 = triton.cdiv(q.shape[0], tq) + num_seqs
    persistent = PERSISTENT if persistent is None else bool(persistent)
    if persistent:
        grid0 = min(grid0, max(1, PERSISTENT_WAVES * num_sms(q.device) // k_cache.shape[2]))
    grid = (grid0, k_cache.shape[2])
    _prefill_kernel[grid](
        q, k_cache, v_cache, block_table, query_start_loc, context_lens, cu_tiles, num_seqs, out,
        scale * 1.4426950408889634,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), block_table.stride(0),
        out.stride(0), out.stride(1), kernel_window(window),
        G=group, HEAD_DIM=q.shape[2], BLOCK_D=max(16, triton.next_power_of_2(q.shape[2])),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_SIZE=k_cache.shape[1],
        DOT_F32=dot_f32(q.dtype), PERSISTENT=persistent,
        DIAG_SPLIT=DIAG_SPLIT if diag_split is None else bool(diag_split), num_warps=num_warps, num_stages=num_stages)
    return out
