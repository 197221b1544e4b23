"""Pure-torch references for every kernel, computed in float64 on the inputs' device.

These are the ground truth of the tests and the ``backend="torch"`` path of the public wrappers.
They favour obviousness over speed: gather each sequence's K/V through its block table with a
Python loop, then softmax attention in float64. Results come back in float64 unless a wrapper
casts them.
"""
from __future__ import annotations

import torch


def gather_paged(cache: torch.Tensor, block_table_row: torch.Tensor, length: int) -> torch.Tensor:
    """Tokens ``0 .. length-1`` of one sequence from a paged cache ``[NB, BS, H, D]`` -> ``[length, H, D]``."""
    block_size = cache.shape[1]
    nblocks = -(-length // block_size)
    blocks = block_table_row[:nblocks].long()
    return cache[blocks].reshape(nblocks * block_size, *cache.shape[2:])[:length]


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """q ``[M, Hq, D]``, k/v ``[N, Hkv, D]`` (float64) -> ``[M, Hq, D]``; GQA by repeating KV heads."""
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    s = torch.einsum("mhd,nhd->hmn", q, k) * scale
    if mask is not None:
        s = s.masked_fill(~mask[None], float("-inf"))
    if s.shape[-1] == 0:
        return torch.zeros_like(q)
    p = torch.softmax(s, dim=-1)
    return torch.einsum("hmn,nhd->mhd", p, v)


def gather_window(cache: torch.Tensor, block_table_row: torch.Tensor, start: int, length: int) -> torch.Tensor:
    """Tokens ``start .. length-1`` of one sequence (blocks before ``start``'s are never touched)."""
    bs = cache.shape[1]
    first = start // bs
    nblocks = -(-length // bs)
    blocks = block_table_row[first:nblocks].long()
    return cache[blocks].reshape((nblocks - first) * bs, *cache.shape[2:])[start - first * bs:length - first * bs]


def paged_decode(q, k_cache, v_cache, block_table, context_lens, scale=None, window: int = 0) -> torch.Tensor:
    """Decode attention over a paged cache. q ``[S, Hq, D]`` -> float64 ``[S, Hq, D]``.
    ``window`` > 0: the query (position ``n - 1``) sees positions ``n - window .. n - 1`` only."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    out = torch.zeros(q.shape, dtype=torch.float64, device=q.device)
    for s in range(q.shape[0]):
        n = int(context_lens[s])
        start = max(n - window, 0) if window else 0
        k = gather_window(k_cache, block_table[s], start, n).double()
        v = gather_window(v_cache, block_table[s], start, n).double()
        out[s] = _attend(q[s:s + 1].double(), k, v, scale)[0]
    return out


def contiguous_decode(q, k, v, context_lens, scale=None) -> torch.Tensor:
    """Decode attention over contiguous KV ``[S, max_ctx, Hkv, D]`` -> float64 ``[S, Hq, D]``."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    out = torch.zeros(q.shape, dtype=torch.float64, device=q.device)
    for s in range(q.shape[0]):
        n = int(context_lens[s])
        out[s] = _attend(q[s:s + 1].double(), k[s, :n].double(), v[s, :n].double(), scale)[0]
    return out


def paged_prefill(q, k_cache, v_cache, block_table, query_start_loc, context_lens,
                  scale=None, window: int = 0) -> torch.Tensor:
    """Causal prefix attention. q ``[T, Hq, D]`` packs every sequence's new tokens
    (``query_start_loc[s] .. query_start_loc[s+1]``); sequence ``s`` has ``context_lens[s]`` cached
    tokens before them, and the new tokens' K/V are already in the cache at positions
    ``context_lens[s] ..``. New token ``i`` sees cache positions ``<= context_lens[s] + i``, and
    with ``window`` > 0 only those ``> context_lens[s] + i - window``.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    out = torch.zeros(q.shape, dtype=torch.float64, device=q.device)
    for s in range(len(query_start_loc) - 1):
        a, b = int(query_start_loc[s]), int(query_start_loc[s + 1])
        ctx = int(context_lens[s])
        total = ctx + (b - a)
        start = max(ctx - window + 1, 0) if window else 0     # the first new token's window
        k = gather_window(k_cache, block_table[s], start, total).double()
        v = gather_window(v_cache, block_table[s], start, total).double()
        qpos = ctx + torch.arange(b - a, device=q.device)
        kpos = start + torch.arange(total - start, device=q.device)
        mask = kpos[None, :] <= qpos[:, None]
        if window:
            mask &= kpos[None, :] > qpos[:, None] - window
        out[a:b] = _attend(q[a:b].double(), k, v, scale, mask)
    return out


def write_kv(k, v, k_cache, v_cache, slot_mapping) -> None:
    """In place: ``cache.view(-1, H, D)[slot] = k`` for every token whose slot is >= 0."""
    bs = k_cache.shape[1]
    for t, slot in enumerate(slot_mapping.tolist()):
        if slot < 0:
            continue
        k_cache[slot // bs, slot % bs] = k[t]
        v_cache[slot // bs, slot % bs] = v[t]


def copy_blocks(k_cache, v_cache, pairs) -> None:
    """In place: block ``dst`` of both caches becomes a copy of block ``src`` for each pair."""
    for src, dst in (pairs.tolist() if torch.is_tensor(pairs) else pairs):
        k_cache[dst] = k_cache[src]
        v_cache[dst] = v_cache[src]


def swap_blocks(src, dst, mapping) -> None:
    """In place: ``dst[d] = src[s]`` for each (s, d), one block at a time."""
    for s, d in (mapping.tolist() if torch.is_tensor(mapping) else mapping):
        dst[d].copy_(src[s])


# -- a LLaMA layer's element-wise ops, as the plain torch model computes them (kvsim.kernels.layer_ops) --
def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LLaMA's RMSNorm: normalise in float32, cast back, then scale by ``weight`` (in ``x``'s dtype)."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE on ``x`` ``[T, H, D]`` (pairs ``i, i + D/2``), float32 ``cos``/``sin`` ``[T, D/2]``
    cast to ``x``'s dtype first; result in ``x``'s dtype."""
    half = x.shape[-1] // 2
    c = cos[:, None, :].to(x.dtype)
    s = sin[:, None, :].to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """SwiGLU's element-wise half: ``silu(gate) * up`` of a ``[T, 2F]`` gate|up product."""
    f = gate_up.shape[1] // 2
    return torch.nn.functional.silu(gate_up[:, :f]) * gate_up[:, f:]
