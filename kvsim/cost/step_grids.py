"""Prefill and mixed iterations priced from a profile's whole-iteration grids, for
:class:`kvsim.cost.calibrated.CalibratedCostModel` (see its module doc): a measured mixed iteration at its decode
rows, mean context and chunk tokens, a decode step plus the extra tokens' linear layers where no mixed grid was
measured, a prefill-only step at its CUDA-graph token count or from the multi-prompt grid, and each step's
prefill attention beyond one fresh sequence (cached context, several prompts)."""
from __future__ import annotations

import numpy as np

from kvsim.core.plan import StepPlan
from kvsim.cost.prefill_shapes import attention_pairs
from kvsim.cost.profile import interp1, interp2
from kvsim.graph_sizes import padded

SHAPED_FROM_CHUNK = 256
"""Mixed steps with more chunk tokens than this follow the prefill grid's shape between the mixed grid's chunks
(:meth:`StepGridsMixin._mixed_between`). Measured in three sweeps on two H100s (``benchmarks/engine/chunk_sweep.py``,
mixed steps every 32 chunk tokens at 1/8/32 rows, priced by another H100's profile; ``results_H100/lease_1206b``,
``route_1206`` with and without graph routing): mean |error| per range and row count at 513-2,048 chunk tokens
3.0-5.0% linearly, 0.7-2.9% along the prefill grid's shape; in the committed replays (H200, H100-1206, H200 holdouts)
the mixed steps past 256 chunk tokens' step-weighted |error| 5.0% -> 4.2%. Up to 256 tokens the two disagreed by
sweep (the GEMMs are near their weight-read floor there and the prefill grid's steps are small): linear stays."""


TOP_SHARE = 0.25     # the part of a grid's token axis whose least-squares line extends it past its largest point


def top_slope(xs, ys) -> float:
    """Growth per token past a curve's largest point: the least-squares slope through its points in the top
    :data:`TOP_SHARE` of the axis (at least three), never negative. The last segment alone is one pair of
    noisy, isotonic-flattened points: on the H200 OPT-13B profile it gave 8.6 us per token from 1,984 to 2,048
    tokens, where the top quarter's line gives the GEMMs' ~45."""
    xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    if len(xs) < 2:
        return 0.0
    k = max(3, int(np.sum(xs >= (1.0 - TOP_SHARE) * xs[-1])))
    return max(0.0, float(np.polyfit(xs[-k:], ys[-k:], 1)[0]))


class StepGridsMixin:
    """``_grid_step`` (a step with prompt tokens, whole), ``_measured_step`` and ``_attn_extra`` over the attributes
    :class:`CalibratedCostModel` sets up (``p``, ``_mix``, ``_longest``, ``_step``, ``_pstep``, ``_pre``, ``_pserving``,
    ``_over_mono``, ``_shapes``, ``_pgraphs``, ``_pgraph_seqs``, ``_dec_cache``, ``L``) and its ``_decode_attn``,
    ``_prefill_host``."""

    def _pstep_at(self, tokens: float) -> float:
        """``prefill_step`` at ``tokens``: interpolated on the grid; past it, the step's work other than
        attention grows along :func:`top_slope` of the grid less its attention (steps beyond the largest CUDA
        graph run eagerly and their GEMMs are linear in tokens) and its attention by query-key pairs
        (:meth:`_kernel_attn`: quadratic in a fresh prompt's tokens). Growing the whole step linearly priced
        Mistral-7B's 2-6k-token prompts 7-17% fast on an H100, the gap widening with the prompt
        (``benchmarks/engine/prefill_price_check.py`` on ``validation/H100-1206/v29*``)."""
        xs, ys = self._pstep
        if tokens <= xs[-1]:
            return float(interp1(tokens, xs, ys))
        slope = self._dec_cache.get("pstep_slope")
        if slope is None:
            rest = [y - self.L * self._kernel_attn(x, 0.0) for x, y in zip(xs, ys)]
            slope = self._dec_cache["pstep_slope"] = top_slope(xs, rest)
        attn = self.L * (self._kernel_attn(tokens, 0.0) - self._kernel_attn(float(xs[-1]), 0.0))
        return float(ys[-1] + slope * (tokens - xs[-1]) + max(0.0, attn))

    def _mixed_between(self, t_pre: float, n: int, mean: float, xc, xt, plane) -> float:
        """A mixed step's price from the mixed grid's (context x chunk) plane at its ``n`` rows, at ``t_pre`` chunk
        tokens. Past :data:`SHAPED_FROM_CHUNK`, between two measured chunks, the step follows the prefill grid's
        shape there (measured at every captured graph size: the GEMMs' staircase, e.g. Llama-3-8B on an H100 18.95
        ms at 768 tokens and 24.37 at 832) plus the mixed grid's excess over it, interpolated linearly; elsewhere,
        and without a prefill grid at the engine's graph sizes, linearly along the chunk."""
        j = max(1, int(np.searchsorted(xt, t_pre))) if len(xt) >= 2 else 0
        if not j or t_pre <= SHAPED_FROM_CHUNK or self._pgraphs is None or t_pre > float(xt[-1]) \
                or float(xt[j - 1]) < SHAPED_FROM_CHUNK:
            return float(interp2(mean, t_pre, xc, xt, plane))
        lo, hi = float(xt[j - 1]), float(xt[j])
        step = lambda c: self._pstep_at(float(padded(int(round(c)) + n, self._pgraphs)))      # noqa: E731
        ex_lo = float(interp1(mean, xc, plane[:, j - 1])) - step(lo)
        ex_hi = float(interp1(mean, xc, plane[:, j])) - step(hi)
        return step(t_pre) + ex_lo + (t_pre - lo) / (hi - lo) * (ex_hi - ex_lo)

    def _kernel_attn(self, new: float, cached: float) -> float:
        """Per-layer prefill attention of ``new`` tokens after ``cached`` from the kernel grid, above its smallest
        point (a few tokens, nothing cached: almost all launch). Past the grid's largest ``new``, the grid's edge
        plus the query-key pairs beyond it at the cost per pair of the grid's last segment along ``new`` (at
        this context): attention work is linear in pairs, and pairs grow quadratically with a prompt, so the
        linear extension that serves the other axes would price a long prompt's attention low."""
        xn, xc, table = self._pre
        floor = float(table[0, 0])
        top = float(xn[-1])
        if new <= top or len(xn) < 2:
            return float(interp2(float(new), float(cached), xn, xc, table)) - floor
        key = ("kattn_edge", float(cached))       # (the grid at its largest prompt, the cost per pair past it)
        got = self._dec_cache.get(key)
        if got is None:
            lo = float(xn[-2])
            edge = float(interp2(top, float(cached), xn, xc, table))
            grow = edge - float(interp2(lo, float(cached), xn, xc, table))
            span = attention_pairs([top], [cached]) - attention_pairs([lo], [cached])
            got = self._dec_cache[key] = (edge - floor, max(0.0, grow / span) if span > 0 else 0.0)
        edge, per_pair = got
        return edge + per_pair * (attention_pairs([new], [cached]) - attention_pairs([top], [cached]))

    def _attn_extra(self, plan: StepPlan, total_new: int) -> float:
        """Prefill attention of the plan's groups beyond one fresh sequence of ``total_new``, whole step.

        From the profile's cached-context grid when it has one (:mod:`kvsim.cost.prefill_shapes`): its own
        growth for the step's one prompt after cached tokens, its pair cost for any other plan; otherwise from
        the per-layer kernel grid, which times one group per launch, and whose smallest point (a few tokens,
        nothing cached) is almost all launch: the engine runs every group of a step in one varlen launch, so
        each group adds its work above that floor, not a launch of its own."""
        cached = plan.prefill_cached_tokens or [0] * len(plan.prefill_new_tokens)
        # one prompt (or chunk) after cached tokens: its programs walk the cached context latency-bound (Llama-3-8B,
        # H200: 16 or 256 new tokens after 1,024 add ~1.2 ms, 0.04 / 0.7 ms by pairs), in its own prefill-kernel
        # launch whether or not the step also has decode rows (those run in the decode kernel), so a mixed step's
        # chunk pays the grid's growth too (v23's 1-64-token chunks after a prefix hit: -9.5% -> -3.1%)
        lone = len(cached) == 1 and cached[0] > 0
        whole = self._shapes.cached_growth(total_new, cached[0]) if lone else None    # measured at its shape
        if whole is None:
            whole = self._shapes.attn_extra(plan.prefill_new_tokens, cached, total_new)
        if whole is not None:
            return whole
        got = sum(self._kernel_attn(n, c) for n, c in zip(plan.prefill_new_tokens, cached))
        return self.L * (got - self._kernel_attn(total_new, 0.0))

    def _measured_step(self, plan: StepPlan, overhead) -> float:
        """Prefill or mixed iteration from the whole-iteration grids (see module doc), with ``overhead``'s
        curve over rows."""
        ctx = plan.decode_context_tokens
        n = len(ctx)
        t_pre = plan.num_prefill_tokens
        rows = float(len(plan.prefill_new_tokens) + n)
        t = float(interp1(rows, *overhead))
        if n and t_pre and self._mix is not None:   # a measured mixed iteration with a fresh chunk of t_pre
            xn, xc, xt, grid = self._mix
            plane = self._dec_cache.get(("mix", n))       # (ctx x chunk) plane at n rows, built once per n
            if plane is None:
                plane = np.array([[float(interp1(float(n), xn, grid[:, i, j])) for j in range(len(xt))]
                                  for i in range(len(xc))])
                self._dec_cache[("mix", n)] = plane
            mean, top = float(sum(ctx)) / n, float(xt[-1])
            if self._longest is not None:         # unequal contexts, rows walked whole (kvsim.cost.mixed_rows)
                t += self._longest.extra(ctx, float(t_pre))
            if t_pre <= top or len(xt) < 2:
                t += self._mixed_between(float(t_pre), n, mean, xc, xt, plane)
            else:   # past the largest chunk measured: the grid's edge at these rows plus one growth per chunk
                # token for every row count (the median of the measured rows' last chunk segments at this
                # context): the extra tokens' work does not depend on the decode rows, and a slope per row
                # count priced a 4,096-token chunk with 256 rows below one with 96 (Llama-3-8B, H200). That
                # growth less the chunk's attention over the last segment is extended linearly, the attention by
                # query-key pairs (:meth:`_kernel_attn`), as a long prompt's (:meth:`_pstep_at`)
                lo = float(xt[-2])
                slopes = [(interp1(mean, xc, grid[r, :, -1]) - interp1(mean, xc, grid[r, :, -2])) / (top - lo)
                          for r in range(len(xn))]
                attn_lo, attn_top = self._kernel_attn(lo, 0.0), self._kernel_attn(top, 0.0)
                rest = max(0.0, float(np.median(slopes)) - self.L * (attn_top - attn_lo) / (top - lo))
                attn = self.L * max(0.0, self._kernel_attn(float(t_pre), 0.0) - attn_top)
                t += float(interp2(mean, top, xc, xt, plane)) + rest * (t_pre - top) + attn
            return t + self._attn_extra(plan, t_pre)
        if n:
            t += float(self._grid_at(self._step, float(n), float(sum(ctx))))
            if t_pre:    # the extra tokens' linear layers: a prefill of t_pre + n minus one of n tokens
                t += self._pstep_at(float(t_pre + n)) - self._pstep_at(float(n))
        elif t_pre:
            new = plan.prefill_new_tokens
            fits = self._pgraphs is not None and len(new) <= self._pgraph_seqs
            several = self._several_prompts(new, plan.prefill_cached_tokens or [0] * len(new), t_pre, fits)
            if several is not None:         # several prompts: their own measured grid
                return t + several
            t += self._pstep_at(float(padded(t_pre, self._pgraphs if fits else None)))
        if t_pre:
            t += self._attn_extra(plan, t_pre)
        return t

    def _several_prompts(self, new: list[int], cached: list[int], t_pre: int, fits: bool) -> float | None:
        """A prefill-only step of two or more prompts (without overhead), or None for one prompt or without the
        multi-prompt grid. Within the one-prompt grid's tokens and with that grid at the engine's graph sizes: the
        one-prompt step at the padded sum plus the batch grid's excess over one prompt
        (:meth:`kvsim.cost.prefill_shapes.PrefillShapes.batch_excess_rows`) and the pairs unequal prompts add; else
        the batch grid at the prompt count and mean prompt (:meth:`~kvsim.cost.prefill_shapes.PrefillShapes.batch`)."""
        if len(new) < 2:
            return None
        top = float(self._pstep[0][-1]) if self._pgraphs is not None else 0.0   # (graph-spaced: _pstep is there)
        rows = self._dec_cache.get("batch_excess")
        if rows is None and t_pre <= top:
            rows = self._dec_cache["batch_excess"] = self._shapes.batch_excess_rows(self._pstep_at, top)
        if t_pre <= top and rows:
            at = [float(np.interp(float(t_pre), x, y)) for _, x, y in rows]   # along the sum, then the count
            excess = float(np.interp(float(len(new)), [s for s, _, _ in rows], at))
            return self._pstep_at(float(padded(t_pre, self._pgraphs if fits else None))) + excess \
                + self._shapes.unequal_pairs(new, cached)
        return self._shapes.batch(new, cached)

    def _served(self, plan: StepPlan) -> bool:
        """A prefill-only step priced as the serving fit's lone prompts (``prefill_serving``): up to its longest."""
        return self._pserving is not None and not plan.decode_context_tokens and bool(plan.prefill_new_tokens) \
            and plan.num_prefill_tokens <= self._pserving[0][-1]

    def prompt_host_s(self, plan: StepPlan) -> float:
        """The host work on the critical path inside :meth:`step_time`'s price of ``plan``: a prefill-only step
        priced from the serving fit's lone prompts pays theirs (``prefill_serving[bs].host_s``, by prompt tokens),
        which one prepared while the step before it flew does not (:mod:`kvsim.overlap`); 0 for other steps and
        for profiles without it."""
        if self._phost is None or not self._served(plan):
            return 0.0
        return float(np.interp(float(plan.num_prefill_tokens), *self._phost))

    def _grid_step(self, plan: StepPlan) -> float:
        """A step with prompt tokens, from the grids and fits, before its copies, sampling and swaps."""
        ctx = plan.decode_context_tokens
        p = self.p
        groups = len(plan.prefill_new_tokens)
        t = 0.0
        served = self._served(plan)
        if self._step is not None and self._pstep is not None and (groups or ctx):
            # mixed steps (no serving fit corrects them) take the monotone overhead; prefill-only steps the
            # measured points, as prefill_serving's fit priced them (kvsim.calibrate.serving_fit)
            t = self._measured_step(plan, self._over_mono if groups and ctx else p.overhead)
        elif groups or ctx:
            tokens = float(plan.num_prefill_tokens + len(ctx))
            rows = float(groups + len(ctx))
            layer = float(interp1(tokens, *p.linear) + interp1(tokens, *p.other))
            if ctx:
                layer += float(self._decode_attn(float(len(ctx)), float(sum(ctx))))
            cached = plan.prefill_cached_tokens or [0] * groups
            for new, c in zip(plan.prefill_new_tokens, cached):
                layer += float(interp2(float(new), float(c), *self._pre))
            t = float(interp1(rows, *p.overhead)) + self.L * layer + float(interp1(rows, *p.lm_head))
        if served:
            # a prefill-only step as lone prompts cost in the serving runs (kvsim.calibrate.serving_fit): an
            # extra that may be negative, never below the step's grid price without its overhead; only up to
            # the longest prompt measured (a bigger step, e.g. a static batch, keeps prefill_overhead)
            over = float(interp1(float(groups), *p.overhead))
            t = max(t - over, t + float(np.interp(float(plan.num_prefill_tokens), *self._pserving)))
        elif self._pserving is not None and not ctx and groups == 1:
            # one prompt longer than the serving runs': the fit's extra at its longest prompt, growing beyond it as
            # the fit's share of the step (a long prompt is compute-bound, and what serving adds to it, clocks
            # under load, scales with its time), at least prefill_overhead
            share, base_top, extra_top = self._serving_share()
            base = t - float(p.overhead[1][0])
            t += max(self._prefill_host(plan.num_prefill_tokens), extra_top + share * (base - base_top))
        else:
            t += self._prefill_host(plan.num_prefill_tokens)
        return t

    def _serving_share(self) -> tuple[float, float, float]:
        """``(share, base, extra)``: what the serving fit's lone prompts took beyond their grid price, as a share of
        it (the median of ``extra / (price - overhead)`` over the longer half of its prompts, at least 0), and the
        grid price less overhead and the fit's extra at its longest prompt (a longer prompt's extra starts there:
        no jump at the fit's end). Mistral-7B's fit on an H100 read 4-6% there, and its 2-6k-token prompts ran 4-8%
        over the grid extended past 2,048 tokens (``benchmarks/engine/prefill_price_check.py`` on
        ``validation/H100-1206/v29*``), where prefill_overhead had added 0.2 ms."""
        got = self._dec_cache.get("serving_share")
        if got is None:
            xs, extra = self._pserving
            over = float(self.p.overhead[1][0])
            shares, base = [], 0.0
            for x, e in list(zip(xs, extra))[len(xs) // 2:]:
                plan = StepPlan(prefill_group_ids=[0], prefill_new_tokens=[int(round(x))], prefill_cached_tokens=[0])
                base = self._measured_step(plan, self.p.overhead) - over if self._step is not None else 0.0
                if base > 0:
                    shares.append(float(e) / base)
            share = max(0.0, float(np.median(shares))) if shares else 0.0
            got = self._dec_cache["serving_share"] = (share, base, float(extra[-1]))
        return got
