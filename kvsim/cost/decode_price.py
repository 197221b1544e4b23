"""A decode step's price from the profile's whole-step grids, for :class:`kvsim.cost.calibrated.CalibratedCostModel`.

A decode step of ``n`` rows replays the engine's CUDA graph of ``b = padded(n)`` rows, so it is priced from the
``decode_step`` grid (batch x mean context, equal contexts) at ``b`` and the rows' mean context, plus the step
overhead and, with a ``decode_serving`` fit (:mod:`kvsim.calibrate.serving_fit`), that fit's ``extra_s(n)``
(:meth:`DecodePriceMixin._serving_terms`), plus what unequal contexts add (:mod:`kvsim.cost.decode_spread`).
Profiles without whole-step grids compose the step from per-layer ops and the decode attention grid. The
price depends on the plan only through (n, sum of contexts, longest context), so a fast-forwarded run's steps
(:meth:`DecodePriceMixin.decode_run_times`) and ``step_time`` agree bit for bit.

The mixin reads the model's ``p`` (the profile), ``L``, ``_dec`` (the attention grid), ``_step``, ``_graphs``,
``_serving``, ``_lam``, ``_over_mono`` and ``_dec_cache``.
"""
from __future__ import annotations

import numpy as np

from kvsim.cost.profile import interp1
from kvsim.errors import KvsimError
from kvsim.graph_sizes import padded


class DecodePriceMixin:
    """Decode-step prices of a calibrated cost model (see module doc)."""

    def _grid_curve(self, grid, n: float) -> tuple[np.ndarray, np.ndarray]:
        """A (batch x mean context) grid at batch ``n``: its curve along the mean context, ``(contexts, times)``
        (cached per grid and n). Below the first measured context the curve goes on toward context 0 with its
        first segment's slope where that slope is positive (a decode step reads its KV, linear in the context;
        the engine's steps go on falling below the grids' first context, 128 tokens on the H200 profiles),
        and stays flat otherwise (a latency floor, or noise); never below 0 at context 0."""
        key = (id(grid), n)
        curve = self._dec_cache.get(key)
        if curve is None:
            xa, xb, t = grid
            ys = np.array([float(interp1(n, xa, t[:, j])) for j in range(len(xb))])
            if len(xb) > 1 and xb[0] > 0:
                slope = max(0.0, float(ys[1] - ys[0]) / float(xb[1] - xb[0]))
                xs = np.concatenate(([0.0], np.asarray(xb, dtype=np.float64)))
                ys = np.concatenate(([max(0.0, float(ys[0]) - slope * float(xb[0]))], ys))
            else:
                xs = np.asarray(xb, dtype=np.float64)
            curve = self._dec_cache[key] = (xs, ys)
        return curve

    def _grid_at(self, grid, n: float, ctx_sum):
        """Interpolate a (batch x mean context) grid at batch ``n`` and context sums ``ctx_sum``."""
        return interp1(np.asarray(ctx_sum, dtype=np.float64) / n, *self._grid_curve(grid, n))

    def _decode_attn(self, n: float, ctx_sum):
        return self._grid_at(self._dec, n, ctx_sum)

    def decode_grid_and_spread(self, num_seqs: int, ctx_token_sums: np.ndarray, ctx_max: np.ndarray
                               ) -> tuple[np.ndarray, np.ndarray]:
        """``(grid, unit)`` of decode steps of ``num_seqs`` rows: the whole-step grid at the CUDA-graph batch
        they replay and their mean context (no overhead), and what the uniform step at their longest context
        adds to it — the term a spread fraction multiplies (:mod:`kvsim.calibrate.serving_fit` fits on it).
        Needs a profile with ``decode_step``."""
        if self._step is None:
            raise KvsimError("profile", "no decode_step grid: decode_grid_and_spread needs whole-step grids")
        sums = np.asarray(ctx_token_sums, dtype=np.float64)
        b = float(padded(num_seqs, self._graphs))
        step = np.asarray(self._grid_at(self._step, b, sums), dtype=np.float64)
        return step, self._spread_unit(b, sums, ctx_max, step)

    def shared_attention(self, num_seqs: int, ctx_token_sums: np.ndarray, ctx_max: np.ndarray,
                         shared_tokens: np.ndarray) -> np.ndarray:
        """The decode grid's attention time of ``shared_tokens`` of decode steps of ``num_seqs`` rows: the grid at
        their context sums less the grid at those sums without the shared tokens (at least a token a row; the
        longest context kept). Beam steps read blocks their beams share at a saving
        (:mod:`kvsim.calibrate.beam_fit` fits it, the calibrated model prices it). Needs ``decode_step``."""
        sums = np.asarray(ctx_token_sums, dtype=np.float64)
        rest = np.maximum(sums - np.asarray(shared_tokens, dtype=np.float64), float(num_seqs))
        top = np.asarray(ctx_max, dtype=np.float64)
        grid = self.decode_grid_and_spread(num_seqs, np.concatenate([sums, rest]), np.concatenate([top, top]))[0]
        return grid[:len(sums)] - grid[len(sums):]

    def decode_grid_spread(self, num_seqs: int, ctx_token_sums: np.ndarray, ctx_max: np.ndarray) -> np.ndarray:
        """What unequal contexts add to decode steps of ``num_seqs`` rows at the spread grid's fraction (0 without
        a spread grid): the term the serving fit's ``"grid"`` form prices them with. Needs ``decode_step``."""
        if self._step is None:
            raise KvsimError("profile", "no decode_step grid: decode_grid_spread needs whole-step grids")
        sums = np.asarray(ctx_token_sums, dtype=np.float64)
        if self._lam is None:
            return np.zeros(sums.shape, dtype=np.float64)
        b = float(padded(num_seqs, self._graphs))
        step = np.asarray(self._grid_at(self._step, b, sums), dtype=np.float64)
        return np.asarray(self._spread_excess(b, sums, ctx_max, step))

    def decode_step_times(self, num_seqs: int, ctx_token_sums: np.ndarray, ctx_max: np.ndarray | None = None
                          ) -> np.ndarray:
        sums = np.asarray(ctx_token_sums, dtype=np.float64)
        if num_seqs <= 0:
            return np.zeros(sums.shape, dtype=np.float64)
        n = float(num_seqs)
        p = self.p
        if self._step is not None:       # measured whole iterations + the engine's CPU overhead
            b = float(padded(num_seqs, self._graphs))
            step = self._grid_at(self._step, b, sums)
            if self._serving is not None:
                terms = self._serving_terms(n)
                if ctx_max is not None:
                    if terms[1] is not None:
                        step = step + terms[1] * self._spread_unit(b, sums, ctx_max, step)
                    elif self._serving[2] is None:
                        step = step + (self._spread_excess(b, sums, ctx_max, step) if self._lam is not None else 0.0)
                    else:
                        step = step + self._serving_above(n, b, sums, ctx_max, step)
                return np.asarray(terms[0] + step, dtype=np.float64)
            if ctx_max is not None and self._lam is not None:
                step = step + self._spread_excess(b, sums, ctx_max, step)
            return np.asarray(interp1(n, *self._over_mono) + step, dtype=np.float64)   # no serving fit: monotone
        fixed = interp1(n, *p.overhead) + self.L * (interp1(n, *p.linear) + interp1(n, *p.other)) \
            + interp1(n, *p.lm_head)
        return np.asarray(fixed + self.L * self._decode_attn(n, sums), dtype=np.float64)

    def _serving_terms(self, n: float) -> tuple[float, float | None]:
        """(overhead, fitted spread fraction or None for the grid's) of a decode step of ``n`` rows under the
        serving fit, once per ``n``."""
        terms = self._dec_cache.get(("serving", n))
        if terms is None:
            p = self.p
            xs, extra, frac = self._serving
            # the spread grid's fraction: in the fit's "grid" form everywhere, else above its rows
            grid = frac is None or (n > xs[-1] and self._lam is not None)
            over = float(interp1(n, *p.overhead)) + float(np.interp(n, xs, extra))
            if n < xs[0]:       # below the fit's rows: never above its first row's (fewer rows, less work)
                over = min(over, float(interp1(float(xs[0]), *p.overhead)) + float(extra[0]))
            terms = self._dec_cache[("serving", n)] = (
                max(0.0, over), None if grid else float(np.interp(n, xs, frac)))    # never negative
        return terms

    def decode_run_times(self, num_seqs: int, ctx_sum: int, ctx_max: int, steps: int) -> list[float]:
        fused = self._run_times_fused(num_seqs, ctx_sum, ctx_max, steps)
        return fused if fused is not None else super().decode_run_times(num_seqs, ctx_sum, ctx_max, steps)
