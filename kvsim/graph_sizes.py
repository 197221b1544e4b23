"""The shapes the engine captures as CUDA graphs (no torch needed).

A decode step of ``n`` sequences replays the graph of the smallest captured
batch ``b >= n`` (rows ``n .. b-1`` are padding that runs the linear layers but
reads no KV); a prefill or mixed step of ``t`` tokens the graph of the smallest
captured token count ``>= t``. The engine (:mod:`kvsim.engine.cuda_graphs`)
captures these sizes and the calibrated cost model prices a decode step at its
padded batch, so both sides read the ladders from here.
"""
from __future__ import annotations

import bisect


def _ladder(limit: int, start: int, steps: tuple[tuple[int, int], ...], last: int) -> list[int]:
    """Sizes from ``start`` growing by the step of the first ``(bound, step)`` with size < bound
    (``last`` beyond), up to ``limit``, always ending at ``limit``."""
    sizes, b = [], start
    while b <= limit:
        sizes.append(b)
        b += next((s for bound, s in steps if b < bound), last)
    if limit >= 1 and (not sizes or sizes[-1] != limit):
        sizes.append(limit)
    return sizes


def graph_batch_sizes(max_batch: int) -> list[int]:
    """Decode batches: 1, 2, 4, then every 8 up to 64, every 16 up to 256, every 32 beyond, and ``max_batch``."""
    small = [b for b in (1, 2, 4) if b < max_batch]
    return small + (_ladder(max_batch, 8, ((64, 8), (256, 16)), 32) if max_batch >= 8 else [max_batch])


PREFILL_LADDERS = {
    "v1": (((128, 16), (256, 32), (512, 64), (1024, 128)), 256),
    "v2": (((256, 16), (512, 32)), 64),
}
"""Token-count ladders of the prefill/mixed graphs. ``v1``: every 16 up to 128, 32 up to 256, 64 up to 512, 128
up to 1,024, 256 beyond (24 graphs to 2,048; a step just past a size ran up to 25 % padding: on the H200 a
1,032-token mixed step replayed the 1,280-token graph, 33.5 ms where its roofline is 21 ms). ``v2``: every 16
up to 256, 32 up to 512, 64 beyond (48 graphs to 2,048; padding under 12 %, under 6 % past 1,024)."""
PREFILL_LADDER = "v2"
"""The default ladder (``runtime.cuda_graph_prefill_ladder`` picks one per scenario: the engine captures it and
the simulator prices a step at its size). A profile records the ladder it was measured on (``meta.prefill_ladder``;
none: ``v1``); ``kvsim validate --replay`` prices a saved engine run on the sizes that run captured."""


def ladder_of(sizes: list[int]) -> str | None:
    """The name of the ladder whose sizes up to ``max(sizes)`` are exactly ``sizes`` (None if none is)."""
    if not sizes:
        return None
    return next((name for name in PREFILL_LADDERS if prefill_token_sizes(max(sizes), name) == list(sizes)), None)


def prefill_token_sizes(max_tokens: int, ladder: str | None = None) -> list[int]:
    """Prefill token counts up to and always including ``max_tokens``, on ``ladder`` (default
    :data:`PREFILL_LADDER`, see :data:`PREFILL_LADDERS`); under 16 tokens of padding for short prompts."""
    if max_tokens < 16:
        return [max_tokens]
    steps, last = PREFILL_LADDERS[ladder or PREFILL_LADDER]
    return _ladder(max_tokens, 16, steps, last)


def beaten_sizes(tokens: list[int], times: list[float], margin: float = 0.02) -> list[list[int]]:
    """``[size, larger]`` for each captured size that a larger captured size ran at least ``margin`` faster than
    (its fastest such), from a measured ``prefill_step`` grid: a step padded to ``larger`` instead would run faster
    (cuBLAS's choice for some token counts: Llama-3-8B on the H200, 448 tokens 15.7 ms, 480 tokens 12.7 ms).
    The engine routes such steps (:func:`skipped_sizes`, ``runtime.cuda_graph_prefill_route``)."""
    out = []
    for i, (t, y) in enumerate(zip(tokens, times)):
        later = [(y2, t2) for t2, y2 in zip(tokens[i + 1:], times[i + 1:]) if y2 < (1.0 - margin) * y]
        if later:
            out.append([int(t), int(min(later)[1])])
    return out


ROUTE_MARGIN = 0.05
"""How much faster a larger captured prefill/mixed graph must replay for the engine to route a smaller size's steps
to it (``runtime.cuda_graph_prefill_route``): above the few-percent spread of repeated graph timings, far below
the library's slow shapes (Llama-3-8B on an H100: 448 tokens 17.0 ms, 480 tokens 12.8 ms)."""


def skipped_sizes(tokens: list[int], times: list[float], margin: float = ROUTE_MARGIN) -> list[int]:
    """The captured sizes a larger captured size replayed at least ``margin`` faster than: the engine routes a
    step padded to one of them to the next size not skipped, which is then faster too (any size between them
    that a larger one does not beat is at most ``1 / (1 - margin)`` of that larger one)."""
    return [a for a, _ in beaten_sizes(tokens, times, margin)]


def route_sizes(sizes: list[int] | None, skip) -> list[int] | None:
    """The sizes steps are padded to: ``sizes`` less the ones in ``skip`` (None stays None: no graphs)."""
    if sizes is None or not skip:
        return sizes
    skip = {int(s) for s in skip}
    return [s for s in sizes if s not in skip]


def padded(n: int, sizes: list[int] | None) -> int:
    """The captured size a step of ``n`` replays (``n`` itself when none fits: it then runs eagerly)."""
    if not sizes:
        return n
    i = bisect.bisect_left(sizes, n)
    return sizes[i] if i < len(sizes) else n


def engine_graph_sizes(sc) -> dict:
    """The CUDA-graph sizes a scenario's engine captures, as :class:`kvsim.cost.calibrated.CalibratedCostModel`
    takes them: decode batches and prefill token counts (None without graphs), and the prompts a prefill
    graph has room for."""
    e, rt = sc.engine, sc.runtime
    prefill_top = min(rt.cuda_graph_prefill_max_tokens, e.max_num_batched_tokens)
    return dict(decode_graph_batches=graph_batch_sizes(min(rt.cuda_graph_max_batch, e.max_num_seqs))
                if rt.cuda_graphs else None,
                prefill_graph_tokens=prefill_token_sizes(prefill_top, rt.cuda_graph_prefill_ladder)
                if rt.cuda_graphs and prefill_top > 0 else None,
                prefill_graph_seqs=min(e.max_num_seqs, 256),
                prefill_graph_skip=list(rt.cuda_graph_prefill_skip), prefill_graph_route=rt.cuda_graph_prefill_route)
