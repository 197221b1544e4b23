"""KV-cache groups: how a model's layers split into page-table groups by attention window.

A model whose layers all attend to the full context has one group and the
classic paged layout (a block holds ``block_size`` tokens of every layer). A
model with sliding-window layers (Mistral-7B-v0.1: every layer; Gemma-2: every
other layer) keeps the KV of different windows in different groups, because a
sliding-window layer only needs the blocks overlapping the last ``window``
tokens while a full-attention layer needs them all.

Layout (the decision, like vLLM's hybrid allocator): **one shared pool of pages
with one page table per group**. Every page holds ``block_size`` tokens of
``layers_per_page`` layers, where ``layers_per_page`` is the greatest common
divisor of the layer counts of the distinct windows; a window kind with ``n``
layers forms ``n / layers_per_page`` groups. All pages have the same size, so
any group takes any free page and the scheduler counts pages across groups as
one number. Gemma-2-9B (21 sliding + 21 full layers) has two groups of 21
layers; Mistral-7B-SWA (32 sliding) one group of 32, i.e. the classic block.

Window accounting (``window`` > 0): after the append that gives a sequence
``n`` KV slots, the query at position ``n - 1`` attends to keys in
``(n - 1 - window, n - 1]``, so the ``(n - window) // block_size`` leading
blocks lie wholly outside every later window and are freed (:func:`skipped`).
A prefill (or recompute) attends from position 0, so admission holds all the
prompt's blocks; the first decode append frees those outside the window.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


def skipped(n: int, window: int, block_size: int) -> int:
    """Leading blocks of a sequence with ``n`` KV slots that no query from now on reads (0 if full)."""
    if window <= 0 or n <= window:
        return 0
    return (n - window) // block_size


def held_blocks(n: int, window: int, block_size: int) -> int:
    """Blocks one group holds for a decoding sequence of ``n`` KV slots."""
    return -(-n // block_size) - skipped(n, window, block_size)


def peak_held(prompt: int, final: int, window: int, block_size: int) -> int:
    """Most blocks one group holds for a sequence from admission (``prompt`` slots) to ``final`` slots."""
    peak = -(-prompt // block_size)
    if window <= 0 or final <= prompt:
        return max(peak, -(-final // block_size))
    # held_blocks(n) grows with n up to the window, then repeats with period block_size
    peak = max(peak, -(-min(final, window) // block_size))
    lo = max(prompt, window) + 1
    for n in range(lo, min(final, lo + block_size - 1) + 1):
        peak = max(peak, held_blocks(n, window, block_size))
    return peak


@dataclass(frozen=True)
class KVGroupLayout:
    """Page-table groups of a model: each group's window and which layers it holds."""

    windows: tuple[int, ...]        # per group: window in tokens, 0 = full attention
    layers_per_page: int            # layers one page spans
    layer_group: tuple[int, ...]    # per model layer: its group
    layer_slot: tuple[int, ...]     # per model layer: its index among the page's layers

    @classmethod
    def from_windows(cls, layer_windows: tuple[int, ...]) -> "KVGroupLayout":
        """Groups for per-layer windows (``ModelSpec.layer_windows()``); windows in first-seen order."""
        kinds: dict[int, list[int]] = {}
        for i, w in enumerate(layer_windows):
            kinds.setdefault(w, []).append(i)
        per_page = math.gcd(*(len(ls) for ls in kinds.values()))
        windows, group, slot = [], [0] * len(layer_windows), [0] * len(layer_windows)
        for w, layers in kinds.items():
            base = len(windows)
            windows.extend([w] * (len(layers) // per_page))
            for j, layer in enumerate(layers):
                group[layer] = base + j // per_page
                slot[layer] = j % per_page
        return cls(tuple(windows), per_page, tuple(group), tuple(slot))

    @property
    def num_groups(self) -> int:
        return len(self.windows)

    @property
    def has_window(self) -> bool:
        return any(w > 0 for w in self.windows)

    def page_bytes(self, kv_bytes_per_token: int, num_layers: int, block_size: int) -> int:
        """Bytes of one page: ``block_size`` tokens of ``layers_per_page`` of the model's layers."""
        return kv_bytes_per_token // num_layers * self.layers_per_page * block_size

    def describe(self) -> str:
        """One line: the groups and their windows."""
        kinds = {}
        for w in self.windows:
            kinds[w] = kinds.get(w, 0) + 1
        parts = [f"{n} {'full' if w == 0 else f'window-{w}'}" for w, n in kinds.items()]
        return f"{self.num_groups} KV groups ({', '.join(parts)}) of {self.layers_per_page} layers per page"
