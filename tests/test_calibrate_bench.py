"""kvsim.calibrate.measure._bench (the calibration's timer) against triton.testing.do_bench on the GPU: the same
median (within 15%) for a short and a long GEMM."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("n", [256, 4096])
def test_bench_agrees_with_do_bench(n):
    from triton.testing import do_bench
    from kvsim.calibrate import measure as M
    a = torch.randn(n, n, device="cuda", dtype=torch.float16)
    ours = M._bench(lambda: a @ a)
    theirs = do_bench(lambda: a @ a, warmup=25, rep=100, return_mode="median") / 1e3
    assert ours == pytest.approx(theirs, rel=0.15)
