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
