"""Time the engine's sampling calls alone on the GPU: greedy rows vs a beam step, per number of beam groups.

Wall time per call as the host sees it (each call ends in a device-to-host copy), median of --reps after
warm-up. Logits are random [rows, vocab] float16 rows (Llama-3's vocabulary by default).
usage: python benchmarks/engine/beam_sampler_cost.py --out DIR [--vocab 128256]
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time

import torch

from kvsim.engine import sampling


def _time(fn, reps: int) -> float:
    for _ in range(5):
        fn()
    out = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--reps", type=int, default=200)
    a = ap.parse_args()
    rows = []
    for k in (2, 4):
        for g in (1, 2, 4, 8, 16, 32):
            logits = torch.randn(g * k, a.vocab, device="cuda", dtype=torch.float16)
            scores = [[-1.0 * j for j in range(k)] for _ in range(g)]
            greedy = _time(lambda: sampling.sample_rows(logits, "greedy", 1.0, 1.0, None), a.reps)
            beam = _time(lambda: sampling.beam_steps(logits, scores), a.reps)
            first = _time(lambda: sampling.beam_first_steps(logits[:g], k), a.reps)
            rows.append(dict(width=k, groups=g, rows=g * k, greedy_ms=greedy, beam_ms=beam, beam_first_ms=first))
            print(f"k={k} groups={g:3d} rows={g*k:3d} greedy {greedy:.3f} ms  beam {beam:.3f} ms  first {first:.3f} ms")
    p = pathlib.Path(a.out)
    p.mkdir(parents=True, exist_ok=True)
    (p / "beam_sampler_cost.json").write_text(json.dumps(dict(gpu=torch.cuda.get_device_name(), vocab=a.vocab,
                                                               rows=rows), indent=1))


if __name__ == "__main__":
    main()
