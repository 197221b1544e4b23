"""kvsim.engine.reuse: engine runs that share one KV cache and set of CUDA graphs (kvsim calibrate's short runs)
run exactly as freshly built engines do; the parts are kept only for runs they fit."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import kvsim  # noqa: E402
from kvsim.catalogue import get_model  # noqa: E402
from kvsim.engine.engine import RealEngine  # noqa: E402
from kvsim.engine.models import build_model  # noqa: E402
from kvsim.engine.reuse import EngineParts  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")])]


def _scenario(device: str, blocks: int = 300, bs: int = 4, seed: int = 2, n: int = 12, **engine):
    return kvsim.load_scenario({
        "name": "reuse", "model": "tiny-opt", "gpu": "a100-40gb", "dtype": "fp32",
        "engine": {"block_size": bs, "num_gpu_blocks": blocks, "swap_space_gib": 0, "max_num_batched_tokens": 256,
                   "max_num_seqs": 16, **engine},
        "workload": {"dataset": "uniform", "prompt_len_range": [3, 30], "output_len_range": [4, 20],
                     "arrival": "burst", "num_requests": n},
        "runtime": {"device": device, "attention_backend": "torch" if device == "cpu" else "triton"},
        "seed": seed})


def _same_run(a, b):
    assert a.outputs == b.outputs
    cols = ["prefill_tokens", "decode_seqs", "mem_used", "running"]
    assert a.iterations[cols].equals(b.iterations[cols])


@pytest.mark.parametrize("device", DEVICES)
def test_runs_through_kept_parts_equal_fresh_engines(device):
    """Every run through one EngineParts gives the tokens and scheduling records of a fresh engine of its
    scenario; runs that fit the kept cache take it (no new build), a bigger pool or another block size builds
    anew, and warm-ups are not repeated."""
    model = build_model(get_model("tiny-opt"), dtype=torch.float32, device=torch.device(device), weights="dummy")
    parts = EngineParts()
    parts.reserve(400)
    plan = [_scenario(device, blocks=300), _scenario(device, blocks=120, seed=5, n=20),   # kept (fits 400)
            _scenario(device, blocks=900),                                               # bigger: built
            _scenario(device, blocks=200, seed=7),                                       # kept (fits 900)
            _scenario(device, blocks=200, bs=8)]                                         # other block size: built
    kept = []
    for sc in plan:
        eng = RealEngine(sc, model=model, parts=parts)
        kept.append(eng.parts_kept)
        assert eng.cache.num_blocks >= sc.engine.num_gpu_blocks
        res = eng.run()
        assert res.info["engine_parts_kept"] == eng.parts_kept
        _same_run(res, RealEngine(sc, model=model).run())
    assert kept == [False, True, False, True, False]
    assert (parts.builds, parts.reuses) == (3, 2)
    assert parts.kept.cache.num_blocks == 400        # the last build: at least the reserve


def test_kept_parts_are_dropped_for_other_settings():
    """A run whose graph settings differ (here the prefill token budget) never takes the kept cache and graphs."""
    model = build_model(get_model("tiny-opt"), dtype=torch.float32, device=torch.device("cpu"), weights="dummy")
    parts = EngineParts()
    RealEngine(_scenario("cpu"), model=model, parts=parts)
    eng = RealEngine(_scenario("cpu", max_num_batched_tokens=128), model=model, parts=parts)
    assert not eng.parts_kept and parts.builds == 2
    eng = RealEngine(_scenario("cpu", max_num_batched_tokens=128), model=model, parts=parts)
    assert eng.parts_kept


def test_warm_up_is_skipped_only_when_seen(monkeypatch):
    """The warm-up runs once per set of arguments in a process with shared parts; without parts, every time."""
    calls = []
    monkeypatch.setattr(RealEngine, "_warms_up", lambda self: True)
    monkeypatch.setattr(RealEngine, "_warm_up", lambda self: calls.append(self.sc.engine.max_num_batched_tokens) or 1.0)
    model = build_model(get_model("tiny-opt"), dtype=torch.float32, device=torch.device("cpu"), weights="dummy")
    parts = EngineParts()
    for budget in (256, 256, 128, 256):
        RealEngine(_scenario("cpu", max_num_batched_tokens=budget), model=model, parts=parts)
    assert calls == [256, 128]
    RealEngine(_scenario("cpu"), model=model)
    RealEngine(_scenario("cpu"), model=model)
    assert calls == [256, 128, 256, 256]


def test_calibration_parts_hold_the_largest_planned_run(monkeypatch):
    """The calibration reserves the largest of its runs' pools that it will make: the serving runs whose KV
    fits the free memory, the step-overhead runs, the prefill overhead runs."""
    from kvsim.calibrate import engine_runs as E
    from kvsim.calibrate import serving_fit as S
    prof = {"model": "opt-13b", "dtype": "fp16"}
    spec = get_model("opt-13b")
    need = {n: S.serving_scenario(prof, 16, n, "cuda").engine.num_gpu_blocks for n in S.ROWS}
    per_block = 16 * spec.kv_bytes_per_token(2)
    free = int(need[64] * per_block / S.KV_MEMORY_SHARE) + 1      # 64 rows fit, 128 do not
    monkeypatch.setattr(E, "free_gpu_bytes", lambda device: free)
    parts = E.calibration_parts(prof, 16, "cuda")
    assert parts.min_blocks == max(need[64], E.overhead_blocks(max(E.OVERHEAD_BATCH), 16))
    monkeypatch.setattr(E, "free_gpu_bytes", lambda device: 10 * 2 ** 30)   # only small serving runs fit
    assert E.calibration_parts(prof, 16, "cuda").min_blocks == E.overhead_blocks(max(E.OVERHEAD_BATCH), 16)
    no_overhead = E.calibration_parts(prof, 16, "cuda", overhead=False, serving=False).min_blocks
    assert no_overhead == E.prefill_blocks(spec.max_seq_len, 0, 16, 0)
