"""Limits on every size a scenario can ask for: they keep one run's memory bounded.

A scenario past a limit is refused with a one-line error before anything is
allocated. The limits are far above any real deployment (vLLM's own block sizes
stop at 256, its batches at a few thousand sequences) but low enough that the
simulator's per-request and per-block records fit in a few GiB of RAM.
"""
from __future__ import annotations

MAX_REQUESTS = 2_000_000          # requests in one workload (RequestSpec + records: ~1 KiB each)
MAX_BLOCKS = 1 << 23              # KV blocks on the GPU or the CPU (block manager: ~80 B per block)
MAX_TOKENS = 1 << 24              # any token length: model length, prompt, output, prefix
MAX_BLOCK_SIZE = 1 << 16          # tokens per KV block
MAX_SEQS = 1 << 16                # sequences in one batch
MAX_SAMPLES = 1024                # parallel samples (n) or beams per request
MAX_TP = 1024                     # tensor-parallel degree
MAX_SECONDS = 1e9                 # any duration or time limit (~32 years)
MAX_RATE = 1e9                    # arrival rate, requests/s
MIN_RATE = 1e-9
MIN_EFFICIENCY = 1e-6             # roofline efficiencies: a smaller one overflows the run's time sums
MAX_SWAP_GIB = 1 << 20            # CPU swap space per GPU
MAX_SEED = (1 << 63) - 1
MAX_NAME = 200                    # characters of a scenario name
MAX_GRID_POINTS = 10_000        # points of one sweep/plan grid
