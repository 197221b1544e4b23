"""Whole prefill iterations beyond one fresh prompt: the other prefill shapes schedulers produce.

The single-prompt ``prefill_step`` grid prices a step of one fresh prompt. Two other prefill-only shapes
are common and are timed here as whole engine iterations, the way the engine runs them (a prefill CUDA
graph when the step fits one, else eager), each right after two decode steps as in serving:

* ``prefill_batch_step`` — several fresh prompts in one step, ``seqs`` x new ``tokens`` per prompt (the
  prefill-first scheduler admitting a burst, the static scheduler's whole batch). Such steps can pass the
  prefill graphs' token limit (the static scheduler has no token budget) and then run eagerly.
* ``prefill_cached_step`` — one prompt of ``tokens`` new tokens after ``cached`` tokens already in the
  cache (a prefix-cache hit, a later chunk of a long prompt). The growth with ``cached`` at a fixed number
  of new tokens is the attention over earlier tokens, which the simulator also uses to price the
  attention of unequal prompts and of chunks with context (:mod:`kvsim.cost.prefill_shapes`).

:func:`time_prefill_grids` takes a ``time_prefill(prefills)`` callable (seconds of one step with those
``(new, cached)`` prompts), so the grid logic runs on CPU in tests with a fake timer.
"""
from __future__ import annotations

from typing import Callable

PREFILL_BATCH_SEQS = [2, 4, 8, 16, 32]
PREFILL_BATCH_TOKENS = [16, 64, 128, 256, 512]     # new tokens per prompt
PREFILL_CACHED_NEW = [16, 64, 256, 1024]
PREFILL_CACHED_CTX = [0, 256, 1024]
TIMING = "between_decode_steps"


def cached_axes(new_axis: list[int], cached_axis: list[int], max_ctx: int) -> tuple[list[int], list[int]]:
    """Axes whose every point fits ``max_ctx`` (new + cached <= max_ctx): the largest new-token count is
    cut to leave room for the largest cached context; at least two new-token points remain when the model
    allows them."""
    cached = sorted({c for c in cached_axis if c < max_ctx})
    room = max_ctx - max(cached)
    new = sorted({n for n in new_axis if n <= room} | ({room} if room < max(new_axis) else set()))
    return new, cached


def time_prefill_grids(time_prefill: Callable[[list[tuple[int, int]]], float], max_ctx: int, *,
                       batch: tuple[list[int], list[int]] | None = (PREFILL_BATCH_SEQS, PREFILL_BATCH_TOKENS),
                       cached: tuple[list[int], list[int]] | None = (PREFILL_CACHED_NEW, PREFILL_CACHED_CTX),
                       log: Callable[[str], None] = lambda _m: None) -> tuple[dict | None, dict | None]:
    """``(prefill_batch_step, prefill_cached_step)`` tables (None for an axis pair that is None)."""
    batch_table = cached_table = None
    if batch is not None:
        seqs, toks = sorted(set(batch[0])), sorted({min(t, max_ctx) for t in batch[1]})
        grid = [[time_prefill([(t, 0)] * s) for t in toks] for s in seqs]
        batch_table = {"seqs": seqs, "tokens": toks, "time_s": grid, "timing": TIMING}
        log(f"prefill batches: {len(seqs)} x {len(toks)} points, largest {seqs[-1]} x {toks[-1]} tokens "
            f"{grid[-1][-1] * 1e3:.1f} ms")
    if cached is not None:
        new, ctx = cached_axes(list(cached[0]), list(cached[1]), max_ctx)
        grid = [[time_prefill([(n, c)]) for c in ctx] for n in new]
        cached_table = {"tokens": new, "cached": ctx, "time_s": grid, "timing": TIMING}
        log(f"prefill with cached context: {len(new)} x {len(ctx)} points")
    return batch_table, cached_table
