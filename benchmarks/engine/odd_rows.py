"""Whole decode steps by row count, timed the calibration grid's way: does a step between CUDA-graph batch sizes
cost more than the graph size's own?

Why. Priced one by one, the engine's 3-row decode steps at <=256 tokens a row took more than its 4-row ones in both
Llama-3-8B overlapped sets (H100-async-1207b 6.794 vs 6.624 ms, H200-async 5.098 vs 5.055 ms) though both replay
the 4-row graph, and the LM head is not the cause (``lm_head_rows.py`` on an H100, 2026-12-07: 3 rows as fast as
4). The calibration's decode grid is timed at graph sizes only, so it cannot say. This times the grid's step --
the decode graph of ``padded(n)`` replayed with ``n`` real rows (the rest padded with context 0, as the engine
does), the LM head on the rows padded to that size (``runtime.pad_logits``), greedy draws and their copy to the
host -- for every ``n`` in ``--rows`` at each context of ``--ctx``, with :func:`kvsim.calibrate.measure._bench`
(the grid's timer). Random blocks from a pool as large as the grid's; dummy weights.

Prediction (written before any run): at a fixed context, a step of ``n`` rows costs within 0.02 ms of the graph
size's own step, rising monotonically with ``n`` inside a bucket (fewer padded rows, more attention); if 3 rows
costs more than 4 by over 0.05 ms here, the 3-row excess is in the graph replay itself, else it is in the engine's
serving path (host, sampling) and this shows it is not the kernel's.

Result (an H100, 2026-12-07 09:50 and 10:03, ``benchmarks/engine/results_H100/async_1207d/odd_rows/``): wrong in
part. Llama-3-8B's 3 rows cost 0.061 ms more than 4 at 64 tokens a row but 0.024 ms less at 256, where the engine's
3-row excess was seen: that excess is not the replay. Inside a bucket the step rises with the rows by up to 0.43 ms
(OPT-13B, graph 16, 256 tokens), not 0.02 (padded rows read no KV; the grid's mean context over the graph batch
carries it). OPT-13B's 9-16-row steps at 64 tokens cost less than its 5-8-row ones: the 16-row graph is faster there.

usage (GPU): python benchmarks/engine/odd_rows.py --model llama-3-8b [--rows 1-17] [--ctx 64,256] --out DIR
CPU check of the plumbing (tiny model, wall clock): ... --model tiny-llama --cpu
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from lm_head_rows import parse_rows, pick_device, time_call  # noqa: E402

from kvsim.calibrate import measure as M  # noqa: E402
from kvsim.calibrate.steps import KV_POOL_TOKENS  # noqa: E402
from kvsim.catalogue import get_model  # noqa: E402
from kvsim.graph_sizes import graph_batch_sizes, padded  # noqa: E402


class StepHarness:
    """The grid's way of timing a whole decode step (module doc), built once: ``time_step(contexts)`` times the
    step of those rows' contexts (each counting its new token) at its decode graph's batch size, in ms;
    ``reference_ms()`` the card's reference step (:mod:`kvsim.engine.reference_step`) in the same harness.
    ``max_rows`` / ``max_ctx``: the largest step it will be asked for (the pool and graphs are sized for it).
    ``split_ref_len``: the length the graphs' split-KV partitions are sized for (default: the model's longest
    sequence, as the engine's graphs)."""

    def __init__(self, model_name: str, max_rows: int, max_ctx: int, device: torch.device, block_size: int = 16,
                 reps: int = 15, split_ref_len: int | None = None):
        from kvsim.engine.cuda_graphs import DecodeGraphs
        from kvsim.engine.models import build_model
        spec = get_model(model_name)
        self.device, self.block_size, self.reps, self.vocab = device, block_size, reps, spec.vocab_size
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        self.model = build_model(spec, dtype=dtype, device=device, weights="dummy")
        self.backend = M.BACKEND if device.type == "cuda" else "torch"
        self.sizes = [b for b in graph_batch_sizes(256) if b <= padded(max_rows, graph_batch_sizes(256))]
        need = max_rows * (-(-(max_ctx + 1) // block_size)) + 1
        self.pool = max(KV_POOL_TOKENS // block_size, need) if device.type == "cuda" else need   # (the grid's)
        self.caches = [M._cache(self.model, self.pool, block_size, device) for _ in range(self.model.num_layers)]
        # graphs captured for the model's longest sequence, as the engine's are
        self.graphs = DecodeGraphs(self.model, self.caches, block_size=block_size, max_batch=self.sizes[-1],
                                   max_context_len=spec.max_seq_len, backend=self.backend,
                                   batch_sizes=self.sizes, split_ref_len=split_ref_len) if device.type == "cuda" else None
        self.gen = torch.Generator().manual_seed(0)

    def time_step(self, contexts: list[int]) -> float:
        """Milliseconds of one decode step of ``len(contexts)`` rows at those contexts (module doc)."""
        from kvsim.engine.synthetic_step import synthetic_step
        n = len(contexts)
        b = padded(n, self.sizes)
        with torch.inference_mode():
            ids, pos, meta = synthetic_step([], list(contexts), block_size=self.block_size, num_blocks=self.pool,
                                            vocab_size=self.vocab, device=self.device, backend=self.backend,
                                            generator=self.gen)

            def step():
                h = self.graphs.run(ids, pos, meta) if self.graphs is not None else \
                    self.model(ids, pos, self.caches, meta)
                if h.shape[0] < b:              # the runner's padded LM head: the last row repeated
                    h = torch.cat([h, h[-1:].expand(b - h.shape[0], -1)])
                return self.model.compute_logits(h)[:n].argmax(-1).tolist()
            t = (M._bench(step, warmup=3, rep=self.reps, min_samples=M.STEP_SAMPLES) if self.device.type == "cuda"
                 else time_call(step, 2, False))        # (the CPU: a plumbing check, wall clock)
        return t * 1e3

    def reference_ms(self) -> float | None:
        """The card's reference step in this harness, ms (None off CUDA)."""
        from kvsim.engine.reference_step import reference_step
        ref = reference_step(self.model, self.caches, self.graphs, block_size=self.block_size,
                             num_blocks=self.pool, backend=self.backend, device=self.device)
        return None if ref is None else ref["time_s"] * 1e3


def measure(model_name: str, rows: list[int], ctxs: list[int], device: torch.device, block_size: int = 16,
            reps: int = 15) -> list[dict]:
    """``{"rows", "graph_rows", "ctx", "ms"}`` per (row count, context): the step timed as the module doc says."""
    h = StepHarness(model_name, max(rows), max(ctxs), device, block_size, reps)
    return [{"rows": n, "graph_rows": padded(n, h.sizes), "ctx": c, "ms": round(h.time_step([c] * n), 4)}
            for c in ctxs for n in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama-3-8b")
    ap.add_argument("--rows", default="1-17")
    ap.add_argument("--ctx", default="64,256")
    ap.add_argument("--out", required=True)
    ap.add_argument("--cpu", action="store_true", help="run on the CPU (plumbing check; the times mean nothing)")
    a = ap.parse_args()
    rows = parse_rows(a.rows)
    try:
        ctxs = sorted({int(c) for c in a.ctx.split(",")})
    except ValueError:
        raise SystemExit(f"error: --ctx: {a.ctx!r} is not a comma-separated list of token counts") from None
    if min(ctxs) < 1:
        raise SystemExit("error: --ctx: contexts must be >= 1 token")
    device = pick_device(a.cpu)
    res = measure(a.model, rows, ctxs, device)
    card = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "odd_rows.json").write_text(json.dumps({"model": a.model, "card": card, "rows": res}, indent=1))
    print(f"decode steps of {a.model} on {card}, ms by rows (graph size) and context a row")
    by = {(r["rows"], r["ctx"]): r for r in res}
    print("rows (graph) " + " ".join(f"{c:>9}" for c in ctxs))
    sizes = graph_batch_sizes(256)
    for n in rows:
        print(f"{n:>4} ({padded(n, sizes):>3})   " + " ".join(f"{by[(n, c)]['ms']:9.4f}" for c in ctxs))


if __name__ == "__main__":
    main()
