"""What unequal contexts add to a mixed step whose decode rows the engine walks whole.

The engine serves a mixed step's decode rows with a persistent kernel (:mod:`kvsim.kernels.varlen_decode`):
``P`` programs per KV head (``PERSISTENT_WAVES x SMs / KV heads``, at most one per row) take the rows in the
step's order, row ``i`` to program ``i mod P``, and walk each row's context whole. The profile's mixed grid
times rows of one context, so its price at the rows' mean context holds ``ceil(n / P)`` walks of the mean
context per program. With unequal contexts the step lasts as long as its most loaded program: with few rows
(Llama-3-8B's 8 KV heads give 66 programs on a 132-SM card), the longest row. This module prices that excess
from the grid itself: a walk of ``c`` positions is what the grid's one-row steps add from its first context to
``c`` (at the step's chunk), linear past its last context.

On the committed H200 traces the mixed steps of Llama-3-8B with 1-64-token chunks went from -11 to -12% priced
(v15, v16, v22) to -3 to -4% with it. A profile whose mixed grid was timed with the rows cut into partitions
(``mixed_step[bs].decode_split``, :mod:`kvsim.kernels.varlen_split`) gets no such term where the step cuts its
rows: there the work is spread over the programs whatever the contexts. Since the split kernels cut rows only
while they are fewer than a share of the programs (``decode_split_cut_below``, ``varlen_split.CUT_BELOW``), a
step of more rows is walked whole and priced as above (``whole_from``).
"""
from __future__ import annotations

import numpy as np

from kvsim.cost.profile import interp2

PERSISTENT_WAVES = 4      # = kvsim.kernels.varlen_decode.PERSISTENT_WAVES (programs per SM, over all KV heads)
DEFAULT_SMS = 132         # H100 / H200 SXM: the cards of the profiles made before meta.num_sms was recorded


def programs_per_kv_head(num_kv_heads: int, num_sms: int | None = None) -> int:
    """The persistent kernel's programs per KV head on a card of ``num_sms`` SMs."""
    return max(1, PERSISTENT_WAVES * int(num_sms or DEFAULT_SMS) // max(1, int(num_kv_heads)))


class LongestRow:
    """Excess of a mixed step with unequal decode contexts over its grid price at the mean context."""

    def __init__(self, mix, programs: int, cut_below: float = 0.0):
        xn, xc, xt, grid = mix
        self.xc = np.asarray(xc, dtype=np.float64)
        self.xt = np.asarray(xt, dtype=np.float64)
        # the grid's one-row steps (its smallest row count), by context x chunk
        self.one = np.asarray(grid[0], dtype=np.float64)
        self.programs = int(programs)
        self.whole_from = cut_below * self.programs     # fewer rows than this are cut into partitions: no excess
        self._walks: dict[float, tuple[np.ndarray, float]] = {}

    def _walk_curve(self, chunk: float) -> tuple[np.ndarray, float]:
        """Walk times at the grid's contexts (0 at its first) and the slope past its last, at ``chunk``."""
        got = self._walks.get(chunk)
        if got is None:
            ys = np.array([float(interp2(c, chunk, self.xc, self.xt, self.one)) for c in self.xc])
            ys = ys - ys[0]
            slope = max(0.0, (ys[-1] - ys[-2]) / (self.xc[-1] - self.xc[-2])) if len(ys) > 1 else 0.0
            got = self._walks[chunk] = (ys, slope)
        return got

    def walks(self, ctx: np.ndarray, chunk: float) -> np.ndarray:
        ys, slope = self._walk_curve(chunk)
        w = np.interp(ctx, self.xc, ys)
        past = ctx > self.xc[-1]
        if past.any():
            w[past] = ys[-1] + slope * (ctx[past] - self.xc[-1])
        return w

    def extra(self, ctx, chunk: float) -> float:
        """Seconds the most loaded program's walks exceed ``ceil(n / P)`` walks of the mean context."""
        n = len(ctx)
        if n < 2 or len(self.xc) < 2 or n < self.whole_from:
            return 0.0
        c = np.asarray(ctx, dtype=np.float64)
        p = min(n, self.programs)
        chunk = float(min(max(chunk, self.xt[0]), self.xt[-1]))      # the grid's chunks (distinct ones cached)
        w = self.walks(np.append(c, c.mean()), chunk)                  # every row's walk, then the mean's
        loads = np.bincount(np.arange(n) % p, weights=w[:n], minlength=p)
        return max(0.0, float(loads.max()) - -(-n // p) * float(w[n]))
