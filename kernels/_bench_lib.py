"""Problem builders, timers and baselines for bench_decode.py (GPU; flex setup also runs on CPU).

Memory trick: for one (batch, ctx, heads) shape a single K and a single V storage
``[R * batch, ctx, Hkv, D]`` serve every implementation. The contiguous kernel and SDPA read
rotation ``r``'s slab ``[r*batch:(r+1)*batch]`` (SDPA through a ``transpose(1, 2)`` view); the paged
kernel views the same storage as blocks ``[-1, block_size, Hkv, D]`` and reads it through a block
table that gives each sequence a *random permutation* of physical blocks (so paging scatters the
reads as a busy allocator would). Timing does not depend on which tokens land where, only on the
bytes and the access pattern, so all implementations read the same number of bytes of the same
memory. ``R`` copies (rotating buffers) keep the working set >= 256 MiB so L2 (50-60 MB) can't
serve repeats; ``do_bench`` also flushes L2 before each timed call.
"""
from __future__ import annotations

import math

import torch
import triton.testing

HEAD_DIM = 128
DTYPE = torch.float16
MODELS = {"llama-gqa-32/8": (32, 8), "opt13b-mha-40/40": (40, 40)}
ROTATE_MIN_BYTES = 256 * 2 ** 20


def time_ms(fn) -> float:
    """Median milliseconds of ``fn`` by ``triton.testing.do_bench`` (events, L2 flushed per call)."""
    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def graph_ms(fn) -> float:
    """Median milliseconds per call from CUDA-graph replays (no launch overhead, no L2 flush)."""
    return float(triton.testing.do_bench_cudagraph(fn, rep=50, return_mode="median"))


def copy_bandwidth_gbps(device="cuda", nbytes: int = 2 * 2 ** 30) -> tuple[float, float]:
    """Device-to-device copy of ``nbytes`` (random data): (GB/s counting read + write, ms)."""
    src = torch.randn(nbytes // 2, dtype=torch.float16, device=device)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src))
    del src, dst
    return 2 * nbytes / ms / 1e6, ms


class Shape:
    """One decode problem with rotating buffers; builds views for every implementation."""

    def __init__(self, batch: int, ctx: int, hq: int, hkv: int, device="cuda", seed=0):
        self.batch, self.ctx, self.hq, self.hkv = batch, ctx, hq, hkv
        self.kv_bytes = 2 * batch * ctx * hkv * HEAD_DIM * DTYPE.itemsize
        self.rot = max(1, min(64, math.ceil(ROTATE_MIN_BYTES / self.kv_bytes)))
        g = torch.Generator(device=device).manual_seed(seed)
        n = self.rot * batch
        self.k = torch.randn((n, ctx, hkv, HEAD_DIM), generator=g, device=device, dtype=DTYPE)
        self.v = torch.randn((n, ctx, hkv, HEAD_DIM), generator=g, device=device, dtype=DTYPE)
        self.q = [torch.randn((batch, hq, HEAD_DIM), generator=g, device=device, dtype=DTYPE)
                  for _ in range(self.rot)]
        self.out = [torch.empty_like(x) for x in self.q]
        self.lens = torch.full((batch,), ctx, dtype=torch.int32, device=device)
        self._i = 0
        self._gen = g

    def next(self) -> int:
        self._i = (self._i + 1) % self.rot
        return self._i

    def tables(self, block_size: int) -> list[torch.Tensor]:
        """One int32 block table per rotation, a random permutation of all physical blocks."""
        nb = self.ctx // block_size
        perm = torch.randperm(self.rot * self.batch * nb, generator=self._gen,
                              device=self.k.device).to(torch.int32)
        return list(perm.view(self.rot, self.batch, nb).unbind(0))

    def paged_cache(self, block_size: int):
        return (self.k.view(-1, block_size, self.hkv, HEAD_DIM),
                self.v.view(-1, block_size, self.hkv, HEAD_DIM))

    def slab(self, r: int):
        sl = slice(r * self.batch, (r + 1) * self.batch)
        return self.k[sl], self.v[sl]

    def free(self):
        del self.k, self.v, self.q, self.out


def sdpa_fn(shape: Shape):
    """PyTorch fused SDPA on contiguous padded KV (all sequences have length ctx: no mask)."""
    import torch.nn.functional as F

    gqa = shape.hq != shape.hkv
    views = []
    for r in range(shape.rot):
        k, v = shape.slab(r)
        views.append((shape.q[r].unsqueeze(2), k.transpose(1, 2), v.transpose(1, 2)))

    def run():
        q, k, v = views[shape.next()]
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa) if gqa else \
            F.scaled_dot_product_attention(q, k, v)
    return run


def flex_paged_setup(batch: int, ctx: int, hq: int, hkv: int, page_size: int, device="cuda",
                     compile_fn: bool = True, seed: int = 0):
    """FlexAttention's experimental PagedAttention over a head-major cache ``[1, Hkv, pages*ps, D]``.

    Pages are assigned as a random permutation (like our paged kernel). Returns ``(run, check)``:
    ``run()`` computes the decode output; ``check()`` gives its relative error against a float64
    gather through the page table (so the timed function is known to compute the right thing).
    """
    from torch.nn.attention.experimental._paged_attention import PagedAttention
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention, noop_mask

    g = torch.Generator(device=device).manual_seed(seed)
    nb = ctx // page_size
    n_pages = batch * nb
    pa = PagedAttention(n_pages, page_size, batch, device=device)
    perm = torch.randperm(n_pages, generator=g, device=device).view(batch, nb)
    pa.page_table[:, :nb] = perm
    logical = torch.arange(nb, device=device).expand(batch, nb)
    pa.physical_to_logical.scatter_(1, perm, logical)
    pa.capacity[:] = ctx
    k_cache = torch.randn((1, hkv, n_pages * page_size, HEAD_DIM), generator=g, device=device, dtype=DTYPE)
    v_cache = torch.randn((1, hkv, n_pages * page_size, HEAD_DIM), generator=g, device=device, dtype=DTYPE)
    q = torch.randn((batch, hq, 1, HEAD_DIM), generator=g, device=device, dtype=DTYPE)
    logical_mask = create_block_mask(noop_mask, batch, None, 1, ctx, device=device,
                                     BLOCK_SIZE=(128, page_size))
    block_mask = pa.convert_logical_block_mask(logical_mask)
    score_mod = pa.get_score_mod(None)
    if compile_fn:
        import torch._dynamo as dynamo

        dynamo.reset()  # a fresh compile per shape; never fall back to eager silently
        for knob in ("cache_size_limit", "recompile_limit"):
            if hasattr(dynamo.config, knob):
                setattr(dynamo.config, knob, 64)
    fn = torch.compile(flex_attention, dynamic=False) if compile_fn else flex_attention
    kw = {"enable_gqa": True} if hq != hkv else {}

    def run():
        return fn(q, k_cache, v_cache, block_mask=block_mask, score_mod=score_mod, **kw)

    def check() -> float:
        out = run().double()
        group = hq // hkv
        err_num = err_den = 0.0
        for b in range(batch):
            idx = (perm[b].long()[:, None] * page_size + torch.arange(page_size, device=device)).flatten()
            k = k_cache[0][:, idx].double().repeat_interleave(group, 0)
            v = v_cache[0][:, idx].double().repeat_interleave(group, 0)
            p = torch.softmax(torch.einsum("hd,hnd->hn", q[b, :, 0].double(), k) * HEAD_DIM ** -0.5, -1)
            ref = torch.einsum("hn,hnd->hd", p, v)
            err_num += float((out[b, :, 0] - ref).norm() ** 2)
            err_den += float(ref.norm() ** 2)
        return (err_num / err_den) ** 0.5

    bytes_read = 2 * batch * ctx * hkv * HEAD_DIM * DTYPE.itemsize
    return run, check, bytes_read


def fallback_checks(device="cuda") -> str:
    """In-process GPU correctness checks for a machine without pytest (subset of the gpu tests).

    Returns a log whose last line is ``N passed, M failed``.
    """
    from kvsim.kernels import (contiguous_decode_attention, paged_decode_attention, reference)
    from kvsim.kernels.inputs import make_decode_problem, page_kv, poison, rel_err, tolerance

    lines, bad = [], 0
    cases = [(d, g, dt, bs, ns) for d in (64, 80, 96, 128) for g in (1, 4) for dt in (torch.float16, torch.bfloat16)
             for bs, ns in ((16, None), (16, 1))]
    cases += [(128, 4, torch.bfloat16, bs, ns) for bs in (1, 2, 8, 32, 64, 128, 256) for ns in (1, 5)]
    for i, (dim, group, dtype, bs, ns) in enumerate(cases):
        q, k, v, ctx = make_decode_problem([1, 17, 1000, 4097, 256, 257], 2 * group, 2, dim, dtype, device, seed=i)
        pk = page_kv(k, v, ctx, bs, seed=i)
        ref = reference.paged_decode(q, pk.k_cache, pk.v_cache, pk.block_table, ctx)
        e1 = rel_err(paged_decode_attention(q, pk.k_cache, pk.v_cache, pk.block_table, ctx,
                                            out=poison(torch.empty_like(q)), num_splits=ns), ref)
        e2 = rel_err(contiguous_decode_attention(q, k, v, ctx, out=poison(torch.empty_like(q)), num_splits=ns), ref)
        ok = max(e1, e2) < tolerance(dtype)
        bad += not ok
        lines.append(f"{'ok  ' if ok else 'FAIL'} decode dim={dim} G={group} {dtype} bs={bs} splits={ns}: {e1:.1e} {e2:.1e}")
    lines.append(f"{len(cases) - bad} passed, {bad} failed")
    return "\n".join(lines)
