"""Calibrated cost model: interpolates a profile measured on a real GPU (no torch needed).

A profile (JSON, written by ``kvsim calibrate``; see ``calibrate/README.md``)
holds, for one model and dtype on one GPU, per-layer times of the linear
layers and the other per-token ops over token counts, paged decode attention
over batch x context per block size, prefill attention over new x cached
tokens, the LM head + sampling over rows, block copies, swaps by block size,
and the per-iteration overhead (measured whole steps minus the composed op
times). One iteration costs::

    overhead(seqs) + L x [linear(T) + other(T) + decode_attn(n, mean ctx) + sum prefill_attn(new, cached)]
    + lm_head(rows) + copies (+ swaps when include_swaps_in_step)

Profiles that also hold ``decode_step`` (whole decode iterations over batch x
context) and ``prefill_step`` (whole single-sequence prefills over tokens) are
priced from those instead (decode steps: :mod:`kvsim.cost.decode_price`): a decode iteration is ``overhead(n) +
decode_step(b, sum ctx / b) + spread``, where ``b`` is the engine's CUDA-graph
batch that ``n`` rows replay (padding rows run the linear layers but read no KV;
``b = n`` without graphs) and ``spread`` is what unequal contexts add. The decode
kernel runs one program per (sequence, KV head, partition) and at the batches
serving uses they all fit on the GPU at once, so the longest sequence sets the
makespan: a batch with contexts 100..1000 costs more than one with all at 550.
Profiles with ``decode_spread_step`` (whole decode iterations whose contexts are
evenly spaced up to a longest one, over batch x longest) give, per grid point,
where the measured step lies between the uniform step at the shape's mean (0) and
at its longest (1) — from the uniform steps timed beside it when the profile holds
them (``mean_time_s``, ``top_time_s``), otherwise from the interpolated
``decode_step`` grid (older profiles); a step is charged that fraction of ``decode_step(b, max) -
decode_step(b, mean)`` (``benchmarks/engine/decode_gap.py`` measures, on real
engine steps, what unequal contexts and the sustained run each add). Profiles with ``decode_serving``
(:mod:`kvsim.calibrate.serving_fit`: real engine decode steps of serving-shaped batches, n rows of unequal
contexts) add ``extra_s(n)`` to ``overhead(n)`` (interpolated in n, held outside the fitted rows; below the
smallest fitted row the sum is capped at that row's: ``step_overhead``'s one lock-step run at 1 row can sit
above the serving fit's 4 rows, and fewer rows are never more work) and, in the
fit's default form (``"spread": "grid"``), keep the spread grid's fraction. A run whose decode steps the
engine never overlaps (beam search) takes, from a profile of an overlapped calibration, the fit's stepped
steps' extra instead (``decode_serving[bs].stepped``; ``stepped_decode``). Older profiles hold a fraction
fitted per row instead, ``spread_frac(n)``, which replaces the grid's up to the largest fitted row; above it
the fraction is the spread grid's at that batch (measured there, on evenly spaced contexts: it
falls at large batches, where many programs share the SMs, so holding a small batch's fitted fraction would
overprice them), reached linearly from the last fitted fraction by the grid's next batch, and ``extra_s`` is
held. Profiles with
``prefill_serving`` (the lone prefill steps of those runs) price a prefill-only step of up to its longest
measured prompt with its ``extra_s(T)`` (interpolated in the step's prompt tokens, held below; it may be
negative, but never takes the step below its grid price without overhead) in place of ``prefill_overhead``;
a longer step of several prompts keeps ``prefill_overhead`` (the curve's values there would be extrapolated from
single prompts onto, e.g., a static scheduler's multi-prompt batch), and a longer single prompt pays the fit's
extra as a share of its grid price (:meth:`StepGridsMixin._serving_share`), at least ``prefill_overhead``. A prefill
iteration is ``overhead + prefill_step(T') +
L x (attention of the actual groups - attention of one fresh T-token
sequence)``, with ``T'`` the CUDA-graph token count the engine pads ``T`` to when the grid was timed
between decode steps (``prefill_step[bs].timing``), else ``T`` itself. Profiles with
``prefill_cached_step`` price that attention correction from its whole-step cost per query-key pair (a
prompt alone in its step after cached tokens: from that grid's own growth along ``cached``), and
profiles with ``prefill_batch_step`` price a prefill-only step of several prompts from that grid
(:mod:`kvsim.cost.prefill_shapes`). A mixed one is ``overhead + mixed_step(n, mean ctx, T) + L x (the
same attention correction)`` when the profile holds ``mixed_step`` (whole mixed
iterations in the engine's unified layout over decode rows x context x chunk
tokens); older profiles add the prefill tokens' share to the decode step.
Composing isolated kernels over-counts launch gaps that overlap in a real
forward pass, so the whole-iteration grids are preferred when present.
A decode step that also copies blocks (copy-on-write) or swaps is priced as the same decode step alone (its
serving terms and spread included) with the copies and transfers added.
Profiles with ``sampling`` (the engine's sampling calls timed alone) add, to a step with beam-search rows, the
beam calls it makes less the greedy draw the grids were timed with (:mod:`kvsim.cost.sampling_price`). Profiles
whose serving fit also ran beam search (``decode_serving[bs].beam``, :mod:`kvsim.calibrate.beam_fit`) price a
decode step with beam rows as the stepped step plus the beam runs' measured extra at its beam rows (the copy
table added, and the extra of their copying steps, when it copies), less ``shared_saving`` times the decode grid's
attention time of the block reads its beams share (``StepPlan.beam_shared_blocks``; cached on the card), in place
of the sampling table.
``step_overhead`` is fitted on decode steps (one lock-step engine run per point); mixed steps, and decode steps
at a block size without ``decode_serving``, take it made non-decreasing in rows (isotonic); decode steps with a
serving fit and prefill-only steps the points as measured (the serving fits are made against them). Profiles with ``prefill_overhead``
(real engine prefill steps of T prompt tokens minus their price without it:
the host work that grows with a prompt) add it at the step's prefill tokens to
every prefill and mixed iteration. Newer profiles fit it on prompts that reach a
busy engine and hold what a prompt reaching an idle one adds on top as
``wake_overhead`` (the clock ramp after idle), which :meth:`wake_time` returns and
the simulator adds to the first step after an idle period only; profiles from 2026-12-07 on also hold, as
``wake_overhead.latency_s``, how long the idle engine took from the arrival to scheduling that step
(``wake_latency_s``: the simulator waits it out before scheduling, so near-simultaneous arrivals share the step).

Interpolation is piecewise linear on the measured grid. Times are made
monotone along every axis (more work never takes less time) by isotonic
regression, which averages a noisy slow sample with its neighbours. Outside the grid: below the smallest point the first
value is used; above the largest, the last segment's slope extends the curve
(linear growth in tokens, batch and context) — except ``prefill_step``, whose work other than attention is
extended along the least-squares line of its top quarter (:func:`kvsim.cost.step_grids.top_slope`; its last pair is
often isotonic-flattened) and whose attention grows by query-key pairs (the kernel grid past its largest prompt), and
mixed steps past the largest chunk, which grow alike for every row count (:mod:`kvsim.cost.step_grids`). Decode depends on the plan only
through (n, sum ctx, max ctx), so ``step_time`` and ``decode_step_times`` agree bit for bit.

Sliding-window models: the grids are timed with full attention (``kvsim calibrate``'s synthetic steps carry no
window), so ``step_time`` asks them for each decode row's per-layer mean of keys read and takes each prefill
chunk's windowed share of pairs off its attention (:mod:`kvsim.cost.window`); inside the smallest window nothing
changes, which is where fast-forwarded segments (priced by ``decode_step_times`` on plain sums) stay.
"""
from __future__ import annotations

import numpy as np

from kvsim.core.plan import StepPlan
from kvsim.cost.base import CostModel, is_decode_only
from kvsim.cost.decode_price import DecodePriceMixin
from kvsim.cost.decode_spread import DecodeSpreadMixin
from kvsim.cost.mixed_rows import LongestRow, programs_per_kv_head
from kvsim.cost.prefill_shapes import PrefillShapes
from kvsim.cost.sampling_price import SamplingPriceMixin
from kvsim.cost.step_grids import StepGridsMixin
from kvsim.cost.profile import (FORMAT, REQUIRED, VERSION, Profile, interp1, interp2, isotonic,  # noqa: F401
                                load_profile, spread_contexts, spread_fractions)
from kvsim.cost.profile_card import card_matches, check_card, chip_key  # noqa: F401
from kvsim.errors import KvsimError
from kvsim.graph_sizes import route_sizes


class CalibratedCostModel(DecodePriceMixin, StepGridsMixin, DecodeSpreadMixin, SamplingPriceMixin, CostModel):
    """Interpolates ``profile`` for ``model_name`` at ``block_size_tokens`` (see module doc)."""

    def __init__(self, profile: Profile, *, model_name: str, dtype: str, block_size_tokens: int,
                 include_swaps_in_step: bool = True, decode_graph_batches: list[int] | None = None,
                 prefill_graph_tokens: list[int] | None = None, prefill_graph_seqs: int = 256,
                 prefill_graph_skip: list[int] | None = None, prefill_graph_route: bool = True,
                 gpu: str | None = None, stepped_decode: bool = False):
        """``gpu``: the scenario's GPU; when given, a profile measured on another card is refused
        (:func:`check_card`). ``prefill_graph_skip``: prefill graph sizes the engine never pads to; with
        ``prefill_graph_route`` also those the profile's calibration routed past (``runtime.cuda_graph_prefill_route``:
        the engine measures its route when it captures, the profile's is the best estimate of it).
        ``stepped_decode``: the engine steps every decode step of this run (beam search: no overlapped
        scheduling), so a profile of an overlapped calibration prices them with its stepped steps' extra."""
        if profile.model.lower() != model_name.lower():
            raise KvsimError("profile", f"{profile.source} was measured for {profile.model}, "
                                        f"the scenario's model is {model_name}")
        if profile.dtype != dtype:
            raise KvsimError("profile", f"{profile.source} was measured in {profile.dtype}, the scenario uses {dtype}")
        if block_size_tokens not in profile.decode or block_size_tokens not in profile.prefill:
            why = (profile.meta.get("skipped_block_sizes") or {}).get(str(block_size_tokens))
            hint = f"; the calibration skipped it: {why}" if why else "; re-run kvsim calibrate --block-sizes"
            raise KvsimError("engine.block_size", f"{block_size_tokens} is not in the profile (measured: "
                                                  f"{profile.block_sizes}){hint}")
        if gpu is not None:
            check_card(profile, gpu)
        self.p = profile
        self.bs = block_size_tokens
        self.L = profile.num_layers
        self.include_swaps_in_step = include_swaps_in_step
        self._dec = profile.decode[block_size_tokens]
        self._pre = profile.prefill[block_size_tokens]
        self._dec_cache: dict[tuple, np.ndarray] = {}
        self._prefill_memo: dict[tuple, float] = {}     # (new tokens, cached tokens) -> price (_step_time)
        self._step = profile.decode_step.get(block_size_tokens)      # whole decode iterations, if measured
        self._pstep = profile.prefill_step.get(block_size_tokens)
        self.wake_latency_s = profile.wake_latency            # (0 where the profile did not measure it)
        self._mix = profile.mixed_step.get(block_size_tokens)        # whole mixed iterations, if measured
        self._shapes = PrefillShapes(profile, block_size_tokens)      # multi-prompt and cached-context prefills
        # the engine replays a decode step of n rows as its graph of padded(n) rows, when the profile's
        # steps were measured from graphs too
        self._graphs = sorted(decode_graph_batches) if decode_graph_batches and profile.meta.get("cuda_graphs") \
            else None
        # ... and a prefill-only step of T tokens over at most prefill_graph_seqs prompts as its graph of
        # padded(T) tokens (the prefill_step grid is measured at exactly those captured sizes). Only for grids
        # timed between decode steps: older ones timed long prompts back-to-back (the card near its power
        # limit) and run 7-8% above real lone prefills (benchmarks/engine/results_H200/decode_gap/README.md); their
        # interpolation at T is kept rather than stacking the padding on that excess
        skip = set(prefill_graph_skip or ()) | (set(profile.prefill_graph_skip.get(block_size_tokens, ()))
                                                 if prefill_graph_route else set())
        self._pgraphs = route_sizes(sorted(prefill_graph_tokens), skip) if prefill_graph_tokens \
            and profile.meta.get("cuda_graphs") and block_size_tokens in profile.prefill_step_spaced else None
        self._pgraph_seqs = int(prefill_graph_seqs)
        spread = profile.decode_spread_step.get(block_size_tokens)
        lam = profile.decode_spread_lam.get(block_size_tokens)
        self._lam = None if spread is None or self._step is None else \
            lam if lam is not None else self._spread_weights(spread)
        # decode steps of serving-shaped batches fitted on real engine runs (kvsim.calibrate.serving_fit)
        self._serving = profile.decode_serving.get(block_size_tokens) if self._step is not None else None
        stepped = profile.decode_stepped.get(block_size_tokens) if stepped_decode else None
        if self._serving is not None and stepped is not None:    # the stepped steps' extra in place of extra_s
            self._serving = (stepped[0], stepped[1], None) if self._serving[2] is None else \
                (stepped[0], stepped[1], np.interp(stepped[0], self._serving[0], self._serving[2]))
        # what a decode step pays where it was not prepared while the one before it flew (kvsim.overlap): an
        # overlapped calibration's stepped steps' extra beyond its rows' (decode_serving[bs].stepped)
        # (the difference at the stepped rows, interpolated and held outside them: each side held alone would
        # set a 64-row stepped extra against a 128-row serving one)
        own = profile.decode_stepped.get(block_size_tokens)
        self._dhost = None if own is None or stepped_decode or self._serving is None else \
            (own[0], np.maximum(own[1] - np.interp(own[0], self._serving[0], self._serving[1]), 0.0))
        self.prices_decode_host = self._dhost is not None
        # beam search's decode steps measured whole, beyond the stepped step (kvsim.calibrate.beam_fit)
        self._beam = profile.decode_beam.get(block_size_tokens) if stepped_decode and self._serving is not None \
            else None
        self._pserving = profile.prefill_serving.get(block_size_tokens) if self._pstep is not None else None
        # ... and their host work on the critical path, which a prompt step prepared ahead does not pay (kvsim.overlap)
        self._phost = profile.prefill_host.get(block_size_tokens) if self._pserving is not None else None
        self.prices_prompt_host = self._phost is not None
        # step_overhead made non-decreasing in rows, for the steps no serving fit corrects (mixed steps; decode
        # steps at a block size without decode_serving): its points are one lock-step run each (1.15 ms at 64
        # rows, 0.57 at 128 on the H200 Llama-3-8B profile). Prefill-only steps keep the points: prefill_serving
        # is fitted against them, and a fit without it prices its lone prefills the same way.
        xs, ys = profile.overhead
        self._over_mono = (xs, isotonic(ys))
        from kvsim.catalogue import get_model
        from kvsim.cost.window import WindowMix
        spec = get_model(model_name)
        self._window = WindowMix.of(spec)     # None without sliding-window layers
        # a mixed step's decode rows walked whole: the most loaded program of unequal contexts (kvsim.cost.mixed_rows)
        # (or cut into partitions only below a share of the programs, walked whole from there)
        whole = block_size_tokens in profile.mixed_rows_whole
        cut = profile.mixed_split_cut_below.get(block_size_tokens)
        self._longest = LongestRow(self._mix, programs_per_kv_head(spec.num_kv_heads, profile.meta.get("num_sms")),
                                   0.0 if whole else cut) if self._mix is not None and (whole or cut) else None

    def _prefill_host(self, tokens: int) -> float:
        """The measured extra of a step with ``tokens`` prompt tokens (0 without the table)."""
        if not tokens or self.p.prefill_overhead is None:
            return 0.0
        return max(0.0, float(interp1(float(tokens), *self.p.prefill_overhead)))

    def decode_host_s(self, rows: int) -> float:
        """What a decode step of ``rows`` rows adds where its host work was not hidden behind the step before it
        (:mod:`kvsim.overlap`): the overlapped calibration's stepped steps' extra beyond its rows' (at least 0),
        interpolated in ``rows`` between the stepped rows and held outside them; 0 for other profiles."""
        return 0.0 if self._dhost is None else float(np.interp(float(rows), *self._dhost))

    def wake_time(self, plan: StepPlan) -> float:
        """``wake_overhead`` at the step's prompt tokens (its first point for a step without any): what a
        prompt reaching an idle engine paid beyond one reaching a busy one; 0 without the table."""
        curve = self.p.wake_overhead
        if plan.is_empty or curve is None:
            return 0.0
        return max(0.0, float(interp1(max(float(plan.num_prefill_tokens), float(curve[0][0])), *curve)))

    def step_time(self, plan: StepPlan) -> float:
        if plan.is_empty:
            return 0.0
        if self._window is not None:       # sliding-window layers: the grids were timed with full attention
            from kvsim.cost.window import prefill_window_saving, windowed_decode
            saved = self.L * prefill_window_saving(self._window, plan, self._kernel_attn)
            full = self._step_time(windowed_decode(self._window, plan))
            return max(full - saved, 0.0)      # saved is at most the chunks' attention by the kernel grid
        return self._step_time(plan)

    PREFILL_MEMO = 1 << 16      # prefill-only step prices kept (cleared when full)

    def _step_time(self, plan: StepPlan) -> float:
        ctx = plan.decode_context_tokens
        if ctx and not plan.prefill_new_tokens:
            # decode rows: the decode step (serving terms and unequal contexts included); a step that also copies
            # blocks or swaps is that step with the copies and transfers on top
            t = float(self.decode_step_times(len(ctx), np.array([float(sum(ctx))]), np.array([float(max(ctx))]))[0])
            if self._beam is not None and plan.beam_rows:
                # a beam step measured whole (its sampling, parents and copies' extra), in place of the parts, less
                # what the reads of blocks its beams share save (kvsim.calibrate.beam_fit)
                xs, plain, copying, saving = self._beam
                t += float(interp1(float(plan.beam_rows), xs, copying if plan.copy_pairs else plain))
                if saving and plan.beam_shared_blocks:
                    t -= saving * float(self.shared_attention(len(ctx), np.array([float(sum(ctx))]),
                                                              np.array([float(max(ctx))]),
                                                              np.array([float(plan.beam_shared_blocks * self.bs)]))[0])
                t = max(t, 0.0) + self.copy_time(len(plan.copy_pairs), 0)
                if self.include_swaps_in_step:
                    t += self.swap_time(len(plan.swap_out), 0) + self.swap_time(len(plan.swap_in), 0)
                return t
            if is_decode_only(plan):
                return t + self.sampling_extra(plan)
        elif ctx:
            t = self._grid_step(plan)
        else:
            # a prefill-only step's grid price depends on its prompts' new and cached tokens alone: kept, since
            # the same prompt lengths come back again and again (one entry per distinct step)
            key = (tuple(plan.prefill_new_tokens), tuple(plan.prefill_cached_tokens))
            memo = self._prefill_memo
            t = memo.get(key)
            if t is None:
                if len(memo) >= self.PREFILL_MEMO:
                    memo.clear()
                t = memo[key] = self._grid_step(plan)
        t += self.copy_time(len(plan.copy_pairs), 0) + self.sampling_extra(plan)
        if self.include_swaps_in_step:
            t += self.swap_time(len(plan.swap_out), 0) + self.swap_time(len(plan.swap_in), 0)
        return t

    def swap_time(self, num_blocks: int, block_bytes: int) -> float:
        """Measured one-way swap of ``num_blocks`` blocks (all layers) at the profile's block size."""
        if num_blocks <= 0:
            return 0.0
        curve = self.p.swap.get(self.bs)
        if curve is None:
            raise KvsimError("engine.block_size", f"the profile has no swap timings for block size {self.bs}")
        return float(interp1(float(num_blocks), *curve))

    def copy_time(self, num_blocks: int, block_bytes: int) -> float:
        if num_blocks <= 0:
            return 0.0
        curve = self.p.copy.get(self.bs)
        if curve is None:
            raise KvsimError("engine.block_size", f"the profile has no copy timings for block size {self.bs}")
        return float(interp1(float(num_blocks), *curve))
