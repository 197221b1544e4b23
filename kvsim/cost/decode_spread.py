"""What unequal decode contexts add to a step's price, for :class:`kvsim.cost.calibrated.CalibratedCostModel`.

A decode step's whole-step grid is timed at equal contexts (its batch and mean context). Unequal ones cost more:
the longest sequence's programs set the attention kernel's makespan when they do not share the SMs with many
others. Two measurements say how much, both as a *fraction* of the way from the uniform step at the batch's
mean context (0) to the uniform step at its longest (1):

* the profile's spread grid (``decode_spread_step``: evenly spaced contexts, by batch and longest context),
  :meth:`DecodeSpreadMixin._grid_fraction`;
* the serving fit (``decode_serving``, :mod:`kvsim.calibrate.serving_fit`: real engine steps of serving-shaped
  batches), a fraction per row count that replaces the grid's up to its largest row; above it the price moves
  linearly to the grid's fraction by the grid's next batch (:meth:`DecodeSpreadMixin._serving_above`).

The mixin reads the model's ``_lam`` (the grid's fractions), ``_serving`` (the fit's table), ``_step`` (the
uniform whole-step grid), ``_grid_at`` and ``_dec_cache``.
"""
from __future__ import annotations

import numpy as np

from kvsim.cost.profile import interp1, spread_contexts
from kvsim.graph_sizes import padded


class DecodeSpreadMixin:
    """Unequal-context terms of a decode step (see module doc)."""

    def _spread_weights(self, spread):
        """Per (batch, longest context) of the spread grid: where its measured step lies between the
        uniform step at the shape's mean context (0) and the uniform step at its longest (1)."""
        xa, xb, t = spread
        lam = np.zeros_like(t)
        for i, n in enumerate(xa):
            for j, top in enumerate(xb):
                ctx = spread_contexts(int(n), int(top))
                lo = float(self._grid_at(self._step, float(n), float(sum(ctx))))
                hi = float(self._grid_at(self._step, float(n), float(n * top)))
                if hi - lo > 1e-7:
                    lam[i, j] = min(1.0, max(0.0, (t[i, j] - lo) / (hi - lo)))
        return xa, xb, lam

    def _grid_fraction(self, b: float, top: np.ndarray) -> np.ndarray:
        """The spread grid's fraction at ``b`` rows and longest contexts ``top``."""
        xa, xb, lam = self._lam
        curve = self._dec_cache.get(("lam", b))                # the fraction along max ctx at b rows, once per b
        if curve is None:
            curve = self._dec_cache[("lam", b)] = np.array([float(np.interp(b, xa, lam[:, j]))
                                                            for j in range(len(xb))])
        return np.interp(top, xb, curve)

    def _spread_excess(self, b: float, sums: np.ndarray, ctx_max: np.ndarray, base: np.ndarray) -> np.ndarray:
        """What unequal contexts add to a decode step of ``b`` rows (see module doc)."""
        top = np.maximum(np.asarray(ctx_max, dtype=np.float64), sums / b)
        hi = self._grid_at(self._step, b, top * b)
        return self._grid_fraction(b, top) * np.maximum(0.0, hi - base)

    def _serving_above(self, n: float, b: float, sums: np.ndarray, ctx_max, base: np.ndarray) -> np.ndarray:
        """Unequal contexts above the serving fit's largest row ``n0``: the spread grid's fraction (module doc),
        reached linearly from the fitted fraction at ``n0`` over the gap to the grid's next batch, so the price
        does not jump where the fitted rows end."""
        join = self._dec_cache.get(("join",))     # (last fitted row, its fraction, the grid's next batch), once
        if join is None:
            xs, _, frac = self._serving
            n0 = float(xs[-1])
            nxt = next((float(x) for x in self._lam[0] if x > n0), None)
            join = self._dec_cache[("join",)] = (n0, float(frac[-1]), nxt)
        n0, frac0, nxt = join
        if nxt is None or n >= nxt:
            return self._spread_excess(b, sums, ctx_max, base)
        top = np.maximum(np.asarray(ctx_max, dtype=np.float64), sums / b)
        w = (n - n0) / (nxt - n0)
        lam = (1.0 - w) * frac0 + w * self._grid_fraction(nxt, top)
        return lam * self._spread_unit(b, sums, ctx_max, base)

    def _spread_unit(self, b: float, sums: np.ndarray, ctx_max, base: np.ndarray) -> np.ndarray:
        """What the uniform step at the longest context adds to ``base`` (the step at the mean) at ``b`` rows."""
        top = np.maximum(np.asarray(ctx_max, dtype=np.float64), sums / b)
        return np.maximum(0.0, self._grid_at(self._step, b, top * b) - base)

    def _run_times_fused(self, num_seqs: int, ctx_sum: int, ctx_max: int, steps: int) -> list[float] | None:
        """``decode_run_times`` under the serving fit with unequal contexts priced by the fit's fraction or the
        spread grid's (the usual forms), both reads of the uniform grid (at the mean and at the longest context)
        in one interpolation: the same floats as ``decode_step_times`` (every operation elementwise, in its
        order), at fewer numpy calls a segment. None for the other forms (the caller prices them as usual)."""
        if num_seqs <= 0 or self._step is None or self._serving is None:
            return None
        n = float(num_seqs)
        over, frac = self._serving_terms(n)
        if frac is None and (self._serving[2] is not None or self._lam is None):
            return None
        b = float(padded(num_seqs, self._graphs))
        j = np.arange(steps, dtype=np.float64)
        sums = ctx_sum + num_seqs * j
        x = sums / b
        top = np.maximum(ctx_max + j, x)
        both = interp1(np.concatenate((x, top * b / b)), *self._grid_curve(self._step, b))
        step, hi = both[:steps], both[steps:]
        gap = np.maximum(0.0, hi - step)
        extra = frac * gap if frac is not None else self._grid_fraction(b, top) * gap
        return (over + (step + extra)).tolist()
