"""The idle engine's wake on the CPU (tiny-llama, 30 Poisson arrivals at 20/s, 2-3 output tokens): median and p90
of arrival-to-scheduling for requests reaching an idle engine, the serving loop's last SPIN seconds of each idle wait
spun instead of slept. usage: python benchmarks/engine/wake_cpu.py SPIN (0: a plain sleep)"""
import sys

import numpy as np

import kvsim
import kvsim.engine.serve_loop as S
from kvsim.card_speed import idle_waits
from kvsim.engine.engine import RealEngine

spin = float(sys.argv[1])
S.WAKE_SPIN_S = spin
sc = kvsim.load_scenario({"name": "w", "model": "tiny-llama", "gpu": "a100-40gb", "seed": 4,
    "engine": {"block_size": 8, "num_gpu_blocks": 40, "max_num_seqs": 8, "max_num_batched_tokens": 256},
    "workload": {"dataset": "uniform", "prompt_len_range": [8, 40], "output_len_range": [2, 3],
                 "num_requests": 30, "arrival": "poisson", "rate_req_s": 20},
    "runtime": {"device": "cpu", "cuda_graphs": False, "warmup": False}})
r = RealEngine(sc).run()
w = np.array(idle_waits(r.requests)) * 1e3
print(f"spin {spin*1e3:.1f} ms: {len(w)} idle wakes, median {np.median(w):.3f} ms, p90 {np.percentile(w, 90):.3f}")
