"""Why do engine decode steps run slower than the calibrated grid? (diagnostic, one device call)

Same process, OPT-13B dummy fp16: (A) the calibrate overhead-fit workload (burst, n=1, prompt 128,
48 tokens), (B) the v01 validation scenario for 25 s, (A) again, then the profile's grid point
(graph decode step, batch 1, ctx 512, do_bench). Prints per-phase medians of the engine's
duration / gpu_s / cpu_s at batch 1 with wall-clock stamps; run nvidia-smi alongside to see clocks.
"""
import json
import sys
import time

import torch

import kvsim
from kvsim.calibrate.measure import _bench, _cache
from kvsim.calibrate.steps import KV_POOL_TOKENS
from kvsim.catalogue import get_model
from kvsim.engine.cuda_graphs import DecodeGraphs
from kvsim.engine.engine import RealEngine
from kvsim.engine.models import build_model
from kvsim.engine.synthetic_step import synthetic_step

T0 = time.time()


def stamp(tag, its=None, **kw):
    row = {"tag": tag, "t": round(time.time() - T0, 2), **kw}
    if its is not None:
        d = its[(its.prefill_tokens == 0) & (its.decode_seqs == 1)].iloc[3:]
        row.update(n=len(d), dur_ms=d.duration_s.median() * 1e3, gpu_ms=d.gpu_s.median() * 1e3,
                   cpu_ms=d.cpu_s.median() * 1e3)
        p = its[its.prefill_tokens > 0]
        row.update(prefill_ms=p.duration_s.median() * 1e3 if len(p) else None)
    print(json.dumps(row), flush=True)


def median_wall_ms(fn, n: int, sleep_s: float) -> float:
    """Median wall time of ``fn`` over ``n`` calls, each after sleeping ``sleep_s``."""
    ts = []
    for _ in range(n):
        if sleep_s:
            time.sleep(sleep_s)
        a = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - a)
    return sorted(ts)[n // 2] * 1e3


def burst(model, blocks=None):
    sc = kvsim.load_scenario({
        "name": "A", "model": "opt-13b", "gpu": "h100-80gb",
        "engine": {"block_size": 16, **({"num_gpu_blocks": blocks} if blocks else {}), "max_num_seqs": 256,
                   "max_num_batched_tokens": 8192, "swap_space_gib": 0},
        "workload": {"dataset": "fixed", "prompt_len": 128, "output_len": 200, "arrival": "burst", "num_requests": 1},
        "runtime": {"device": "cuda"}, "seed": 0})
    return RealEngine(sc, model=model).run().iterations


def main():
    spec = get_model("opt-13b")
    model = build_model(spec, dtype=torch.float16, device=torch.device("cuda"), weights="dummy")
    stamp("A1 small cache", burst(model, blocks=77))
    stamp("A2 measured cache", burst(model))
    sc = kvsim.load_scenario("scenarios/validation/v01_opt13b_sharegpt_paged_low.yaml",
                             ["runtime.max_wall_s=25", "max_time_s=25"])
    stamp("B v01 25s", RealEngine(sc, model=model).run().iterations)
    stamp("A3 small cache", burst(model, blocks=77))
    stamp("A4 measured cache", burst(model))
    bs = 16
    pool = KV_POOL_TOKENS // bs
    caches = [_cache(model, pool, bs, "cuda") for _ in range(model.num_layers)]
    g = DecodeGraphs(model, caches, block_size=bs, max_batch=1, max_context_len=spec.max_seq_len, backend="triton",
                     batch_sizes=[1])
    with torch.inference_mode():
        for c in (128, 512):
            ids, pos, meta = synthetic_step([], [c], block_size=bs, num_blocks=pool, vocab_size=spec.vocab_size,
                                            device="cuda", backend="triton")

            def step():
                model.compute_logits(g.run(ids, pos, meta)).argmax(-1).tolist()
            t = _bench(step, warmup=3, rep=15)
            # the same step timed like the engine: wall clock around replay + sync, no L2 flush
            stamp(f"D grid ctx {c}", do_bench_ms=t * 1e3, wall_loop_ms=median_wall_ms(step, 200, 0.0))
            stamp(f"D grid ctx {c} after 0.5 ms sleep", wall_loop_ms=median_wall_ms(step, 50, 0.0005))
            stamp(f"D grid ctx {c} after 50 ms idle", wall_loop_ms=median_wall_ms(step, 20, 0.05))


if __name__ == "__main__":
    sys.exit(main())
