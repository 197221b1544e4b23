"""Which prefill/mixed graph sizes the engine routes past, measured when the graphs are captured.

The GEMM library picks its kernel per token count, and some counts get a slow one: Llama-3-8B on an H100 replayed
its 448-token graph in 17.5 ms and its 480-token graph in 13.3 ms (``benchmarks/engine/results_H100/route_1206``).
A step padded to 448 tokens runs faster as the 480-token graph (its extra rows are padding: no KV is read or
written for them), so the engine skips such sizes (``runtime.cuda_graph_prefill_route``, on by default).

The decision must not follow the timer's noise: a wrong skip costs what the next size costs more (a first
version, one ascending pass, skipped 960 for 1,024 on an H100 whose steps then ran 2-4% slower at 904-960
tokens). So:

1. the card is kept busy for a moment first (the largest graph, replayed), so it is at its working clocks;
2. every size is timed twice, in ascending and then descending order, and the two are averaged: a clock still
   moving during the passes biases one pass the opposite way of the other;
3. each size those times say a larger one beats by :data:`~kvsim.graph_sizes.ROUTE_MARGIN` is confirmed against
   the size its steps would actually run as (the next one not skipped, deciding from the largest down), timed
   alternately ``rounds`` times each (fastest of each): only a confirmed size is skipped.

:func:`route` takes the timer as a function, so the decision is tested on the CPU with made-up timings.
"""
from __future__ import annotations

import time
from typing import Callable

from kvsim.graph_sizes import ROUTE_MARGIN, padded, route_sizes, skipped_sizes

WARM_S = 0.2            # replays of the largest graph before timing (the card's clocks settle)
CONFIRM_ROUNDS = 3


def route(sizes: list[int], timer: Callable[[int], float], *, margin: float = ROUTE_MARGIN,
          rounds: int = CONFIRM_ROUNDS, warm: Callable[[], None] | None = None,
          fixed: list[int] | None = None) -> tuple[list[int], list[float]]:
    """``(skipped sizes, seconds per size)`` for the captured ``sizes`` (ascending), ``timer(size)`` being one
    replay's seconds (module doc); ``fixed``: sizes skipped anyway (never a target, not returned). The times are
    the two passes' means."""
    if warm is not None:
        warm()
    up = [timer(s) for s in sizes]
    down = [timer(s) for s in reversed(sizes)][::-1]
    times = [(a + b) / 2 for a, b in zip(up, down)]
    skipped: list[int] = []
    fixed = [int(t) for t in fixed or ()]
    for s in reversed(skipped_sizes(sizes, times, margin)):         # largest first: its target is then fixed
        if s in fixed:
            continue
        target = padded(s + 1, route_sizes(sizes, skipped + fixed))
        if target not in sizes:        # nothing larger kept (never: the largest size is never a candidate)
            continue
        ts, tt = [], []
        for _ in range(rounds):
            ts.append(timer(s))
            tt.append(timer(target))
        if min(tt) < (1.0 - margin) * min(ts):
            skipped.append(s)
    return sorted(skipped), times


def graph_timer(graphs: dict) -> Callable[[int], float]:
    """One replay's seconds of ``graphs[size]`` (a ``torch.cuda.CUDAGraph``, uploaded by a replay at capture); the
    replays run back to back, so each starts on a busy card (two per size in all: about 2 s for Llama-3-8B's 48
    graphs up to 2,048 tokens on an H100, 1.1 s a pass)."""
    import torch

    def timer(size: int) -> float:
        g = graphs[size]
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        return a.elapsed_time(b) / 1e3
    return timer


def graph_warmer(graph, seconds: float = WARM_S) -> Callable[[], None]:
    """Replays ``graph`` for about ``seconds``."""
    import torch

    def warm() -> None:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            graph.replay()
            torch.cuda.synchronize()
    return warm
