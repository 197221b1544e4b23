"""Prefill shapes beyond one fresh prompt, priced from the profile's whole-step grids (no torch).

A profile's ``prefill_step`` grid times a step of *one fresh prompt* of T tokens. Schedulers also produce
steps with several prompts (prefill-first admitting a burst, the static scheduler's whole batch) and
prompts that start after cached tokens (a prefix-cache hit, a later chunk of a long prompt). Profiles
from ``kvsim calibrate`` since ``prefill_batch_step`` / ``prefill_cached_step`` exist
(:mod:`kvsim.calibrate.prefill_grids`) time those shapes as whole engine iterations too:

* **Attention over earlier tokens.** A prompt of ``n`` new tokens after ``c`` cached ones attends to
  ``n * c + n * (n + 1) / 2`` query-key pairs (causal). The cached grid fixes ``n`` and grows ``c``: the
  growth is the cost of those pairs, so a least-squares line through the origin of ``t(n, c) - t(n, 0)``
  against ``n * c`` gives the seconds per pair of the whole step (all layers), :func:`pair_cost`.
* **Several prompts.** The batch grid times ``s`` prompts of ``m`` new tokens each; a step of unequal
  prompts is priced at its number of prompts and mean prompt, plus the pair cost of the pairs it has beyond
  the equal prompts' (:meth:`PrefillShapes.batch`).
* **One prompt after cached tokens, alone in its step:** the grid's own growth along ``cached``
  (:meth:`PrefillShapes.cached_growth`), which is what the engine runs in that case.
* **Any other plan's attention beyond one fresh prompt** of its total new tokens (what a chunk's cached context
  or a mixed step's several chunks add to the one-fresh-chunk grids): the pair cost times the extra pairs,
  :meth:`PrefillShapes.attn_extra`.

Profiles without these tables fall back to composing the per-layer prefill attention kernel grid
(``prefill_attn``), which times one launch per point and is dominated by launch time at small sizes.
"""
from __future__ import annotations

import numpy as np

from kvsim.cost.profile import Profile, interp2


def attention_pairs(new, cached) -> float:
    """Query-key pairs of prompts with ``new`` new tokens after ``cached`` cached ones (causal mask)."""
    return float(sum(n * c + n * (n + 1) / 2 for n, c in zip(new, cached)))


def pair_cost(grid) -> float | None:
    """Seconds per query-key pair of a whole step from a ``(tokens, cached, time)`` grid: least squares
    through the origin of the growth over the zero-cache column against ``new * cached``; None without a
    cached column beside the zero one, never negative."""
    xn, xc, t = grid
    if len(xc) < 2 or xc[0] != 0:
        return None
    x = np.outer(xn, xc[1:]).ravel()
    y = (t[:, 1:] - t[:, :1]).ravel()
    if float(x @ x) <= 0:
        return None
    return max(0.0, float(x @ y) / float(x @ x))


def nearest_size(sizes, block_size: int) -> int | None:
    """The block size of ``sizes`` nearest ``block_size`` on a log scale (the smaller one on a tie), or None."""
    return min(sorted(sizes), key=lambda b: abs(np.log2(b / block_size)), default=None)


class PrefillShapes:
    """The multi-prompt grid and the pair cost of one block size of ``profile`` (either may be None).

    A profile merged from calibrations of different ages can lack the cached-context grid at some block sizes
    (``calibrate/profiles/H200/opt-13b-1203.json`` has it at 16, not at 32 or 64). The pair cost and the growth
    along ``cached`` are attention work, which the kernel benchmark finds flat in the block size from 8 to 256,
    so such a size takes them from the nearest size that has the grid (``cached_from``). The fallback it
    replaces, the per-layer kernel grid, is launch-bound at the small shapes recompute and bursts produce (OPT-13B
    block 32 on the H200: 160 us for 16 tokens, 344 us for 64), and priced every extra prompt of a step at ~8 ms
    (7 prompts of 100 tokens: 78 ms against 34 ms for one of 700; the engine ran such steps in ~34 ms, v24).
    The multi-prompt grid is a whole-step level of its own block size and is not borrowed: without it a step of
    several prompts is its tokens' one-prompt step plus the pair cost of its pairs (within 2% of the block-16
    batch grid on that profile)."""

    def __init__(self, profile: Profile, block_size: int):
        self.batch_grid = profile.prefill_batch_step.get(block_size)
        self.cached_from = nearest_size(profile.prefill_cached_step, block_size)     # its own where measured
        self.cached_grid = cached = profile.prefill_cached_step.get(self.cached_from)
        self.kappa = pair_cost(cached) if cached is not None else None

    def batch(self, new: list[int], cached: list[int]) -> float | None:
        """Whole-step price (without the per-step overhead) of a prefill-only step of two or more prompts,
        or None when the profile has no multi-prompt grid."""
        if self.batch_grid is None or len(new) < 2:
            return None
        s = len(new)
        return float(interp2(float(s), float(sum(new)) / s, *self.batch_grid)) + self.unequal_pairs(new, cached)

    def unequal_pairs(self, new: list[int], cached: list[int]) -> float:
        """What prompts ``new`` after ``cached`` tokens cost in attention beyond as many equal fresh prompts of
        their mean (the batch grid's shape) at the pair cost; 0 without one."""
        if not self.kappa:
            return 0.0
        m = float(sum(new)) / len(new)
        return self.kappa * (attention_pairs(new, cached) - attention_pairs([m] * len(new), [0] * len(new)))

    def batch_excess_rows(self, one_prompt, top: float) -> list[tuple[float, list[float], list[float]]]:
        """Per measured prompt count ``s`` of the batch grid, ``(s, totals, excess)``: at each of its points of at
        most ``top`` tokens in all, the batch grid less ``one_prompt`` (the one-prompt grid, a callable of tokens)
        at the same total; rows without such a point are left out (none without the grid). A step of several
        prompts follows the one-prompt grid's shape between these points plus this excess
        (:meth:`kvsim.cost.step_grids.StepGridsMixin._several_prompts`): the engine pads their sum to a CUDA-graph
        token count and the GEMMs' staircase is the padded count's, where the batch grid's own interpolation
        along the mean prompt was linear (Llama-3-8B on an H200: two prompts of 417 tokens in all priced 10.66 ms,
        one of 417 tokens 12.88 ms; the engine's steps of 2-4 prompts took what one prompt of their sum takes)."""
        if self.batch_grid is None:
            return []
        xs, xm, t = self.batch_grid
        rows = []
        for i, s in enumerate(xs):
            totals = [float(s) * float(m) for m in xm]
            pts = [(x, float(t[i, j]) - one_prompt(x)) for j, x in enumerate(totals) if x <= top]
            if pts:
                rows.append((float(s), [p[0] for p in pts], [p[1] for p in pts]))
        return rows

    def cached_growth(self, new: int, cached: int) -> float | None:
        """What ``cached`` tokens before a lone prompt of ``new`` tokens add to its step, read off the cached
        grid itself (its growth along ``cached`` at ``new``), or None without the grid. A short prompt after
        a long context runs few attention programs, each walking the whole context: latency-bound, far above
        its pair count (Llama-3-8B on the H200: 16 new tokens after 1,024 add 1.15 ms, 0.05 ms by pairs)."""
        if self.cached_grid is None:
            return None
        xn, xc, t = self.cached_grid
        return max(0.0, float(interp2(float(new), float(cached), xn, xc, t)) - float(interp2(float(new), 0.0, xn, xc, t)))

    def attn_extra(self, new: list[int], cached: list[int], total_new: int) -> float | None:
        """What a plan's prompts cost in attention beyond one fresh prompt of ``total_new`` tokens (may be
        negative: several short prompts have fewer pairs than one long one), or None without a pair cost."""
        if self.kappa is None:
            return None
        return self.kappa * (attention_pairs(new, cached) - attention_pairs([total_new], [0]))
