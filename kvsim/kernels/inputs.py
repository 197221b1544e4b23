"""Random problem builders shared by the kernel tests and benchmarks.

Everything is drawn from a seeded ``torch.Generator`` and is *never* zero: unused cache slots,
unused block-table entries and spare blocks hold random data too, so a kernel that reads
outside a sequence's tokens or mis-indexes the block table gives a wrong answer instead of a
lucky one.

The canonical problem is built contiguously (``[num_seqs, max_ctx, H, D]``) and then *paged* with
:func:`page_kv` at any block size into randomly permuted physical blocks, so the same logical KV
can be viewed through block size 1, 16 or 256 and through the contiguous baseline.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import torch


@dataclass
class PagedKV:
    """A paged view of some KV: caches ``[num_blocks, block_size, H, D]`` plus a block table."""

    k_cache: torch.Tensor
    v_cache: torch.Tensor
    block_table: torch.Tensor  # [num_seqs, max_blocks] int32
    block_size: int


def randn(shape, dtype, device, gen: torch.Generator, std: float = 1.0) -> torch.Tensor:
    """Normal random tensor made on the CPU with ``gen`` (reproducible), moved to ``device``."""
    return (torch.randn(shape, generator=gen, dtype=torch.float32) * std).to(device=device, dtype=dtype)


def make_decode_problem(ctx_lens, num_q_heads: int, num_kv_heads: int, head_dim: int, dtype,
                        device="cpu", seed: int = 0):
    """Random decode problem: ``(q [S,Hq,D], k, v [S,max_ctx,Hkv,D], ctx_lens int32)``."""
    gen = torch.Generator().manual_seed(seed)
    ctx = torch.as_tensor(list(ctx_lens), dtype=torch.int32)
    s, max_ctx = len(ctx), max(int(ctx.max()), 1)
    q = randn((s, num_q_heads, head_dim), dtype, device, gen)
    k = randn((s, max_ctx, num_kv_heads, head_dim), dtype, device, gen)
    v = randn((s, max_ctx, num_kv_heads, head_dim), dtype, device, gen)
    return q, k, v, ctx.to(device)


def page_kv(k: torch.Tensor, v: torch.Tensor, lens, block_size: int, *, extra_blocks: int = 3,
            seed: int = 1, max_blocks: int | None = None) -> PagedKV:
    """Scatter contiguous KV ``[S, max_len, H, D]`` (first ``lens[s]`` tokens valid) into a paged
    cache with randomly permuted physical blocks and ``extra_blocks`` spare random blocks."""
    gen = torch.Generator().manual_seed(seed)
    lens = [int(x) for x in (lens.tolist() if torch.is_tensor(lens) else lens)]
    s, _, h, d = k.shape
    need = [-(-n // block_size) for n in lens]
    total = sum(need) + extra_blocks
    width = max(max(need, default=1), 1) if max_blocks is None else max_blocks
    perm = torch.randperm(total, generator=gen)
    k_cache = randn((total, block_size, h, d), k.dtype, k.device, gen)
    v_cache = randn((total, block_size, h, d), v.dtype, v.device, gen)
    table = torch.randint(0, total, (s, width), generator=gen, dtype=torch.int32)
    nxt = 0
    for i, n in enumerate(lens):
        for b in range(need[i]):
            phys = int(perm[nxt])
            nxt += 1
            table[i, b] = phys
            lo, hi = b * block_size, min((b + 1) * block_size, n)
            k_cache[phys, : hi - lo] = k[i, lo:hi]
            v_cache[phys, : hi - lo] = v[i, lo:hi]
    return PagedKV(k_cache, v_cache, table.to(k.device), block_size)


def poison(t: torch.Tensor) -> torch.Tensor:
    """Fill ``t`` with NaN (so any element a kernel forgets to write fails the comparison)."""
    return t.fill_(float("nan"))


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``||out - ref|| / ||ref||`` in float64; NaN anywhere in ``out`` gives ``inf``."""
    out64 = out.double().cpu()
    if not torch.isfinite(out64).all():
        return float("inf")
    ref64 = ref.double().cpu()
    return float((out64 - ref64).norm() / ref64.norm().clamp_min(1e-30))


def tolerance(dtype) -> float:
    """Relative-error bound for a kernel output in ``dtype`` (METHOD.md's ranges, with margin)."""
    return {torch.float32: 2e-3, torch.float16: 3e-3, torch.bfloat16: 2e-2}[dtype]


def run_file_in_fresh_interpreter(test_file: str, timeout_s: float = 600) -> int:
    """Run one test file with ``pytest`` in a new Python process under ``TRITON_INTERPRET=1``.

    For a session whose Triton was first imported without the interpreter (it decides at import)
    on a machine with no GPU. Prints the child's output tail; returns its exit code.
    """
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(test_file)))
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file],
                         cwd=root, env=env, capture_output=True, text=True, timeout=timeout_s)
    print((res.stdout + res.stderr)[-3000:])
    return res.returncode
