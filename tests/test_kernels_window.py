"""Sliding-window attention in the paged kernels (``window`` > 0) vs float64 references.

A query at position ``p`` attends to keys in ``(p - window, p]``. Every block that lies wholly
before a sequence's (first query's) window is pointed at a NaN-filled block, as the KV-group
allocator leaves such entries stale: a kernel that reads one returns NaN and fails. ``window=0``
must give exactly the full-attention result. Triton runs in its CPU interpreter without CUDA.
"""
import pytest

from tests._triton_interp import (CUDA, DEV, STALE_TRITON, needs_cuda,  # noqa: F401 (fixture)
                                  only_in_a_usable_process, torch)  # sets up Triton first

from kvsim.errors import KvsimError  # noqa: E402
from kvsim.kernels import DecodeConfig, paged_decode_attention, paged_prefill_attention, reference  # noqa: E402
from kvsim.kernels.inputs import (make_decode_problem, page_kv, poison, randn,  # noqa: E402
                                  rel_err, run_file_in_fresh_interpreter, tolerance)

SMALL = DecodeConfig(block_n=16)


@pytest.mark.skipif(not STALE_TRITON, reason="this process can run the kernels itself")
def test_rerun_in_fresh_interpreter():
    assert run_file_in_fresh_interpreter(__file__) == 0


def _stale_blocks_to_nan(pk, firsts):
    """Point table entries of blocks before each sequence's first needed position at a NaN block."""
    bs = pk.block_size
    nan = torch.full((1, *pk.k_cache.shape[1:]), float("nan"), dtype=pk.k_cache.dtype, device=pk.k_cache.device)
    pk.k_cache = torch.cat([pk.k_cache, nan])
    pk.v_cache = torch.cat([pk.v_cache, nan])
    bad = pk.k_cache.shape[0] - 1
    for s, first in enumerate(firsts):
        pk.block_table[s, :first // bs] = bad


def _window_ref(q, k, v, lens, window):
    out = torch.zeros(q.shape, dtype=torch.float64)
    for s, n in enumerate(lens):
        lo = max(n - window, 0) if window else 0
        out[s] = reference._attend(q[s:s + 1].double().cpu(), k[s, lo:n].double().cpu(),
                                   v[s, lo:n].double().cpu(), q.shape[-1] ** -0.5)[0]
    return out


@pytest.mark.parametrize("num_splits", [None, 1, 3])
@pytest.mark.parametrize("window", [1, 5, 16, 37, 1000])
@pytest.mark.parametrize("bs", [1, 4, 16])
def test_paged_decode_window(bs, window, num_splits):
    lens = [1, 17, 40, 5, 16, 70]
    q, k, v, ctx = make_decode_problem(lens, 4, 2, 64, torch.float16, DEV, seed=bs + window)
    pk = page_kv(k, v, ctx, bs, seed=window)
    _stale_blocks_to_nan(pk, [max(n - window, 0) for n in lens])
    want = _window_ref(q, k, v, lens, window)
    ref = reference.paged_decode(q, pk.k_cache, pk.v_cache, pk.block_table, ctx, window=window)
    assert rel_err(ref, want) < 1e-12
    out = paged_decode_attention(q, pk.k_cache, pk.v_cache, pk.block_table, ctx, out=poison(torch.empty_like(q)),
                                 num_splits=num_splits, config=SMALL, window=window)
    assert rel_err(out, want) < tolerance(torch.float16)
    torch_out = paged_decode_attention(q, pk.k_cache, pk.v_cache, pk.block_table, ctx, backend="torch",
                                       window=window)
    assert rel_err(torch_out, want) < tolerance(torch.float16)


def test_window_zero_is_full_attention_bit_for_bit():
    lens = [3, 33, 64]
    q, k, v, ctx = make_decode_problem(lens, 8, 2, 64, torch.float16, DEV, seed=5)
    pk = page_kv(k, v, ctx, 16, seed=6)
    a = paged_decode_attention(q, pk.k_cache, pk.v_cache, pk.block_table, ctx, config=SMALL)
    b = paged_decode_attention(q, pk.k_cache, pk.v_cache, pk.block_table, ctx, config=SMALL, window=0)
    assert torch.equal(a, b)
    big = paged_decode_attention(q, pk.k_cache, pk.v_cache, pk.block_table, ctx, config=SMALL, window=64)
    assert rel_err(big, _window_ref(q, k, v, lens, 0)) < tolerance(torch.float16)


def _prefill_window_case(ctx_lens, q_lens, window, bs, group, seed, block_m=64):
    total = [c + n for c, n in zip(ctx_lens, q_lens)]
    hkv, dim = 2, 64
    _, k, v, _ = make_decode_problem(total, hkv * group, hkv, dim, torch.float16, DEV, seed=seed)
    pk = page_kv(k, v, total, bs, seed=seed)          # every token already written (write_kv is tested apart)
    _stale_blocks_to_nan(pk, [max(c - window + 1, 0) if window else 0 for c in ctx_lens])
    gen = torch.Generator().manual_seed(seed)
    q = randn((sum(q_lens), hkv * group, dim), torch.float16, DEV, gen)
    qsl = torch.tensor([0] + torch.cumsum(torch.tensor(q_lens), 0).tolist(), dtype=torch.int32, device=DEV)
    ctx = torch.tensor(ctx_lens, dtype=torch.int32, device=DEV)
    want = torch.zeros(q.shape, dtype=torch.float64)
    for s, (c, n) in enumerate(zip(ctx_lens, q_lens)):
        a = int(qsl[s])
        qpos = c + torch.arange(n)[:, None]
        kpos = torch.arange(c + n)[None, :]
        mask = (kpos <= qpos) & ((kpos > qpos - window) if window else True)
        want[a:a + n] = reference._attend(q[a:a + n].double().cpu(), k[s, :c + n].double().cpu(),
                                          v[s, :c + n].double().cpu(), dim ** -0.5, mask)
    ref = reference.paged_prefill(q, pk.k_cache, pk.v_cache, pk.block_table, qsl, ctx, window=window)
    assert rel_err(ref, want) < 1e-12
    out = paged_prefill_attention(q, pk.k_cache, pk.v_cache, pk.block_table, qsl, ctx, block_n=16, block_m=block_m,
                                  out=poison(torch.empty_like(q)), window=window, diag_split=False)
    assert rel_err(out, want) < tolerance(torch.float16)
    # masking only the blocks at the window's start and on the diagonal walks the same blocks in the same order:
    # the interpreter gives the same bits; compiled, the unmasked path is other code (fp16 rounding apart on an H100)
    split = paged_prefill_attention(q, pk.k_cache, pk.v_cache, pk.block_table, qsl, ctx, block_n=16, block_m=block_m,
                                    out=poison(torch.empty_like(q)), window=window, diag_split=True)
    if DEV == "cpu":
        assert torch.equal(split, out)
    assert rel_err(split, want) < tolerance(torch.float16)


@pytest.mark.parametrize("window", [1, 6, 16, 29])
@pytest.mark.parametrize("group", [1, 4])
@pytest.mark.parametrize("bs", [1, 16])
def test_paged_prefill_window(bs, group, window):
    # a plain prompt longer than the window, chunks over cached context, decode-like 1-token rows
    _prefill_window_case([0, 5, 40, 33, 0], [45, 1, 20, 1, 3], window, bs, group, seed=bs + group + window)


@pytest.mark.parametrize("window", [0, 16, 40])
@pytest.mark.parametrize("block_m", [16, 64])
def test_prefill_diag_split_same_numbers_across_tiles(window, block_m):
    # query tiles of 4-16 tokens against 16-key blocks: tiles whose first query sits mid-block, prompts and chunks
    # longer than the window (masked blocks at its start, unmasked ones after, masked on the diagonal); window 0
    # is full attention (no masked block before the diagonal)
    _prefill_window_case([0, 7, 64, 100], [70, 33, 17, 50], window, 16, 4, seed=window + block_m,
                         block_m=block_m)


def test_bad_window_is_one_line():
    q, k, v, ctx = make_decode_problem([4], 2, 2, 16, torch.float16, DEV, seed=0)
    pk = page_kv(k, v, ctx, 4)
    with pytest.raises(KvsimError, match="window"):
        paged_decode_attention(q, pk.k_cache, pk.v_cache, pk.block_table, ctx, window=-1)
