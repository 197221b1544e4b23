"""The engine's sampling calls timed alone: ``sampling`` in a profile.

Why. The whole-step grids are timed with greedy sampling (one argmax over the rows' logits and one copy to
the host). A beam step instead runs, per beam width, a log-softmax over its beams' rows, adds the beams' scores
and takes a top-k over width × vocabulary per group (:mod:`kvsim.engine.sampling`); a beam group's first step
after its prompt takes a top-k over one row. On the H200 with Llama-3's 128,256-token vocabulary that was
0.30 ms per beam step against 0.054 ms for greedy, flat up to 32 rows and 0.58 ms at 128
(``benchmarks/engine/results_H200/serving_1605/README.md``), about 5% of a small batch's decode step, which
the profile did not price.

What. On random float32 logits at the model's vocabulary, each call as the engine makes it: ``greedy`` (argmax
+ copy to the host) and ``beam`` (:func:`kvsim.engine.sampling.beam_steps` over groups of :data:`WIDTH` beams) by
rows, ``beam_first`` (:func:`kvsim.engine.sampling.beam_first_steps`) by groups. Width 4 gave the same time as
width 2 at equal rows in that measurement (0.32 ms at 32 rows for both), so one width is timed. The cost model
(:mod:`kvsim.cost.sampling_price`) adds ``beam(rows) + beam_first(groups)`` and takes off ``greedy(rows)`` when
the step draws no row independently. About two seconds on a GPU.

How each call is timed (``timing`` in the table). In a step the engine makes its sampling calls while the
forward pass is still on the GPU, so their launches hide behind it and the step pays only what they add on the
device and after it. On a GPU each call is therefore timed behind a queued busy kernel of about a millisecond
(:data:`BUSY_CYCLES`, :func:`kvsim.engine.host_timing.behind_timed`: busy + call against busy alone),
``"timing": "behind"``. Profiles before 2026-12-06 timed each call alone (``timing`` absent): launches
included, which matched an engine whose beam step waited for the forward pass before its top-k (the beams'
scores were copied to the device with a stream sync; sent ``non_blocking`` since). On a CPU, with nothing to
hide behind, calls are timed alone (``"timing": "alone"``).
"""
from __future__ import annotations

ROWS = (2, 4, 8, 16, 32, 64, 128, 256)
FIRST_GROUPS = (1, 4, 16, 64)
WIDTH = 2
REPS = 50
BUSY_CYCLES = 2_000_000     # the queued busy kernel (torch.cuda._sleep): ~1 ms at 2 GHz, well over a call's launches


def sampling_table(vocab: int, device, rows=ROWS, first_groups=FIRST_GROUPS, reps: int = REPS) -> dict:
    """``{"greedy": {"rows", "time_s"}, "beam": {"rows", "time_s"}, "beam_first": {"groups", "time_s"},
    "vocab", "beam_width"}`` for a profile (see module doc); runs on any torch device (CPU in tests)."""
    import torch

    from kvsim.engine import sampling
    from kvsim.engine.host_timing import behind_timed, host_timed
    dev = torch.device(device)
    behind = dev.type == "cuda"

    def timed(fn):      # what the call adds behind a busy GPU (module doc); alone where nothing runs ahead of it
        if behind:
            return behind_timed(fn, reps, busy=lambda: torch.cuda._sleep(BUSY_CYCLES), warmup=3)
        return host_timed(fn, reps, warmup=3)

    gen = torch.Generator(device=dev).manual_seed(0)
    greedy, beam, first = [], [], []
    for r in rows:
        logits = torch.randn(r, vocab, device=dev, generator=gen)
        scores = [[-float(j) for j in range(WIDTH)] for _ in range(r // WIDTH)]
        greedy.append(timed(lambda: sampling.sample_rows(logits, "greedy", 1.0, 1.0, None)))
        beam.append(timed(lambda: sampling.beam_steps(logits[: WIDTH * len(scores)], scores)))
    for g in first_groups:
        logits = torch.randn(g, vocab, device=dev, generator=gen)
        first.append(timed(lambda: sampling.beam_first_steps(logits, WIDTH)))
    return {"greedy": {"rows": list(rows), "time_s": greedy}, "beam": {"rows": list(rows), "time_s": beam},
            "beam_first": {"groups": list(first_groups), "time_s": first}, "vocab": int(vocab),
            "beam_width": WIDTH, "timing": "behind" if behind else "alone"}


def describe(table: dict) -> str:
    """One log line: the greedy and beam times by rows, in ms."""
    def ms(key):
        return ", ".join(f"{r}: {t * 1e3:.3f}" for r, t in zip(table[key]["rows"], table[key]["time_s"]))
    return f"sampling (ms, {table.get('timing', 'alone')}): greedy {ms('greedy')}; beam {ms('beam')}"
