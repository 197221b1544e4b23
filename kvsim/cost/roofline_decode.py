"""The roofline cost model's decode-only pricing: one step, many steps as arrays, a run's steps as a list or its cut.

A mixin of :class:`kvsim.cost.roofline.RooflineCostModel` (it reads the model's
rates and per-layer constants). Every form performs the same IEEE operations in
the same order as the shared formula ``_forward_time(n, n, n, ctx_sum, 0.0)``,
so each prices a step to the same float (tested bit for bit):

* ``decode_step_time`` — one step, on Python floats (the stepped path);
* ``decode_step_times`` — one batch size, an array of context sums (the batch
  terms as scalars, the array terms in place);
* ``decode_step_times_rows`` — a batch size per row (rebuilding fast-forwarded rows);
* ``decode_run_times`` — ``steps`` steps in a row as a list, in a Python loop:
  cheaper than numpy's per-call overhead for the few steps of most segments.

The loops (``decode_run_times``, ``decode_run_cut``) run on Python floats only: the
context sum ``s`` as a float (exact below 2**53) stepped by the batch size, the layer count as a float; a
float times an int converts the int to the same double first, so every product and sum is the one the int
form computes, while float-by-float operations take the interpreter's fast path. The step's first term
``s * c / r + linear`` never decreases as ``s`` grows (each rounding is monotone; ``c``, ``r`` > 0), so
where the floor does not bind at a segment's first step it binds at none, and the loop leaves the clamp out.

Decode attention's roofline is ``max(s * flops / rate, s * bytes / bandwidth)``
for a context sum ``s``; the side that wins at every ``s`` is found once
(``_decode_attention_side``) and only it is computed.
"""
from __future__ import annotations

import numpy as np


class RooflineDecodeMixin:
    """Decode-only pricing of :class:`~kvsim.cost.roofline.RooflineCostModel` (see the module doc)."""

    def _decode_attention_side(self) -> str:
        """Which side of decode attention's roofline, ``max(s * flops / rate, s * bytes / bandwidth)``, wins for
        every context sum ``s > 0``: each side is ``s`` times a constant within two roundings, so when the two
        constants differ by far more than that the same side wins whatever ``s`` (and both are 0 at ``s = 0``);
        "both" when they are too close to tell."""
        f = self._attn_flops_per_pair / self._attn_rate
        b = self._kv_bytes_per_token_layer / self._bw
        if f > b * (1 + 1e-9):
            return "flops"
        if b > f * (1 + 1e-9):
            return "bytes"
        return "both"

    def _decode_scalars(self, num_seqs: int) -> tuple[float, float, float, float]:
        """(linear, all-reduce, overhead, lm_head) of a decode step of ``num_seqs`` sequences: the batch terms."""
        p = self.params
        n = float(num_seqs)
        linear = n * self._lin_flops_per_token / self._flop_rate
        if not linear >= self._lin_weight_time:
            linear = self._lin_weight_time
        lm_head = n * self._lm_flops_per_row / self._flop_rate
        if not lm_head >= self._lm_weight_time:
            lm_head = self._lm_weight_time
        return linear, n * self._ar_per_token + self._ar_fixed, p.step_overhead_s + n * p.per_seq_overhead_s, lm_head

    def decode_step_time(self, num_seqs: int, ctx_token_sum: int) -> float:
        """One decode-only step (the scalar twin of :meth:`decode_step_times`, equal bit for bit)."""
        if num_seqs <= 0:
            return 0.0
        n = float(num_seqs)
        return self._forward_time_f(n, n, n, float(ctx_token_sum), 0.0)

    def decode_step_times(self, num_seqs: int, ctx_token_sums: np.ndarray, ctx_max: np.ndarray | None = None
                          ) -> np.ndarray:
        """Step times of decode-only plans of ``num_seqs`` sequences, one per context-length sum."""
        sums = np.asarray(ctx_token_sums, dtype=np.float64)
        if num_seqs <= 0:
            return np.zeros(sums.shape, dtype=np.float64)
        # _forward_time(n, n, n, sums, 0.0) with the batch-size terms as scalars and the array terms in place
        linear, ar, over, lm_head = self._decode_scalars(num_seqs)
        side = self._attn_side
        if side == "flops":                   # the roofline side that wins at every context length
            a = sums * self._attn_flops_per_pair
            a /= self._attn_rate
        elif side == "bytes":
            a = sums * self._kv_bytes_per_token_layer
            a /= self._bw
        else:
            a = sums * self._attn_flops_per_pair
            a /= self._attn_rate
            b = sums * self._kv_bytes_per_token_layer
            b /= self._bw
            np.maximum(a, b, out=a)
        a += linear                           # (+ prefill_attn_s = 0.0: adds nothing to a positive time)
        np.maximum(a, self.params.layer_launch_floor_s, out=a)
        a += ar
        a *= self.model.num_layers
        a += over                             # overhead + L * layer (addition commutes)
        a += lm_head
        return a

    def decode_step_times_rows(self, num_seqs: np.ndarray, ctx_token_sums: np.ndarray,
                               ctx_max: np.ndarray | None = None) -> np.ndarray:
        """:meth:`decode_step_times` with one batch size per row, in one vectorised call (elementwise, so each
        entry equals the one-size call's bit for bit)."""
        n = np.asarray(num_seqs).astype(np.float64)
        sums = np.asarray(ctx_token_sums, dtype=np.float64)
        out = np.asarray(self._forward_time(n, n, n, sums, np.float64(0.0)), dtype=np.float64)
        return np.where(n > 0, out, 0.0)

    def _run_terms(self, num_seqs: int):
        """``(c, r, linear, ar, over, lm_head, floor, layers)``: a decode step of ``num_seqs`` rows at context sum
        ``s`` costs ``(max(s * c / r + linear, floor) + ar) * layers + over + lm_head`` (the shared formula with
        the winning side of attention's roofline), the terms :meth:`decode_run_times` and
        :meth:`decode_run_cut` loop over; None where no side always wins (the array form prices those).
        Kept per batch size (a run's segments ask again and again)."""
        terms = self._terms.get(num_seqs, False)
        if terms is False:
            terms = self._terms[num_seqs] = self._make_terms(num_seqs)
        return terms

    def _make_terms(self, num_seqs: int):
        side = self._attn_side
        if num_seqs <= 0 or side == "both":
            return None
        linear, ar, over, lm_head = self._decode_scalars(num_seqs)
        c, r = ((self._attn_flops_per_pair, self._attn_rate) if side == "flops"
                else (self._kv_bytes_per_token_layer, self._bw))
        return c, r, linear, ar, over, lm_head, self.params.layer_launch_floor_s, self.model.num_layers

    def decode_run_times(self, num_seqs: int, ctx_sum: int, ctx_max: int, steps: int) -> list[float]:
        """Step times of ``steps`` decode steps in a row (step ``j`` attends to ``ctx_sum + j * num_seqs`` context
        tokens) as a list: ``decode_step_times`` on those sums, bit for bit, in a Python loop."""
        terms = self._run_terms(num_seqs)
        if terms is None:
            j = np.arange(steps, dtype=np.float64)
            return self.decode_step_times(num_seqs, ctx_sum + num_seqs * j, ctx_max + j).tolist()
        c, r, linear, ar, over, lm_head, floor, layers = terms
        out = []
        add = out.append
        s, d, layers = float(ctx_sum), float(num_seqs), float(layers)     # (exact: the same products and sums)
        if steps and s * c / r + linear >= floor:   # the floor never binds: it grows with s (module doc)
            for _ in range(steps):
                add((s * c / r + linear + ar) * layers + over + lm_head)
                s += d
            return out
        for _ in range(steps):
            x = s * c / r + linear
            if x < floor:
                x = floor
            add((x + ar) * layers + over + lm_head)
            s += d
        return out

    def decode_run_cut(self, num_seqs: int, ctx_sum: int, ctx_max: int, steps: int, t0: float,
                       limit: float = float("inf"), cap: int | None = None) -> tuple[int, float, float] | None:
        """Where a run of :meth:`decode_run_times`' steps from the clock ``t0`` stops: ``(n, clock before step
        n - 1, clock after it)``, ``n`` the steps up to the first that ends at or past ``limit`` (the later ones
        start past it), else ``steps``. The clock is the running sum ``itertools.accumulate(times, initial=t0)``
        takes, in the same order, as SimPy's; only the two values are kept (a clock value per step, a list's
        append, cost a paged run ~1.5% more instructions: :mod:`kvsim.fastforward` rebuilds a run's step starts
        from the step times where it needs them). None where :meth:`decode_run_times` would not loop (no side
        of the roofline always wins). At most ``cap`` steps in the loop: where those end before the limit and the
        run, the rest of the run's steps are priced at once in the array form (:meth:`_cut_rest`). ``steps`` >= 1."""
        terms = self._run_terms(num_seqs)
        if terms is None:
            return None
        c, r, linear, ar, over, lm_head, floor, layers = terms
        n = steps if cap is None else min(steps, cap)
        t = x = t0
        s, d, layers = float(ctx_sum), float(num_seqs), float(layers)     # (exact: the same products and sums)
        if s * c / r + linear >= floor:             # the floor never binds: it grows with s (module doc)
            for i in range(1, n + 1):
                t = x
                x = t + ((s * c / r + linear + ar) * layers + over + lm_head)
                if x >= limit:
                    return i, t, x
                s += d
        else:
            for i in range(1, n + 1):
                t = x
                x = s * c / r + linear
                if x < floor:
                    x = floor
                x = t + ((x + ar) * layers + over + lm_head)
                if x >= limit:
                    return i, t, x
                s += d
        return (n, t, x) if n == steps else self._cut_rest(x, num_seqs, ctx_sum, ctx_max, n, steps, limit)

    def _cut_rest(self, t: float, num_seqs: int, ctx_sum: int, ctx_max: int, done: int, steps: int,
                  limit: float) -> tuple[int, float, float]:
        """:meth:`decode_run_cut` past its loop's ``done`` steps (none ended at the limit), ``t`` the clock after
        them: the other steps' times from :meth:`decode_step_times` (the loop's floats, bit for bit) added on
        from ``t`` one at a time in order (``cumsum`` accumulates sequentially: the running sum the loop and
        SimPy's clock take)."""
        j = np.arange(done, steps, dtype=np.float64)
        clock = np.empty(steps - done + 1, dtype=np.float64)
        clock[0] = t
        clock[1:] = self.decode_step_times(num_seqs, ctx_sum + num_seqs * j, ctx_max + j)
        clock.cumsum(out=clock)
        i = int(clock[1:].searchsorted(limit))      # (the clock never decreases)
        m = min(i + 1, steps - done)                # the steps past the loop's taken
        return done + m, float(clock[m - 1]), float(clock[m])
