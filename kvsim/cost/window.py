"""Attention work of sliding-window layers, as per-layer means the roofline model prices.

A layer with window ``w`` (0 = full attention) lets a query at position ``q``
attend to keys ``(q - w, q]``: ``min(q + 1, w)`` keys. Cost models price one
"mean layer" times ``num_layers``; attention work is linear in the keys read,
so a model with layer kinds ``{w: n_w layers}`` is priced exactly by the mean
over layers of each kind's keys (decode) or query-key pairs (prefill).
"""
from __future__ import annotations

from dataclasses import dataclass

from kvsim.catalogue import ModelSpec


def prefill_pairs(new: int, cached: int, window: int) -> float:
    """Query-key pairs of ``new`` queries at positions ``cached .. cached + new - 1`` (causal, windowed)."""
    a, b = cached + 1, cached + new                 # keys seen by the first and the last query without a window
    if window <= 0 or b <= window:
        return new * (cached + (new + 1) / 2.0)
    if a > window:
        return float(window * new)
    return (a + window) * (window - a + 1) / 2.0 + window * (b - window)


@dataclass(frozen=True)
class WindowMix:
    """A model's layer kinds: ``(window, fraction of layers)`` pairs, window 0 = full attention."""

    kinds: tuple[tuple[int, float], ...]

    @classmethod
    def of(cls, model: ModelSpec) -> "WindowMix | None":
        """The mix of ``model``'s layers, or None when no layer has a window (the plain pricing applies)."""
        if not model.sliding_window:
            return None
        windows = model.layer_windows()
        counts: dict[int, int] = {}
        for w in windows:
            counts[w] = counts.get(w, 0) + 1
        return cls(tuple((w, n / len(windows)) for w, n in counts.items()))

    @property
    def min_window(self) -> int:
        """The smallest window: contexts up to it are attended in full by every layer."""
        return min(w for w, _ in self.kinds if w > 0)

    @property
    def plain_below_window(self) -> bool:
        """Whether ``decode_sum`` of contexts inside every window is exactly ``float(sum(ctx))`` (fractions of
        at most 1024ths that add up to 1: each product and partial sum is exact), as a fast-forwarded decode
        segment prices it."""
        return all(f * 1024 == int(f * 1024) for _, f in self.kinds) and sum(f for _, f in self.kinds) == 1.0

    def decode_sum(self, ctx: list[int]) -> float:
        """Per-layer mean of the keys the decode queries read: sum over kinds of fraction x sum(min(ctx, w))."""
        total = 0.0
        for w, frac in self.kinds:
            total += frac * (sum(ctx) if w <= 0 else sum(c if c < w else w for c in ctx))
        return total

    def prefill(self, news: list[int], cacheds: list[int]) -> tuple[float, float]:
        """(query-key pairs, KV tokens read and written) per mean layer for a step's prefill chunks."""
        pairs = kv = 0.0
        for w, frac in self.kinds:
            for new, cached in zip(news, cacheds):
                pairs += frac * prefill_pairs(new, cached, w)
                kv += frac * ((cached if w <= 0 else min(cached, w)) + 2 * new)
        return pairs, kv


def windowed_decode(mix: WindowMix, plan):
    """``plan`` with each decode row's context replaced by its per-layer mean of keys read,
    ``sum(frac x min(ctx, w))``: what a cost model whose grids were timed with full attention (as ``kvsim
    calibrate`` times them: its synthetic steps carry no window) must be asked for the same attention work
    (decode attention is linear in keys read; the rest of the step does not depend on context). The plan itself
    when every context is inside the smallest window, so such steps price exactly as without windows."""
    from dataclasses import replace
    ctx = plan.decode_context_tokens
    if not ctx or max(ctx) <= mix.min_window:
        return plan
    eff = [sum(f * (c if w <= 0 else min(c, w)) for w, f in mix.kinds) for c in ctx]
    return replace(plan, decode_context_tokens=eff)


def prefill_window_saving(mix: WindowMix, plan, attn) -> float:
    """Per-layer attention time the plan's prefill chunks do not spend because of windows: for each chunk of
    ``new`` tokens after ``cached`` whose keys reach past the smallest window, ``attn(new, cached)`` (its
    full-attention time per layer, e.g. from the profile's kernel grid) times the share of query-key pairs
    the windows remove (attention work is linear in pairs). 0 when every chunk stays inside the windows."""
    lo = mix.min_window
    cached = plan.prefill_cached_tokens or [0] * len(plan.prefill_new_tokens)
    saved = 0.0
    for new, c in zip(plan.prefill_new_tokens, cached):
        if new <= 0 or c + new <= lo:
            continue
        full = prefill_pairs(new, c, 0)
        kept = sum(f * prefill_pairs(new, c, w) for w, f in mix.kinds)
        saved += attn(new, c) * (1.0 - kept / full)
    return saved
