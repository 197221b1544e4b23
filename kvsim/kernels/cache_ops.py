"""KV-cache operations: write new tokens, copy blocks (copy-on-write), swap blocks GPU <-> CPU.

* :func:`write_kv` — Triton kernel, one program per (token, KV-head tile). ``slot_mapping[t]`` is
  ``physical_block * block_size + offset``; a negative slot means "padding token, skip" (vLLM's
  convention). Caches are ``[num_blocks, block_size, num_kv_heads, head_dim]``.
* :func:`copy_blocks_planes` — Triton kernel, *one launch for all pairs and planes*: grid (pair, chunk, plane),
  each program copies one chunk of block ``src`` to block ``dst`` in one plane of a ``[planes, num_blocks, ...]``
  tensor — the engine's cache, every layer's K and V (one launch per copy-on-write step; one launch per layer
  had cost Llama-3-8B's copy step ~1.4 ms on the H200).
* :func:`copy_blocks` — the same for a separate K and V cache pair (two launches of that kernel).
* :func:`swap_blocks` — host-driven ``copy_`` between a GPU cache and a (pinned) CPU cache of
  the same block shape. By default contiguous runs (``src, src+1, ...`` -> ``dst, dst+1, ...``)
  are merged into one transfer each; ``per_block=True`` issues one transfer per block, as vLLM's
  original ``swap_blocks`` did (many small PCIe transfers). Returns the number of transfers.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
import triton
import triton.language as tl

import kvsim.kernels.reference as reference
from kvsim.kernels._common import check_backend, check_int_index, require

COPY_CHUNK = 4096


@triton.jit
def _write_kv_kernel(k_ptr, v_ptr, kc_ptr, vc_ptr, slot_ptr, num_heads,
                     stride_kt, stride_kh, stride_vt, stride_vh,
                     stride_cb, stride_ct, stride_ch, stride_vcb, stride_vct, stride_vch,
                     HEAD_DIM: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
                     BLOCK_SIZE: tl.constexpr):
    t = tl.program_id(0)
    hblk = tl.program_id(1)
    slot = tl.load(slot_ptr + t).to(tl.int64)
    blk = slot // BLOCK_SIZE
    off = slot % BLOCK_SIZE
    offs_h = hblk * BLOCK_H + tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    heads_here = tl.where(slot >= 0, num_heads, 0)  # negative slot: padding token, write nothing
    mask = (offs_h[:, None] < heads_here) & (offs_d[None, :] < HEAD_DIM)
    src_k = k_ptr + t.to(tl.int64) * stride_kt + offs_h[:, None] * stride_kh + offs_d[None, :]
    src_v = v_ptr + t.to(tl.int64) * stride_vt + offs_h[:, None] * stride_vh + offs_d[None, :]
    dst_k = kc_ptr + blk * stride_cb + off * stride_ct + offs_h[:, None] * stride_ch + offs_d[None, :]
    dst_v = vc_ptr + blk * stride_vcb + off * stride_vct + offs_h[:, None] * stride_vch + offs_d[None, :]
    tl.store(dst_k, tl.load(src_k, mask=mask), mask=mask)
    tl.store(dst_v, tl.load(src_v, mask=mask), mask=mask)


@triton.jit
def _copy_planes_kernel(cache_ptr, pairs_ptr, block_elems, plane_elems, BLOCK: tl.constexpr):
    pair = tl.program_id(0)
    chunk = tl.program_id(1)
    base = cache_ptr + tl.program_id(2).to(tl.int64) * plane_elems
    src = tl.load(pairs_ptr + 2 * pair).to(tl.int64)
    dst = tl.load(pairs_ptr + 2 * pair + 1).to(tl.int64)
    offs = chunk.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < block_elems
    tl.store(base + dst * block_elems + offs, tl.load(base + src * block_elems + offs, mask=mask), mask=mask)


def write_kv(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
             slot_mapping: torch.Tensor, *, backend: str = "triton") -> None:
    """Scatter new tokens' K/V ``[num_tokens, num_kv_heads, head_dim]`` into the paged caches."""
    require(k.dim() == 3 and k.shape == v.shape, "k", f"shape {tuple(k.shape)} must be [tokens, heads, dim] = v's")
    require(k_cache.dim() == 4 and k_cache.shape == v_cache.shape, "k_cache", "must be 4-D and equal v_cache")
    require(tuple(k.shape[1:]) == tuple(k_cache.shape[2:]), "k",
            f"per-token shape {tuple(k.shape[1:])} != cache's {tuple(k_cache.shape[2:])}")
    require(k.dtype == k_cache.dtype == v.dtype == v_cache.dtype, "k", "dtype must equal the caches'")
    check_int_index("slot_mapping", slot_mapping)
    require(slot_mapping.shape == (k.shape[0],), "slot_mapping", f"shape must be ({k.shape[0]},)")
    for name, t in (("k", k), ("v", v), ("k_cache", k_cache), ("v_cache", v_cache)):
        require(t.stride(-1) == 1, name, "last dimension must be contiguous")
    check_backend(backend, k, v, k_cache, v_cache, slot_mapping)
    if backend == "torch":
        reference.write_kv(k, v, k_cache, v_cache, slot_mapping)
        return
    if k.shape[0] == 0:
        return
    heads, dim = k.shape[1], k.shape[2]
    block_d = triton.next_power_of_2(dim)
    block_h = min(triton.next_power_of_2(heads), max(1, 4096 // block_d))
    grid = (k.shape[0], triton.cdiv(heads, block_h))
    _write_kv_kernel[grid](
        k, v, k_cache, v_cache, slot_mapping, heads, k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        HEAD_DIM=dim, BLOCK_H=block_h, BLOCK_D=block_d, BLOCK_SIZE=k_cache.shape[1])


def _pairs_tensor(pairs, device) -> torch.Tensor:
    t = torch.as_tensor(pairs if torch.is_tensor(pairs) else list(pairs), dtype=torch.int64)
    return t.reshape(-1, 2).to(device).contiguous()


def copy_blocks(k_cache: torch.Tensor, v_cache: torch.Tensor,
                pairs: torch.Tensor | Sequence[tuple[int, int]], *, backend: str = "triton",
                ids_checked: bool = False) -> None:
    """Copy-on-write: for every ``(src, dst)`` pair, block ``dst`` := block ``src`` in both caches.

    One kernel launch per cache covers all pairs (:func:`copy_blocks_planes`). Destinations must be distinct
    and never a source of another pair in the same call (the block manager guarantees this: dst blocks are
    fresh). ``ids_checked``: the caller has checked the ids are in range on the host (the range check otherwise
    reads a device tensor back, a sync per call)."""
    require(k_cache.shape == v_cache.shape and k_cache.dtype == v_cache.dtype, "v_cache",
            "must match k_cache in shape and dtype")
    require(k_cache.is_contiguous() and v_cache.is_contiguous(), "k_cache", "caches must be contiguous")
    pt = _pairs_tensor(pairs, k_cache.device)
    if pt.numel() and not ids_checked:
        nb = k_cache.shape[0]
        require(int(pt.min()) >= 0 and int(pt.max()) < nb, "pairs", f"block ids must be in [0, {nb})")
    check_backend(backend, k_cache, v_cache)
    if backend == "torch":
        reference.copy_blocks(k_cache, v_cache, pt)
        return
    for cache in (k_cache, v_cache):       # each a one-plane tensor for the planes kernel: one launch per cache
        copy_blocks_planes(cache.unsqueeze(0), pt, ids_checked=True)


def copy_blocks_planes(planes: torch.Tensor, pairs: torch.Tensor | Sequence[tuple[int, int]], *,
                       backend: str = "triton", ids_checked: bool = False) -> None:
    """Copy-on-write in every plane of ``planes`` ``[P, num_blocks, ...]`` (each layer's K and V caches as planes
    of one contiguous tensor): block ``dst`` := block ``src`` for every ``(src, dst)`` pair, in one launch.
    Same contract as :func:`copy_blocks` (distinct destinations, never a source of another pair)."""
    require(planes.dim() >= 3 and planes.is_contiguous(), "planes", "must be a contiguous [planes, blocks, ...] tensor")
    pt = _pairs_tensor(pairs, planes.device)
    nb = planes.shape[1]
    if pt.numel() and not ids_checked:
        require(int(pt.min()) >= 0 and int(pt.max()) < nb, "pairs", f"block ids must be in [0, {nb})")
    check_backend(backend, planes)
    if pt.shape[0] == 0:
        return
    if backend == "torch":
        src, dst = pt[:, 0], pt[:, 1]
        planes[:, dst] = planes[:, src]
        return
    block_elems = planes[0, 0].numel()
    grid = (pt.shape[0], triton.cdiv(block_elems, COPY_CHUNK), planes.shape[0])
    _copy_planes_kernel[grid](planes, pt, block_elems, planes[0].numel(), BLOCK=COPY_CHUNK)


def swap_runs(mapping: Iterable[tuple[int, int]], per_block: bool = False) -> list[tuple[int, int, int]]:
    """Group ``(src, dst)`` block pairs into ``(src_start, dst_start, count)`` transfers.

    Pairs are sorted by source; consecutive pairs extend a run when both source and destination
    advance by one. With ``per_block`` every pair is its own run.
    """
    pairs = sorted((int(s), int(d)) for s, d in mapping)
    if per_block:
        return [(s, d, 1) for s, d in pairs]
    runs: list[list[int]] = []
    for s, d in pairs:
        if runs and s == runs[-1][0] + runs[-1][2] and d == runs[-1][1] + runs[-1][2]:
            runs[-1][2] += 1
        else:
            runs.append([s, d, 1])
    return [tuple(r) for r in runs]


def swap_blocks(src: torch.Tensor, dst: torch.Tensor, mapping, *, per_block: bool = False) -> int:
    """Copy blocks ``src[s] -> dst[d]`` between devices (GPU <-> pinned CPU); returns transfers issued.

    ``src`` and ``dst`` are caches with the same per-block shape and dtype (``[num_blocks, ...]``),
    usually one on the GPU and one in pinned host memory. Copies are issued ``non_blocking`` on the
    current stream; synchronize (or record an event) before reading ``dst`` on the host.
    """
    require(src.shape[1:] == dst.shape[1:] and src.dtype == dst.dtype, "dst",
            f"block shape/dtype {tuple(dst.shape[1:])}/{dst.dtype} must match src's "
            f"{tuple(src.shape[1:])}/{src.dtype}")
    pairs = mapping.tolist() if torch.is_tensor(mapping) else list(mapping)
    runs = swap_runs(pairs, per_block)
    for s, d, n in runs:
        require(0 <= s and s + n <= src.shape[0], "mapping", f"source block {s + n - 1} out of range")
        require(0 <= d and d + n <= dst.shape[0], "mapping", f"destination block {d + n - 1} out of range")
    non_blocking = src.is_cuda != dst.is_cuda
    for s, d, n in runs:
        dst[d:d + n].copy_(src[s:s + n], non_blocking=non_blocking)
    return len(runs)
