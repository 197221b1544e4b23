"""Fused element-wise kernels of a LLaMA-family layer: one launch where plain torch takes many.

Written plainly in torch, the work around a layer's four matrix products is ~40 small kernels per
layer (RMSNorm alone is seven: upcast, square, mean, add, rsqrt, multiply, downcast, scale; RoPE on
q and k another sixteen; the cache write, SiLU, the products and the residual adds the rest). In
a CUDA graph each still costs a few microseconds of launch and tail, and at 2,048 tokens the float32
temporaries cost real bandwidth: together they were a third of a Llama-3-8B step on the H200.
These kernels do the same arithmetic in three launches:

* :func:`add_rmsnorm` — ``s = x + residual`` (rounded to the activations' dtype, as the plain add
  does), then RMSNorm of ``s`` in float32, cast back, times ``weight``; returns ``(normed, s)``.
  Without a residual it is a plain RMSNorm and returns ``(normed, x)``.
* :func:`rope_write_kv` — rotate-half RoPE applied to ``q`` and ``k`` *in place*, angles read from
  a float32 ``[positions, head_dim]`` cos|sin table built once by the model (so the angles are
  bit-identical to the plain path's), then the new ``k``/``v`` written into the paged caches at
  ``slot_mapping`` (a negative slot is a padding row: nothing written). One program per token.
* :func:`silu_mul` — ``silu(gate) * up`` of the fused ``[T, 2F]`` gate|up product.

Every product is rounded to the activations' dtype where the plain torch ops round it, so results
equal the torch path up to the last bit of a transcendental (``exp``, ``rsqrt``). ``backend="torch"``
runs the plain torch ops of :mod:`kvsim.kernels.reference` (which the models' plain path mirrors).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

import kvsim.kernels.reference as reference
from kvsim.kernels._common import check_backend, check_int_index, require


@triton.jit
def _add_rmsnorm_kernel(x_ptr, r_ptr, w_ptr, out_ptr, n_cols, stride_x, stride_r, stride_o, eps,
                        HAS_RES: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < n_cols
    x = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0)
    if HAS_RES:
        r = tl.load(r_ptr + row * stride_r + offs, mask=mask, other=0.0)
        s = (x.to(tl.float32) + r.to(tl.float32)).to(x.dtype)
        tl.store(r_ptr + row * stride_r + offs, s, mask=mask)      # the new residual, in place
    else:
        s = x
    sf = s.to(tl.float32)
    var = tl.sum(sf * sf, axis=0) / n_cols
    y = (sf * (1.0 / tl.sqrt(var + eps))).to(x.dtype)
    w = tl.load(w_ptr + offs, mask=mask, other=0.0)
    tl.store(out_ptr + row * stride_o + offs, (w.to(tl.float32) * y.to(tl.float32)).to(x.dtype), mask=mask)


@triton.jit
def _rotate(x1, x2, c, s):
    """Rotate-half of one pair of halves, rounding each product and sum to the input dtype."""
    dt = x1.dtype
    c = c.to(dt).to(tl.float32)
    s = s.to(dt).to(tl.float32)
    a1 = x1.to(tl.float32)
    a2 = x2.to(tl.float32)
    o1 = ((a1 * c).to(dt).to(tl.float32) - (a2 * s).to(dt).to(tl.float32)).to(dt)
    o2 = ((a2 * c).to(dt).to(tl.float32) + (a1 * s).to(dt).to(tl.float32)).to(dt)
    return o1, o2


@triton.jit
def _rope_write_kernel(q_ptr, k_ptr, v_ptr, pos_ptr, cs_ptr, slot_ptr, kc_ptr, vc_ptr, max_pos,
                       stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_cs,
                       stride_cb, stride_ct, stride_ch, stride_vcb, stride_vct, stride_vch,
                       HQ: tl.constexpr, HKV: tl.constexpr, HALF: tl.constexpr, BLOCK_HQ: tl.constexpr,
                       BLOCK_HKV: tl.constexpr, BLOCK_HALF: tl.constexpr, BLOCK_SIZE: tl.constexpr,
                       WRITE: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    pos = tl.minimum(tl.maximum(tl.load(pos_ptr + t).to(tl.int64), 0), max_pos - 1)
    offs_d = tl.arange(0, BLOCK_HALF)
    d_mask = offs_d < HALF
    c = tl.load(cs_ptr + pos * stride_cs + offs_d, mask=d_mask, other=0.0)[None, :]
    s = tl.load(cs_ptr + pos * stride_cs + HALF + offs_d, mask=d_mask, other=0.0)[None, :]
    hq = tl.arange(0, BLOCK_HQ)
    mq = (hq[:, None] < HQ) & d_mask[None, :]
    pq = q_ptr + t * stride_qt + hq[:, None] * stride_qh + offs_d[None, :]
    o1, o2 = _rotate(tl.load(pq, mask=mq, other=0.0), tl.load(pq + HALF, mask=mq, other=0.0), c, s)
    tl.store(pq, o1, mask=mq)
    tl.store(pq + HALF, o2, mask=mq)
    hk = tl.arange(0, BLOCK_HKV)
    mk = (hk[:, None] < HKV) & d_mask[None, :]
    pk = k_ptr + t * stride_kt + hk[:, None] * stride_kh + offs_d[None, :]
    k1, k2 = _rotate(tl.load(pk, mask=mk, other=0.0), tl.load(pk + HALF, mask=mk, other=0.0), c, s)
    tl.store(pk, k1, mask=mk)
    tl.store(pk + HALF, k2, mask=mk)
    if WRITE:
        slot = tl.load(slot_ptr + t).to(tl.int64)
        heads_here = tl.where(slot >= 0, HKV, 0)           # negative slot: padding row, write nothing
        mw = (hk[:, None] < heads_here) & d_mask[None, :]
        blk = slot // BLOCK_SIZE
        off = slot % BLOCK_SIZE
        ck = kc_ptr + blk * stride_cb + off * stride_ct + hk[:, None] * stride_ch + offs_d[None, :]
        tl.store(ck, k1, mask=mw)
        tl.store(ck + HALF, k2, mask=mw)
        pv = v_ptr + t * stride_vt + hk[:, None] * stride_vh + offs_d[None, :]
        cv = vc_ptr + blk * stride_vcb + off * stride_vct + hk[:, None] * stride_vch + offs_d[None, :]
        tl.store(cv, tl.load(pv, mask=mw, other=0.0), mask=mw)
        tl.store(cv + HALF, tl.load(pv + HALF, mask=mw, other=0.0), mask=mw)


@triton.jit
def _silu_mul_kernel(x_ptr, out_ptr, n_cols, stride_x, stride_o, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_cols
    g = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0)
    u = tl.load(x_ptr + row * stride_x + n_cols + offs, mask=mask, other=0.0)
    gf = g.to(tl.float32)
    sg = (gf / (1.0 + tl.exp(-gf))).to(g.dtype)
    tl.store(out_ptr + row * stride_o + offs, (sg.to(tl.float32) * u.to(tl.float32)).to(g.dtype), mask=mask)


def _warps(n: int) -> int:
    return 4 if n <= 2048 else (8 if n <= 8192 else 16)


def add_rmsnorm(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float, *,
                backend: str = "triton") -> tuple[torch.Tensor, torch.Tensor]:
    """``(rmsnorm(x + residual) * weight, x + residual)``; ``residual`` is updated in place (module doc)."""
    require(x.dim() == 2 and x.stride(-1) == 1, "x", f"shape {tuple(x.shape)} must be [tokens, hidden], rows contiguous")
    require(weight.shape == (x.shape[1],), "weight", f"shape {tuple(weight.shape)} must be ({x.shape[1]},)")
    if residual is not None:
        require(residual.shape == x.shape and residual.dtype == x.dtype and residual.stride(-1) == 1, "residual",
                "must match x in shape and dtype, rows contiguous")
    check_backend(backend, x, weight)
    if backend == "torch":
        s = x if residual is None else residual.copy_(x + residual)
        return reference.rmsnorm(s, weight, eps), s
    out = torch.empty_like(x)
    if x.shape[0]:
        block = triton.next_power_of_2(x.shape[1])
        r = residual if residual is not None else x
        _add_rmsnorm_kernel[(x.shape[0],)](x, r, weight, out, x.shape[1], x.stride(0), r.stride(0), out.stride(0),
                                           float(eps), HAS_RES=residual is not None, BLOCK=block,
                                           num_warps=_warps(block))
    return out, (x if residual is None else residual)


def rope_write_kv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor,
                  table: torch.Tensor, k_cache: torch.Tensor | None = None, v_cache: torch.Tensor | None = None,
                  slot_mapping: torch.Tensor | None = None, *, backend: str = "triton") -> None:
    """RoPE on ``q`` ``[T, Hq, D]`` and ``k`` ``[T, Hkv, D]`` in place, then (when caches are given)
    ``k``/``v`` written into the paged caches ``[blocks, block_size, Hkv, D]`` at ``slot_mapping``."""
    require(q.dim() == 3 and k.dim() == 3 and k.shape == v.shape, "q", "q, k, v must be [tokens, heads, head_dim]")
    require(q.shape[0] == k.shape[0] == positions.shape[0] and q.shape[2] == k.shape[2], "positions",
            "q, k, v and positions must have the same tokens and head_dim")
    require(q.shape[2] % 2 == 0 and table.shape[1] == q.shape[2] and table.dtype == torch.float32, "table",
            f"must be float32 [positions, {q.shape[2]}] (cos | sin)")
    for name, t in (("q", q), ("k", k), ("v", v)):
        require(t.stride(-1) == 1, name, "last dimension must be contiguous")
    check_int_index("positions", positions)
    write = k_cache is not None
    if write:
        require(v_cache is not None and slot_mapping is not None and k_cache.shape == v_cache.shape
                and tuple(k_cache.shape[2:]) == tuple(k.shape[1:]), "k_cache",
                "caches must be [blocks, block_size, Hkv, D] with k's heads and dim, and slots given")
        check_int_index("slot_mapping", slot_mapping)
    check_backend(backend, q, k, v, positions, table)
    half = q.shape[2] // 2
    if backend == "torch":
        cos, sin = table[positions.long(), :half], table[positions.long(), half:]
        q.copy_(reference.rope(q, cos, sin))
        k.copy_(reference.rope(k, cos, sin))
        if write:
            from kvsim.kernels.cache_ops import write_kv
            write_kv(k, v, k_cache, v_cache, slot_mapping, backend="torch")
        return
    if q.shape[0] == 0:
        return
    kc, vc = (k_cache, v_cache) if write else (k, v)
    sl = slot_mapping if write else positions
    cstr = (kc.stride(0), kc.stride(1), kc.stride(2), vc.stride(0), vc.stride(1), vc.stride(2)) if write \
        else (0,) * 6
    _rope_write_kernel[(q.shape[0],)](
        q, k, v, positions, table, sl, kc, vc, table.shape[0],
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), table.stride(0), *cstr,
        HQ=q.shape[1], HKV=k.shape[1], HALF=half, BLOCK_HQ=triton.next_power_of_2(q.shape[1]),
        BLOCK_HKV=triton.next_power_of_2(k.shape[1]), BLOCK_HALF=triton.next_power_of_2(half),
        BLOCK_SIZE=k_cache.shape[1] if write else 1, WRITE=write, num_warps=4)


def silu_mul(gate_up: torch.Tensor, *, backend: str = "triton") -> torch.Tensor:
    """``silu(gate_up[:, :F]) * gate_up[:, F:]`` -> ``[T, F]`` (SwiGLU's element-wise half)."""
    require(gate_up.dim() == 2 and gate_up.shape[1] % 2 == 0 and gate_up.stride(-1) == 1, "gate_up",
            f"shape {tuple(gate_up.shape)} must be [tokens, 2F], rows contiguous")
    check_backend(backend, gate_up)
    f = gate_up.shape[1] // 2
    if backend == "torch":
        return reference.silu_mul(gate_up)
    out = torch.empty((gate_up.shape[0], f), dtype=gate_up.dtype, device=gate_up.device)
    if gate_up.shape[0]:
        block = min(1024, triton.next_power_of_2(f))
        _silu_mul_kernel[(gate_up.shape[0], triton.cdiv(f, block))](gate_up, out, f, gate_up.stride(0),
                                                                     out.stride(0), BLOCK=block, num_warps=4)
    return out
