"""benchmarks/engine/mixed_floor.py: a step's sequential floor (its kernels one after another, each at its ceiling)
beside the classic roofline, on the CPU."""
from __future__ import annotations

import pytest

from tests._scripts import load_script

DOC = {"model": "Llama-3-8B", "copy_bw_Bps": 3.0e12, "gemm_flops": 750e12}


def _row(kind, n=0, ctx=0, chunk=0, **kw):
    return {"kind": kind, "decode_rows": n, "ctx": ctx, "chunk": chunk, "roofline_ms": 1.0, **kw}


def test_the_floor_adds_the_kv_read_to_compute_bound_gemms():
    F = load_script("benchmarks/engine/mixed_floor.py")
    from kvsim.catalogue import get_model
    m = get_model("llama-3-8b")
    # 64 rows x 1,024 + a 448-token chunk: GEMMs compute-bound, so the floor is their FLOP time plus the KV read
    _, floor = F.floors(DOC, _row("mixed", 64, 1024, 448))
    kv = m.kv_bytes_per_token(2) * (64 * 1024 + 448) / DOC["copy_bw_Bps"]
    layer = m.num_layers * m.linear_params_per_layer(1)
    gemm = (2 * layer * 512 + 2 * m.vocab_size * m.hidden_size * 65) / DOC["gemm_flops"]
    assert floor == pytest.approx((gemm + kv) * 1e3, rel=0.02)


def test_spread_rows_read_their_own_contexts_not_the_longest_times_rows():
    F = load_script("benchmarks/engine/mixed_floor.py")
    from kvsim.cost.profile import spread_contexts
    spread = F.floors(DOC, _row("mixed_spread", 8, 4096, 256))[1]
    twin = F.floors(DOC, _row("mixed_twin", 8, round(sum(spread_contexts(8, 4096)) / 8), 256))[1]
    top = F.floors(DOC, _row("mixed", 8, 4096, 256))[1]
    assert spread == pytest.approx(twin, rel=1e-3) and spread < top
