"""The engine's sampling calls timed alone: ``sampling`` in a profile.

Why. The whole-step grids are timed with greedy sampling (one argmax over the rows' logits and one copy to
the host). A beam step instead runs, per beam width, a log-softmax over its beams' rows, adds the beams' scores
and takes a top-k over width × vocabulary per group (:mod:`kvsim.engine.sampling`); a beam group's first step
after its prompt takes a top-k over one row. On the H200 with Llama-3's 128,256-token vocabulary that was
0.30 ms per beam step against 0.054 ms for greedy, flat up to 32 rows and 0.58 ms at 128
(``benchmarks/engine/results_H200/serving_1605/README.md``), about 5% of a small batch's decode step, which
the profile did not price.

What. On random float32 logits at the model's vocabulary, each call as the engine makes it, timed with a
device sync after it (the engine's calls end in a copy to the host): ``greedy`` (argmax + copy) and ``beam``
(:func:`kvsim.engine.sampling.beam_steps` over groups of :data:`WIDTH` beams) by rows, ``beam_first``
(:func:`kvsim.engine.sampling.beam_first_steps`) by groups. Width 4 gave the same time as width 2 at equal
rows in that measurement (0.32 ms at 32 rows for both), so one width is timed. The cost model
(:mod:`kvsim.cost.sampling_price`) adds ``beam(rows) + beam_first(groups)``
and takes off ``greedy(rows)`` when the step draws no row independently. About two seconds on a GPU.
"""
from __future__ import annotations

ROWS = (2, 4, 8, 16, 32, 64, 128, 256)
FIRST_GROUPS = (1, 4, 16, 64)
WIDTH = 2
REPS = 50


def sampling_table(vocab: int, device, rows=ROWS, first_groups=FIRST_GROUPS, reps: int = REPS) -> dict:
    """``{"greedy": {"rows", "time_s"}, "beam": {"rows", "time_s"}, "beam_first": {"groups", "time_s"},
    "vocab", "beam_width"}`` for a profile (see module doc); runs on any torch device (CPU in tests)."""
    import torch

    from kvsim.engine import sampling
    from kvsim.engine.host_timing import host_timed      # each call as the host sees it, device synced
    dev = torch.device(device)
    gen = torch.Generator(device=dev).manual_seed(0)
    greedy, beam, first = [], [], []
    for r in rows:
        logits = torch.randn(r, vocab, device=dev, generator=gen)
        scores = [[-float(j) for j in range(WIDTH)] for _ in range(r // WIDTH)]
        greedy.append(host_timed(lambda: sampling.sample_rows(logits, "greedy", 1.0, 1.0, None), reps, warmup=3))
        beam.append(host_timed(lambda: sampling.beam_steps(logits[: WIDTH * len(scores)], scores), reps, warmup=3))
    for g in first_groups:
        logits = torch.randn(g, vocab, device=dev, generator=gen)
        first.append(host_timed(lambda: sampling.beam_first_steps(logits, WIDTH), reps, warmup=3))
    return {"greedy": {"rows": list(rows), "time_s": greedy}, "beam": {"rows": list(rows), "time_s": beam},
            "beam_first": {"groups": list(first_groups), "time_s": first}, "vocab": int(vocab),
            "beam_width": WIDTH}


def describe(table: dict) -> str:
    """One log line: the greedy and beam times by rows, in ms."""
    def ms(key):
        return ", ".join(f"{r}: {t * 1e3:.3f}" for r, t in zip(table[key]["rows"], table[key]["time_s"]))
    return f"sampling (ms): greedy {ms('greedy')}; beam {ms('beam')}"
