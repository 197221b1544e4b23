"""Analytical roofline cost model: any catalogue model on any catalogue GPU, no GPU needed.

Every kernel takes ``max(FLOPs / (peak x eff), bytes / (bandwidth x eff))``.
One iteration (all per GPU under ``tensor_parallel``-way TP) costs::

    step_overhead_s + per_seq_overhead_s x (prefill groups + decode seqs)
    + num_layers x [ max(linear + decode attention + prefill attention, layer_launch_floor_s)
                     + TP all-reduce ]
    + LM head + copy-on-write copies + swaps (when include_swaps_in_step)

* linear: T = prefill tokens + decode sequences tokens through q/k/v/o + MLP:
  ``max(2 x params x T / flop_rate, params x dtype / bw)``;
* decode attention: reads ``sum(ctx) x kv_bytes_per_token(tp)`` (memory bound,
  ``max``'d with its 4 x heads x head_dim FLOPs per context token);
* prefill attention (causal, per group): ``new x (cached + (new+1)/2) x 4 x
  heads/tp x head_dim`` FLOPs vs the KV it reads and writes;
* LM head: one row per decode sequence and per prefill group (vLLM projects only
  the last position), vocab split ``tp`` ways;
* all-reduce (tp > 1): 2 per layer of ``T x hidden x dtype`` bytes, ring cost
  ``2 (tp-1)/tp`` over the interconnect, plus a latency each.

Sliding-window layers (``model.layer_windows()``) read at most ``window`` keys:
for such a model, ``step_time`` replaces ``sum(ctx)`` by the per-layer mean of
``sum(min(ctx, window_l))`` and each prefill query at position ``q`` attends to
``min(q + 1, window_l)`` keys (see :mod:`kvsim.cost.window`); the aggregate
``decode_step_time(s)`` methods take that windowed sum. Models without a window
take the plain path, unchanged.

A decode-only step depends on the plan only through ``(num_seqs, sum(ctx))``.
:meth:`RooflineCostModel.step_time` prices a plan with ``_forward_time_f``, a
float twin of the vectorised ``_forward_time`` behind
:meth:`RooflineCostModel.decode_step_times` (same operations, same order), so
stepping and fast-forwarding agree bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvsim.catalogue import GPUSpec, ModelSpec
from kvsim.configtools import cfg_field
from kvsim.core.plan import StepPlan
from kvsim.cost.base import CostModel, is_decode_only
from kvsim.cost.roofline_decode import RooflineDecodeMixin
from kvsim.cost.window import WindowMix
from kvsim.errors import KvsimError
from kvsim.limits import MAX_SECONDS, MIN_EFFICIENCY

_EFFICIENCIES = ("matmul_efficiency", "hbm_efficiency", "attention_efficiency",
                 "host_link_efficiency", "interconnect_efficiency")
_DURATIONS = ("step_overhead_s", "per_seq_overhead_s", "layer_launch_floor_s",
              "swap_transfer_latency_s", "copy_launch_s", "allreduce_latency_s")


@dataclass
class RooflineParams:
    """Efficiency factors and fixed overheads of the roofline model (defaults: vLLM v0.1-0.2 in eager mode)."""

    matmul_efficiency: float = cfg_field(
        0.6, "fraction of the dense fp16 tensor-core peak that GEMMs reach (cuBLAS on LLM shapes: "
             "60-75% for large GEMMs, less for skinny ones; 0.6 is a middle value)")
    hbm_efficiency: float = cfg_field(
        0.8, "fraction of datasheet HBM bandwidth reached by weight/KV streaming (STREAM-like "
             "kernels reach 80-90% on A100/H100)")
    attention_efficiency: float = cfg_field(
        0.4, "fraction of the fp16 peak that attention kernels reach when FLOP-bound (xformers / "
             "FlashAttention forward: 35-70%; prefill in vLLM v0.1 used xformers)")
    host_link_efficiency: float = cfg_field(
        0.8, "fraction of the theoretical PCIe bandwidth pinned cudaMemcpyAsync reaches "
             "(~25 of 32 GB/s on gen4, ~50 of 64 GB/s on gen5)")
    interconnect_efficiency: float = cfg_field(
        0.7, "fraction of the NVLink/PCIe per-direction bandwidth NCCL ring all-reduce reaches "
             "(nccl-tests bus bandwidth ~210-230 of 300 GB/s on A100 NVLink3)")
    step_overhead_s: float = cfg_field(
        0.003, "fixed CPU time per iteration: scheduling, input preparation, sampler launch; "
               "vLLM v0.1-0.2 spends ~2-5 ms per step in Python")
    per_seq_overhead_s: float = cfg_field(
        1e-5, "extra CPU time per scheduled sequence (block tables, sampling metadata, "
              "output processing); ~10 us per sequence in vLLM's Python path")
    layer_launch_floor_s: float = cfg_field(
        4e-5, "minimum time of one transformer layer: ~8-10 kernel launches x ~4-5 us in eager "
              "PyTorch; only matters for small models or tiny batches")
    swap_transfer_latency_s: float = cfg_field(
        1e-5, "fixed cost of one host<->device cudaMemcpyAsync (launch + DMA setup), ~10 us")
    swap_per_layer_kv: bool = cfg_field(
        True, "swap each block as 2 x num_layers separate copies of block_bytes/(2 x layers), as "
              "vLLM's swap_blocks does; makes small blocks swap slowly (PagedAttention Fig. 19)")
    copy_launch_s: float = cfg_field(
        1e-5, "fixed cost of the copy-on-write copy_blocks kernel launch in a step that copies")
    allreduce_latency_s: float = cfg_field(
        1e-5, "fixed latency of one NCCL all-reduce (small-message ring latency on NVLink ~10 us)")
    include_swaps_in_step: bool = cfg_field(
        True, "add the plan's swap-out and swap-in transfer times to step_time (vLLM waits for "
              "the swaps before the layers that need them; transfers are not overlapped)")

    def validate(self, path: str = "") -> None:
        """Raise KvsimError naming the field if an efficiency is outside [MIN_EFFICIENCY, 1] or a duration outside [0, MAX_SECONDS]."""
        pre = f"{path}." if path else ""
        for name in _EFFICIENCIES:
            v = getattr(self, name)
            if not MIN_EFFICIENCY <= v <= 1:
                raise KvsimError(pre + name, f"got {v!r}, expected a fraction in [{MIN_EFFICIENCY:g}, 1]")
        for name in _DURATIONS:
            v = getattr(self, name)
            if not 0 <= v <= MAX_SECONDS:
                raise KvsimError(pre + name, f"got {v!r}, expected seconds in [0, {MAX_SECONDS:g}]")


class RooflineCostModel(RooflineDecodeMixin, CostModel):
    """Roofline step-time model of ``model`` on ``gpu`` with ``tensor_parallel`` GPUs (see module doc).

    ``block_size_tokens`` sizes the KV blocks that ``plan.copy_pairs`` and the
    plan's swaps move (``block_bytes = kv_bytes_per_token(tp) x block_size_tokens``).
    """

    def __init__(self, model: ModelSpec, gpu: GPUSpec, tensor_parallel: int = 1, dtype_bytes: int = 2,
                 params: RooflineParams | None = None, *, block_size_tokens: int = 16):
        self.model, self.gpu = model, gpu
        self.tp, self.dtype_bytes = tensor_parallel, dtype_bytes
        self.params = p = params if params is not None else RooflineParams()
        p.validate("cost")
        if tensor_parallel < 1:
            raise KvsimError("tensor_parallel", f"got {tensor_parallel!r}, expected an integer >= 1")
        if block_size_tokens < 1:
            raise KvsimError("block_size", f"got {block_size_tokens!r}, expected an integer >= 1")
        tp, L = tensor_parallel, model.num_layers
        self.block_size_tokens = block_size_tokens
        self.block_bytes = model.kv_bytes_per_token(dtype_bytes, tp) * block_size_tokens
        # rates
        self._flop_rate = gpu.peak_fp16_flops * p.matmul_efficiency
        self._attn_rate = gpu.peak_fp16_flops * p.attention_efficiency
        self._bw = gpu.hbm_bandwidth_Bps * p.hbm_efficiency
        self._host_bw = gpu.host_link_Bps * p.host_link_efficiency
        # per-layer, per-GPU constants
        lin = model.linear_params_per_layer(tp)
        self._lin_flops_per_token = 2.0 * lin
        self._lin_weight_time = lin * dtype_bytes / self._bw
        heads = -(-model.num_heads // tp)
        self._attn_flops_per_pair = 4.0 * heads * model.head_dim        # one query x one key, per layer
        self._kv_bytes_per_token_layer = model.kv_bytes_per_token(dtype_bytes, tp) / L
        self._q_bytes_per_token_layer = 2.0 * heads * model.head_dim * dtype_bytes  # read Q, write O
        vocab = -(-model.vocab_size // tp)
        self._lm_flops_per_row = 2.0 * vocab * model.hidden_size
        self._lm_weight_time = vocab * model.hidden_size * dtype_bytes / self._bw
        if tp > 1:
            ring = 2.0 * (tp - 1) / tp
            ic = gpu.interconnect_Bps * p.interconnect_efficiency
            self._ar_per_token = 2.0 * model.hidden_size * dtype_bytes * ring / ic
            self._ar_fixed = 2.0 * p.allreduce_latency_s
        else:
            self._ar_per_token = self._ar_fixed = 0.0
        self._window = WindowMix.of(model)       # None without sliding-window layers
        self._attn_side = self._decode_attention_side()
        self._terms: dict[int, tuple | None] = {}    # _run_terms per batch size (the model's constants never change)

    # -- the shared vectorised core -------------------------------------------
    def _forward_time(self, tokens, logit_rows, num_seqs, decode_ctx_sum, prefill_attn_s):
        """Forward-pass time; every argument may be a float64 array (broadcast)."""
        p = self.params
        linear = np.maximum(tokens * self._lin_flops_per_token / self._flop_rate, self._lin_weight_time)
        dec_attn = np.maximum(decode_ctx_sum * self._attn_flops_per_pair / self._attn_rate,
                              decode_ctx_sum * self._kv_bytes_per_token_layer / self._bw)
        layer = np.maximum(linear + dec_attn + prefill_attn_s, p.layer_launch_floor_s)
        layer = layer + (tokens * self._ar_per_token + self._ar_fixed)
        lm_head = np.maximum(logit_rows * self._lm_flops_per_row / self._flop_rate, self._lm_weight_time)
        overhead = p.step_overhead_s + num_seqs * p.per_seq_overhead_s
        return overhead + self.model.num_layers * layer + lm_head

    def _forward_time_f(self, tokens: float, logit_rows: float, num_seqs: float, decode_ctx_sum: float,
                        prefill_attn_s: float) -> float:
        """:meth:`_forward_time` on Python floats: the same IEEE operations in the same order, so the same
        float (tested bit for bit), without numpy's per-call cost on the stepped path."""
        p = self.params
        linear = tokens * self._lin_flops_per_token / self._flop_rate
        if not linear >= self._lin_weight_time:
            linear = self._lin_weight_time
        a = decode_ctx_sum * self._attn_flops_per_pair / self._attn_rate
        b = decode_ctx_sum * self._kv_bytes_per_token_layer / self._bw
        dec_attn = a if a >= b else b
        layer = linear + dec_attn + prefill_attn_s
        if not layer >= p.layer_launch_floor_s:
            layer = p.layer_launch_floor_s
        layer = layer + (tokens * self._ar_per_token + self._ar_fixed)
        lm_head = logit_rows * self._lm_flops_per_row / self._flop_rate
        if not lm_head >= self._lm_weight_time:
            lm_head = self._lm_weight_time
        overhead = p.step_overhead_s + num_seqs * p.per_seq_overhead_s
        return overhead + self.model.num_layers * layer + lm_head

    def _prefill_attention_s(self, plan: StepPlan) -> float:
        """Per-layer time of the step's prefill attention (one kernel over all groups)."""
        pairs = 0.0
        kv_tokens = 0.0
        cached_all = plan.prefill_cached_tokens or [0] * len(plan.prefill_new_tokens)
        if self._window is not None:
            pairs, kv_tokens = self._window.prefill(plan.prefill_new_tokens, cached_all)
        else:
            for new, cached in zip(plan.prefill_new_tokens, cached_all):
                pairs += new * (cached + (new + 1) / 2.0)
                kv_tokens += cached + 2 * new      # read cached + new K/V, write new K/V
        flops = pairs * self._attn_flops_per_pair
        nbytes = kv_tokens * self._kv_bytes_per_token_layer + plan.num_prefill_tokens * self._q_bytes_per_token_layer
        return max(flops / self._attn_rate, nbytes / self._bw)

    def step_time(self, plan: StepPlan) -> float:
        """Seconds for ``plan`` (module doc); decode-only plans go through :meth:`decode_step_times`."""
        if plan.is_empty:
            return 0.0
        ctx = plan.decode_context_tokens
        ctx_sum = sum(ctx) if self._window is None else self._window.decode_sum(ctx)
        if is_decode_only(plan):
            return self.decode_step_time(len(ctx), ctx_sum)
        return self.mixed_plan_time(plan, len(ctx), ctx_sum)

    def mixed_plan_time(self, plan: StepPlan, num_seqs: int, ctx_sum: int) -> float:
        """``step_time`` of a plan that does more than decode (prefills, copies or swaps), its decode rows given
        as ``num_seqs`` sequences attending to ``ctx_sum`` context tokens in all (``plan``'s own decode lists are
        not read): the chunked step taken from a kept run (:mod:`kvsim.core.decode_mixed`) lists none."""
        t = 0.0
        groups = len(plan.prefill_new_tokens)
        if groups or num_seqs:
            tokens = float(plan.num_prefill_tokens + num_seqs)
            rows = float(groups + num_seqs)
            t = self._forward_time_f(tokens, rows, rows, float(ctx_sum), float(self._prefill_attention_s(plan)))
        else:
            t = self.params.step_overhead_s
        return self._with_transfers(t, len(plan.copy_pairs), len(plan.swap_out), len(plan.swap_in))

    def _with_transfers(self, t: float, copies: int, swap_out: int, swap_in: int) -> float:
        """``t`` plus the step's block copies and, where they are in the step, its swaps, in ``step_time``'s order
        (each term only where there is some: an absent one is 0.0, and t + 0.0 is t for the t >= 0 here)."""
        if copies:
            t += self.copy_time(copies, self.block_bytes)
        if (swap_out or swap_in) and self.params.include_swaps_in_step:
            t += self.swap_time(swap_out, self.block_bytes)
            t += self.swap_time(swap_in, self.block_bytes)
        return t

    def decode_plan_time(self, num_seqs: int, ctx_sum: int, copies: int = 0, swap_out: int = 0,
                         swap_in: int = 0) -> float | None:
        """``step_time`` of a plan without prefill that decodes ``num_seqs`` sequences attending to ``ctx_sum``
        context tokens in all, with ``copies`` block copies and ``swap_out`` / ``swap_in`` blocks swapped (a decode
        step taken from a run: :mod:`kvsim.run_step`), bit for bit: the same calls on the same floats in the same
        order (no prefill: its attention term is 0.0). None with sliding windows (the step's context sum is not
        the plain sum)."""
        if self._window is not None:
            return None
        if not (copies or swap_out or swap_in):
            return self.decode_step_time(num_seqs, ctx_sum)         # a decode-only plan (0.0 when empty)
        if num_seqs:
            n = float(num_seqs)
            t = self._forward_time_f(n, n, n, float(ctx_sum), 0.0)
        else:
            t = self.params.step_overhead_s
        return self._with_transfers(t, copies, swap_out, swap_in)

    def swap_time(self, num_blocks: int, block_bytes: int) -> float:
        """One-way host-link time; per-(layer, K/V) transfers when ``swap_per_layer_kv``."""
        if num_blocks <= 0:
            return 0.0
        p = self.params
        transfers = num_blocks * (2 * self.model.num_layers if p.swap_per_layer_kv else 1)
        return transfers * p.swap_transfer_latency_s + num_blocks * block_bytes / self._host_bw

    def copy_time(self, num_blocks: int, block_bytes: int) -> float:
        """On-GPU block copies: read + write ``block_bytes`` each over HBM, plus one kernel launch."""
        if num_blocks <= 0:
            return 0.0
        return self.params.copy_launch_s + 2.0 * num_blocks * block_bytes / self._bw
