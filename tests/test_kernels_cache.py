"""Cache operations (kvsim.kernels.cache_ops) vs the torch references.

Runs the Triton kernels under the CPU interpreter when there is no CUDA (see test_kernels.py).
"""
import pytest

from tests._triton_interp import (CUDA, DEV, STALE_TRITON, needs_cuda,  # noqa: F401 (fixture)
                                  only_in_a_usable_process, torch)  # sets up Triton first

from kvsim.errors import KvsimError  # noqa: E402
from kvsim.kernels import copy_blocks, copy_blocks_planes, reference, swap_blocks, swap_runs, write_kv  # noqa: E402
from kvsim.kernels.inputs import randn, run_file_in_fresh_interpreter  # noqa: E402



@pytest.mark.skipif(not STALE_TRITON, reason="this process can run the kernels itself")
def test_rerun_in_fresh_interpreter():
    assert run_file_in_fresh_interpreter(__file__) == 0


def _caches(nb, bs, h, d, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    return randn((nb, bs, h, d), dtype, DEV, gen), randn((nb, bs, h, d), dtype, DEV, gen), gen


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bs,h,d", [(1, 2, 64), (16, 2, 80), (4, 5, 96)])
def test_write_kv_matches_reference_and_skips_negative_slots(bs, h, d, dtype):
    kc, vc, gen = _caches(6, bs, h, d, dtype, seed=bs + h)
    k = randn((5, h, d), dtype, DEV, gen)
    v = randn((5, h, d), dtype, DEV, gen)
    slots = torch.randperm(6 * bs, generator=gen)[:5].to(torch.int64)
    slots[2] = -1  # padding token: must not be written anywhere
    slots = slots.to(DEV)
    kr, vr = kc.clone(), vc.clone()
    reference.write_kv(k, v, kr, vr, slots)
    write_kv(k, v, kc, vc, slots)
    assert torch.equal(kc, kr) and torch.equal(vc, vr)


def test_write_kv_strided_input_int32_slots():
    kc, vc, gen = _caches(3, 8, 2, 64, torch.float16, seed=2)
    qkv = randn((4, 3, 2, 64), torch.float16, DEV, gen)  # k, v as views into a fused tensor
    k, v = qkv[:, 1], qkv[:, 2]
    slots = torch.tensor([0, 9, 23, 17], dtype=torch.int32, device=DEV)
    kr, vr = kc.clone(), vc.clone()
    reference.write_kv(k, v, kr, vr, slots)
    write_kv(k, v, kc, vc, slots)
    assert torch.equal(kc, kr) and torch.equal(vc, vr)


@pytest.mark.parametrize("bs", [1, 16, 256])
def test_copy_blocks_one_launch_matches_reference(bs):
    kc, vc, _ = _caches(8, bs, 2, 64, torch.float16, seed=bs)
    pairs = [(0, 5), (3, 1), (3, 7), (6, 2)]  # one source copied twice (fork of a fork)
    kr, vr = kc.clone(), vc.clone()
    reference.copy_blocks(kr, vr, pairs)
    copy_blocks(kc, vc, torch.tensor(pairs, device=DEV))
    assert torch.equal(kc, kr) and torch.equal(vc, vr)
    copy_blocks(kc, vc, [])  # no pairs: no launch, no error
    with pytest.raises(KvsimError, match="pairs"):
        copy_blocks(kc, vc, [(0, 8)])


@pytest.mark.parametrize("bs,planes", [(1, 2), (16, 6), (16, 64)])
def test_copy_blocks_planes_copies_every_plane_in_one_launch(bs, planes):
    """Every layer's K and V as planes of one tensor: each pair copied in every plane, nothing else touched,
    the same as copy_blocks plane pair by plane pair and as the torch backend."""
    gen = torch.Generator().manual_seed(bs + planes)
    cache = randn((planes, 8, bs, 2, 64), torch.float16, DEV, gen)
    pairs = [(0, 5), (3, 1), (3, 7), (6, 2)]
    want = cache.clone()
    for i in range(0, planes, 2):
        reference.copy_blocks(want[i], want[i + 1], pairs)
    torch_side = cache.clone()
    copy_blocks_planes(cache, torch.tensor(pairs, device=DEV))
    copy_blocks_planes(torch_side, pairs, backend="torch")
    assert torch.equal(cache, want) and torch.equal(torch_side, want)
    copy_blocks_planes(cache, [])                     # no pairs: no launch, no error
    with pytest.raises(KvsimError, match="pairs"):
        copy_blocks_planes(cache, [(0, 8)])
    with pytest.raises(KvsimError, match="planes"):
        copy_blocks_planes(cache[:, :4].transpose(0, 1), pairs)


def test_the_engine_cache_copies_every_layer_with_one_call():
    from kvsim.engine.kv_cache import KVCache
    cache = KVCache(3, 6, 4, 2, 32, 0, torch.float16, torch.device(DEV), "triton")
    gen = torch.Generator().manual_seed(5)
    cache.planes.copy_(randn(tuple(cache.planes.shape), torch.float16, DEV, gen))
    assert all(k.data_ptr() == cache.planes[2 * i].data_ptr() and v.data_ptr() == cache.planes[2 * i + 1].data_ptr()
               for i, (k, v) in enumerate(cache.gpu))      # layer i's K and V are planes 2i and 2i + 1
    want = [(k.clone(), v.clone()) for k, v in cache.gpu]
    for k, v in want:
        reference.copy_blocks(k, v, [(1, 4), (2, 5)])
    cache.copy([(1, 4), (2, 5)])
    assert all(torch.equal(k, wk) and torch.equal(v, wv) for (k, v), (wk, wv) in zip(cache.gpu, want))
    with pytest.raises(ValueError, match="block ids"):
        cache.copy([(1, 6)])


def test_swap_runs_merge_contiguous_blocks():
    mapping = [(7, 2), (3, 10), (4, 11), (5, 12), (8, 3), (20, 0)]
    assert swap_runs(mapping) == [(3, 10, 3), (7, 2, 2), (20, 0, 1)]
    assert swap_runs(mapping, per_block=True) == [(s, d, 1) for s, d in sorted(mapping)]
    assert swap_runs([(1, 5), (2, 7)]) == [(1, 5, 1), (2, 7, 1)]  # dst not contiguous


@pytest.mark.parametrize("per_block", [False, True])
def test_swap_blocks_cpu(per_block):
    src, _, gen = _caches(12, 4, 2, 8, torch.float16, seed=1)
    src = src.cpu()
    dst = randn((6, 4, 2, 8), torch.float16, "cpu", gen)
    mapping = [(2, 0), (3, 1), (4, 2), (9, 5)]
    want = dst.clone()
    reference.swap_blocks(src, want, mapping)
    n = swap_blocks(src, dst, mapping, per_block=per_block)
    assert n == (4 if per_block else 2)
    assert torch.equal(dst, want)
    with pytest.raises(KvsimError, match="mapping"):
        swap_blocks(src, dst, [(11, 6)])


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("per_block", [False, True])
def test_gpu_swap_roundtrip_pinned(per_block):
    gpu_cache, _, gen = _caches(64, 16, 8, 128, torch.float16, seed=3)
    cpu_cache = torch.empty((32, 16, 8, 128), dtype=torch.float16).pin_memory()
    out_map = [(b, i) for i, b in enumerate(range(10, 30))] + [(40, 25), (50, 26)]
    n = swap_blocks(gpu_cache, cpu_cache, out_map, per_block=per_block)
    assert n == (22 if per_block else 3)
    back = randn((64, 16, 8, 128), torch.float16, DEV, gen)
    swap_blocks(cpu_cache, back, [(d, s) for s, d in out_map], per_block=per_block)
    torch.cuda.synchronize()
    idx = torch.tensor([s for s, _ in out_map], device=DEV)
    assert torch.equal(back[idx], gpu_cache[idx])
