"""The engine's KV cache tensors: copy-on-write over every layer (CPU, reference backend)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from kvsim.engine.kv_cache import KVCache  # noqa: E402


def _cache(layer_slot=None, layers=3):
    c = KVCache(layers, 6, 4, 2, 8, 0, torch.float32, torch.device("cpu"), "torch", layer_slot=layer_slot)
    for i, (k, v) in enumerate(c.gpu):
        k.copy_(torch.randn_like(k))
        v.copy_(torch.randn_like(v))
    return c


@pytest.mark.parametrize("layer_slot", [None, (0, 1, 0)])
def test_copy_on_write_copies_every_layer_and_nothing_else(layer_slot):
    c = _cache(layer_slot)
    before = [(k.clone(), v.clone()) for k, v in c.gpu]
    c.copy([(1, 4), (2, 5)])
    for (k, v), (k0, v0) in zip(c.gpu, before):
        for src, dst in ((1, 4), (2, 5)):
            assert torch.equal(k[dst], k0[src]) and torch.equal(v[dst], v0[src])
        for untouched in (0, 1, 2, 3):
            assert torch.equal(k[untouched], k0[untouched])


def test_copy_checks_block_ids_on_the_host():
    c = _cache()
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        c.copy([(1, 6)])
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        c.copy([(-1, 2)])
    c.copy([])          # nothing to do


# ---------------------------------------------------------------- staged swaps (kvsim.engine.swap_staged)

def _swap_pair(layer_slot=None, cpu_blocks=7):
    """A per-layer and a staged cache with the same GPU contents."""
    caches = [KVCache(3, 9, 4, 2, 8, cpu_blocks, torch.float32, torch.device("cpu"), "torch", layer_slot=layer_slot,
                      staged_swap=staged) for staged in (False, True)]
    caches[1].planes.copy_(torch.randn_like(caches[1].planes))
    caches[0].planes.copy_(caches[1].planes)
    return caches


@pytest.mark.parametrize("layer_slot", [None, (0, 1, 0)])
@pytest.mark.parametrize("pairs", [[(3, 0), (4, 1), (5, 2)],            # one run
                                   [(8, 6), (0, 2), (5, 3), (2, 0)],     # scattered, CPU runs 2-3 and 0, 6
                                   [(7, 4)]])
@pytest.mark.parametrize("stage_bytes", [None, 1])      # one chunk; chunks of one block (the staging limit)
def test_staged_swap_moves_what_per_layer_swap_moves(layer_slot, pairs, stage_bytes, monkeypatch):
    if stage_bytes is not None:
        monkeypatch.setattr("kvsim.engine.swap_staged.STAGE_BYTES", stage_bytes)
    per_layer, staged = _swap_pair(layer_slot)
    for c in (per_layer, staged):
        c.swap_out(pairs)
    for (k0, v0), (k1, v1) in zip(per_layer.cpu, staged.cpu):     # every layer's CPU view holds the same blocks
        for _, cpu in pairs:
            assert torch.equal(k0[cpu], k1[cpu]) and torch.equal(v0[cpu], v1[cpu])
    # back into other GPU blocks
    back = [(cpu, (gpu + 1) % 9) for gpu, cpu in pairs]
    expect = staged.planes.clone()
    for gpu, cpu in pairs:
        expect[:, (gpu + 1) % 9] = staged.planes[:, gpu]
    untouched = [b for b in range(9) if b not in {g for _, g in back}]
    staged.swap_in(back)
    per_layer.swap_in(back)
    assert torch.equal(staged.planes, expect)
    assert torch.equal(per_layer.planes, expect)
    assert torch.equal(staged.planes[:, untouched], expect[:, untouched])


def test_staged_swap_issues_one_copy_per_run_of_cpu_blocks():
    per_layer, staged = _swap_pair()
    pairs = [(8, 6), (0, 2), (5, 3), (2, 0)]       # CPU ids 0 | 2, 3 | 6: three runs
    staged.swap_out(pairs)
    per_layer.swap_out(pairs)
    assert staged.transfers == 3
    assert per_layer.transfers == 2 * 3 * 4         # K and V of 3 layers, each pair its own run (GPU ids scattered)
    staged.swap_in([(0, 1), (2, 4), (3, 5)])        # CPU 0 | 2, 3
    assert staged.transfers == 3 + 2


def test_staged_swap_checks_ids_on_the_host():
    _, staged = _swap_pair()
    with pytest.raises(ValueError, match=r"\[0, 9\).*\[0, 7\)"):
        staged.swap_out([(9, 0)])
    with pytest.raises(ValueError, match=r"\[0, 9\).*\[0, 7\)"):
        staged.swap_in([(7, 0)])
    with pytest.raises(ValueError, match="distinct"):
        staged.swap_out([(1, 0), (2, 0)])
    staged.swap_out([])
    assert staged.transfers == 0


def test_cpu_runs():
    from kvsim.engine.swap_staged import cpu_runs
    assert cpu_runs([0, 2, 3, 6]) == [(0, 0, 1), (2, 1, 2), (6, 3, 1)]
    assert cpu_runs([]) == []
