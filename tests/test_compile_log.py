"""The engine's record of Triton kernels compiled while it serves (kvsim/engine/compile_log.py)."""
from __future__ import annotations

import pytest

from kvsim.engine import compile_log as CL


class _Runtime:
    jit_post_compile_hook = None


class _Fn:
    name = "_decode_kernel"


def test_compiles_are_counted_with_their_step_chained_and_the_hook_restored(monkeypatch):
    rt = _Runtime()
    seen = []
    rt.jit_post_compile_hook = lambda *a, **k: seen.append(k["fn"].name)      # someone else's hook
    before = rt.jit_post_compile_hook
    monkeypatch.setattr(CL, "_runtime_knobs", lambda: rt)
    with CL.CompileLog() as log:
        log.step = 3
        rt.jit_post_compile_hook(key="k", repr="r", fn=_Fn(), compile={}, is_manual_warmup=False, already_compiled=False)
        log.step = 7
        rt.jit_post_compile_hook(fn=_Fn())
    assert rt.jit_post_compile_hook is before and seen == ["_decode_kernel"] * 2
    info = log.info()
    assert info["kernels_compiled_while_serving"] == 2
    assert info["kernels_compiled_while_serving_first"] == [{"step": 3, "kernel": "_decode_kernel", "spec": "r"},
                                                            {"step": 7, "kernel": "_decode_kernel", "spec": ""}]


def test_the_kept_list_is_bounded_but_the_count_is_whole(monkeypatch):
    rt = _Runtime()
    monkeypatch.setattr(CL, "_runtime_knobs", lambda: rt)
    with CL.CompileLog() as log:
        for _ in range(CL.MAX_EVENTS + 5):
            rt.jit_post_compile_hook(fn=_Fn())
    assert log.info()["kernels_compiled_while_serving"] == CL.MAX_EVENTS + 5
    assert len(log.info()["kernels_compiled_while_serving_first"]) == CL.MAX_EVENTS
    assert rt.jit_post_compile_hook is None


def test_without_triton_hooks_nothing_is_recorded(monkeypatch):
    monkeypatch.setattr(CL, "_runtime_knobs", lambda: None)
    with CL.CompileLog() as log:
        pass
    assert log.info()["kernels_compiled_while_serving"] == 0


def test_an_engine_run_reports_its_compiles():
    torch = pytest.importorskip("torch")
    import kvsim
    from kvsim.catalogue import get_model
    from kvsim.engine.engine import RealEngine
    from kvsim.engine.models import build_model
    sc = kvsim.load_scenario({
        "name": "clog", "model": "tiny-opt", "gpu": "a100-40gb", "dtype": "fp32",
        "engine": {"block_size": 4, "num_gpu_blocks": 200, "max_num_batched_tokens": 128, "max_num_seqs": 8},
        "workload": {"dataset": "uniform", "prompt_len_range": [3, 12], "output_len_range": [2, 6],
                     "arrival": "burst", "num_requests": 4},
        "runtime": {"device": "cpu", "attention_backend": "torch"}, "seed": 1})
    model = build_model(get_model("tiny-opt"), dtype=torch.float32, device=torch.device("cpu"), weights="dummy")
    info = RealEngine(sc, model=model).run().info
    assert info["kernels_compiled_while_serving"] == 0 and info["kernels_compiled_while_serving_first"] == []
