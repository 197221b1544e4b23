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


def prefill_token_sizes(max_tokens: int) -> list[int]:
    """Prefill token counts: every 16 up to 128, 32 up to 256, 64 up to 512, 128 up to 1024, 256 beyond,
    and ``max_tokens`` (padding stays under ~25 %, and under 16 tokens for short prompts)."""
    if max_tokens < 16:
        return [max_tokens]
    return _ladder(max_tokens, 16, ((128, 16), (256, 32), (512, 64), (1024, 128)), 256)


def padded(n: int, sizes: list[int] | None) -> int:
    """The captured size a step of ``n`` replays (``n`` itself when none fits: it then runs eagerly)."""
    if not sizes:
        return n
    i = bisect.bisect_left(sizes, n)
    return sizes[i] if i < len(sizes) else n
