"""Fused layer kernels (kvsim.kernels.layer_ops) vs the plain torch ops they replace.

Runs the Triton kernels under the CPU interpreter when there is no CUDA (see test_kernels.py);
the `needs_cuda` cases repeat the checks at Llama-3-8B's sizes on a GPU.
"""
import pytest

from tests._triton_interp import (CUDA, DEV, STALE_TRITON, needs_cuda,  # noqa: F401 (fixture)
                                  only_in_a_usable_process, torch)  # sets up Triton first

from kvsim.errors import KvsimError  # noqa: E402
from kvsim.kernels import reference  # noqa: E402
from kvsim.kernels.inputs import randn, run_file_in_fresh_interpreter  # noqa: E402
from kvsim.kernels.layer_ops import add_rmsnorm, rope_write_kv, silu_mul  # noqa: E402

# one or two units in the last place of the dtype: transcendental functions (exp, rsqrt) and fused
# multiply-adds may round differently from torch's
TOL = {torch.float16: dict(rtol=2e-3, atol=2e-3), torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2),
       torch.float32: dict(rtol=1e-5, atol=1e-5)}
DTYPES = [torch.float16, torch.bfloat16, torch.float32]


@pytest.mark.skipif(not STALE_TRITON, reason="this process can run the kernels itself")
def test_rerun_in_fresh_interpreter():
    assert run_file_in_fresh_interpreter(__file__) == 0


def close(a, b, dtype):
    torch.testing.assert_close(a.float(), b.float(), **TOL[dtype])


def _rmsnorm_case(tokens, hidden, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    x = randn((tokens, hidden), dtype, DEV, gen)
    r = randn((tokens, hidden), dtype, DEV, gen)
    w = randn((hidden,), dtype, DEV, gen, std=0.5) + 1
    want_s = x + r
    want = reference.rmsnorm(want_s, w, 1e-5)
    got, s = add_rmsnorm(x, r, w, 1e-5)
    assert s.data_ptr() == r.data_ptr()                  # the residual is updated in place
    if dtype != torch.bfloat16 or CUDA:                  # the interpreter truncates float32 -> bfloat16
        assert torch.equal(s, want_s)                    # the add rounds exactly as the plain add does
    close(s, want_s, dtype)
    close(got, want, dtype)
    got1, same = add_rmsnorm(x, None, w, 1e-5)           # no residual: a plain RMSNorm, x passed through
    assert same is x
    close(got1, reference.rmsnorm(x, w, 1e-5), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens,hidden", [(1, 64), (5, 80), (3, 200)])
def test_add_rmsnorm_matches_plain_ops(tokens, hidden, dtype):
    _rmsnorm_case(tokens, hidden, dtype, seed=tokens + hidden)


def _rope_case(tokens, hq, hkv, d, bs, dtype, seed, max_pos=64):
    gen = torch.Generator().manual_seed(seed)
    nb = tokens + 3
    qkv = randn((tokens, (hq + 2 * hkv) * d), dtype, DEV, gen)        # q, k, v as views of one product
    q = qkv[:, :hq * d].view(tokens, hq, d)
    k = qkv[:, hq * d:(hq + hkv) * d].view(tokens, hkv, d)
    v = qkv[:, (hq + hkv) * d:].view(tokens, hkv, d)
    kc = torch.full((nb, bs, hkv, d), float("nan"), dtype=dtype, device=DEV)
    vc = torch.full_like(kc, float("nan"))
    pos = torch.randint(0, max_pos, (tokens,), generator=gen).to(DEV)
    slots = torch.randperm(nb * bs, generator=gen)[:tokens].to(DEV)
    if tokens > 1:
        slots[1] = -1                                   # padding row: rotated, but never written
    ang = torch.arange(max_pos, device=DEV).double()[:, None] * (
        1000.0 ** (-torch.arange(0, d, 2, device=DEV).double() / d))[None, :]
    full = torch.cat([ang.cos(), ang.sin()], -1).float()       # cos | sin per position
    table = full[pos]
    want_q = reference.rope(q, table[:, :d // 2], table[:, d // 2:])
    want_k = reference.rope(k, table[:, :d // 2], table[:, d // 2:])
    v0 = v.clone()
    rope_write_kv(q, k, v, pos, full, kc, vc, slots)
    close(q, want_q, dtype)
    close(k, want_k, dtype)
    assert torch.equal(v, v0)
    for t in range(tokens):
        s = int(slots[t])
        if s < 0:
            continue
        assert torch.equal(kc[s // bs, s % bs], k[t]) and torch.equal(vc[s // bs, s % bs], v[t])
    written = int((slots >= 0).sum())
    assert int((~kc.isnan()).all(-1).all(-1).sum()) == written       # nothing else in the cache touched
    assert int((~vc.isnan()).all(-1).all(-1).sum()) == written


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens,hq,hkv,d,bs", [(1, 4, 4, 64, 16), (6, 4, 2, 16, 4), (5, 6, 2, 80, 1)])
def test_rope_write_kv_matches_plain_ops_and_skips_padding(tokens, hq, hkv, d, bs, dtype):
    _rope_case(tokens, hq, hkv, d, bs, dtype, seed=tokens * hq + d)


def test_rope_without_caches_only_rotates():
    gen = torch.Generator().manual_seed(5)
    q, k, v = (randn((3, h, 16), torch.float32, DEV, gen) for h in (4, 2, 2))
    pos = torch.tensor([0, 7, 31], device=DEV)
    table = randn((32, 16), torch.float32, DEV, gen)
    want_q = reference.rope(q, table[pos, :8], table[pos, 8:])
    rope_write_kv(q, k, v, pos, table)
    close(q, want_q, torch.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens,f", [(1, 48), (4, 96), (3, 1500)])
def test_silu_mul_matches_plain_ops(tokens, f, dtype):
    gen = torch.Generator().manual_seed(tokens + f)
    gu = randn((tokens, 2 * f), dtype, DEV, gen, std=3.0)
    close(silu_mul(gu), reference.silu_mul(gu), dtype)


def test_bad_shapes_are_one_line_errors():
    x = torch.zeros(2, 8, device=DEV)
    with pytest.raises(KvsimError, match="weight"):
        add_rmsnorm(x, None, torch.ones(4, device=DEV), 1e-5)
    with pytest.raises(KvsimError, match="gate_up"):
        silu_mul(torch.zeros(2, 7, device=DEV))
    q = torch.zeros(2, 4, 16, device=DEV)
    with pytest.raises(KvsimError, match="table"):
        rope_write_kv(q, q[:, :2], q[:, :2], torch.zeros(2, dtype=torch.long, device=DEV),
                      torch.zeros(8, 16, dtype=torch.float64, device=DEV))


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_layer_ops_at_llama3_8b_sizes(dtype):
    _rmsnorm_case(300, 4096, dtype, seed=1)
    _rope_case(300, 32, 8, 128, 16, dtype, seed=2, max_pos=8192)
    gen = torch.Generator().manual_seed(3)
    gu = randn((300, 2 * 14336), dtype, DEV, gen, std=3.0)
    close(silu_mul(gu), reference.silu_mul(gu), dtype)
