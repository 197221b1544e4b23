"""LLaMA / Llama-2 / Llama-3 / Mistral in plain torch over the paged KV cache.

Architecture, as Hugging Face's ``LlamaForCausalLM``: token embedding, then per
layer ``h += o_proj(attn(rope(q), rope(k), v))`` on ``input_layernorm(h)`` and
``h += down_proj(silu(gate_proj(x)) * up_proj(x))`` on
``post_attention_layernorm(h)``, a final RMSNorm (``model.norm``) and an LM
head, untied unless ``spec.tie_word_embeddings``. No biases; grouped-query
attention with ``num_kv_heads``; q/k/v and gate/up run as fused matmuls.

RoPE is HF's "rotate half" form (the layout HF checkpoints are permuted into)
with ``inv_freq = theta ** (-2i / head_dim)`` computed in float32. The base
``theta`` and the RMSNorm epsilon come, in this order, from the constructor,
the checkpoint's ``config.json`` when loading one, or the family defaults
chosen from the ModelSpec name (:func:`family_defaults`):

=================  ==========  =======  =========================================
family             theta       eps      source config.json
=================  ==========  =======  =========================================
LLaMA (1)          10 000      1e-6     huggyllama/llama-*
Llama-2            10 000      1e-5     meta-llama/Llama-2-*-hf
Llama-3 / 3.x      500 000     1e-5     meta-llama/Meta-Llama-3-*
Mistral            1 000 000   1e-5     mistralai/Mistral-7B-Instruct-v0.2
=================  ==========  =======  =========================================

Mistral-7B-v0.1 itself used theta 10 000 and a 4096-token sliding window; the
catalogue's Mistral-7B follows v0.2 (32k context, no window), hence 1e6. The
theta only changes numbers, never cost, so dummy-weight timing is unaffected.

Sliding-window layers (``spec.layer_windows()``, e.g. Mistral-7B-SWA) attend
through their KV group's metadata (:func:`kvsim.engine.attention.layer_meta`),
whose ``window`` the kernels apply. Gemma-2's own pieces (GeGLU, logit
soft-capping, extra norms) are not built: its catalogue entry runs as a LLaMA
of the same shapes, which is right for timing with dummy weights only.

Not supported: RoPE scaling (Llama-3.1's ``rope_scaling``; refused when a
config asks for it), attention/MLP biases.
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from kvsim.catalogue import ModelSpec
from kvsim.engine.attention import layer_meta, paged_attention, with_step_tiles
from kvsim.engine.models.base import CausalLM, Embedding, Fused, Linear, RMSNorm, attention_heads
from kvsim.engine.tp import even_share, head_shard, row_parallel
from kvsim.errors import KvsimError


def family_defaults(name: str) -> tuple[float, float]:
    """``(rope_theta, rms_norm_eps)`` for a model family, from a ModelSpec name (see module doc)."""
    n = name.strip().lower().rsplit("/", 1)[-1]
    if re.search(r"llama[-_ ]?3(?![0-9])", n):   # Llama-3, llama3.1 (not LLaMA-33B)
        return 500000.0, 1e-5
    if "mistral" in n or "mixtral" in n:
        return 1000000.0, 1e-5
    if re.search(r"llama[-_ ]?2(?![0-9])", n):
        return 10000.0, 1e-5
    return 10000.0, 1e-6


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 ``cos``/``sin`` ``[T, head_dim/2]`` of positions ``[T]`` (angles ``pos * theta^(-2i/D)``)."""
    idx = torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.int64).float()
    inv_freq = 1.0 / (theta ** (idx / head_dim))
    ang = positions.float()[:, None] * inv_freq[None, :]
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE on ``x`` ``[T, H, D]``: pairs are (i, i + D/2). Result in ``x``'s dtype."""
    half = x.shape[-1] // 2
    c = cos[:, None, :].to(x.dtype)
    s = sin[:, None, :].to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)


class LlamaAttention(nn.Module):
    """GQA self-attention with RoPE; HF names ``q_proj``/``k_proj``/``v_proj``/``o_proj``."""

    def __init__(self, spec: ModelSpec, *, device, dtype, tp=None):
        super().__init__()
        h, d = spec.hidden_size, spec.head_dim
        shard = head_shard(spec.num_heads, spec.num_kv_heads, tp)    # this rank's heads (all without TP)
        self.num_heads, self.num_kv_heads, self.head_dim = shard.heads, shard.kv_heads, d
        self.scale = d ** -0.5
        q, kv = shard.heads * d, shard.kv_heads * d
        self.qkv = Fused(h, [q, kv, kv], bias=False, device=device, dtype=dtype)
        self.q_proj, self.k_proj, self.v_proj = self.qkv.parts
        self.o_proj = row_parallel(torch.empty(h, q, device=device, dtype=dtype), None, tp)

    def forward(self, x, cos, sin, kv_cache, meta):
        q, k, v = attention_heads(*self.qkv(x), self.num_heads, self.num_kv_heads, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = paged_attention(q, k, v, kv_cache[0], kv_cache[1], meta, self.scale)
        return self.o_proj(out.reshape(x.shape[0], -1))


class LlamaMLP(nn.Module):
    """SwiGLU: ``down_proj(silu(gate_proj(x)) * up_proj(x))``, gate and up fused."""

    def __init__(self, spec: ModelSpec, *, device, dtype, tp=None):
        super().__init__()
        h, f = spec.hidden_size, even_share(spec.ffn_hidden_size, tp, "ffn_hidden_size")[1]
        self.gate_up = Fused(h, [f, f], bias=False, device=device, dtype=dtype)
        self.gate_proj, self.up_proj = self.gate_up.parts
        self.down_proj = row_parallel(torch.empty(h, f, device=device, dtype=dtype), None, tp)

    def forward(self, x):
        gate, up = self.gate_up(x)
        return self.down_proj(F.silu(gate) * up)


class LlamaDecoderLayer(nn.Module):
    """Pre-RMSNorm block: attention then SwiGLU MLP, each with a residual."""

    def __init__(self, spec: ModelSpec, *, eps: float, device, dtype, tp=None):
        super().__init__()
        self.self_attn = LlamaAttention(spec, device=device, dtype=dtype, tp=tp)
        self.mlp = LlamaMLP(spec, device=device, dtype=dtype, tp=tp)
        self.input_layernorm = RMSNorm(spec.hidden_size, eps=eps, device=device, dtype=dtype)
        self.post_attention_layernorm = RMSNorm(spec.hidden_size, eps=eps, device=device, dtype=dtype)

    def forward(self, h, cos, sin, kv_cache, meta):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, kv_cache, meta)
        return h + self.mlp(self.post_attention_layernorm(h))


class LlamaModel(nn.Module):
    """HF's ``model``: ``embed_tokens``, ``layers``, ``norm``."""

    def __init__(self, spec: ModelSpec, *, eps: float, device, dtype, tp=None):
        super().__init__()
        self.embed_tokens = Embedding(spec.vocab_size, spec.hidden_size, device=device, dtype=dtype)
        self.layers = nn.ModuleList(LlamaDecoderLayer(spec, eps=eps, device=device, dtype=dtype, tp=tp)
                                    for _ in range(spec.num_layers))
        self.norm = RMSNorm(spec.hidden_size, eps=eps, device=device, dtype=dtype)


class LlamaForCausalLM(CausalLM):
    """LLaMA-family model on the paged cache; parameter names match HF's ``LlamaForCausalLM``.

    ``rope_theta`` / ``rms_norm_eps`` override the family defaults (module doc). ``tp``: this
    rank's shard under tensor parallelism (:mod:`kvsim.engine.tp`; embeddings and LM head replicated).
    """

    def __init__(self, spec: ModelSpec, *, dtype: torch.dtype, device, rope_theta: float | None = None,
                 rms_norm_eps: float | None = None, tp=None):
        if spec.arch != "llama":
            raise KvsimError("arch", f"LlamaForCausalLM needs arch 'llama', got {spec.arch!r}")
        if spec.num_heads % spec.num_kv_heads:
            raise KvsimError("num_kv_heads", f"{spec.num_kv_heads} must divide num_heads {spec.num_heads}")
        if spec.head_dim % 2:
            raise KvsimError("head_dim", f"{spec.head_dim} must be even for RoPE")
        super().__init__(spec, dtype=dtype, device=device, tp=tp)
        theta, eps = family_defaults(spec.name)
        self.rope_theta = float(rope_theta if rope_theta is not None else theta)
        self.rms_norm_eps = float(rms_norm_eps if rms_norm_eps is not None else eps)
        self.model = LlamaModel(spec, eps=self.rms_norm_eps, device=device, dtype=dtype, tp=tp)
        self._rope_table: tuple[float, torch.Tensor] | None = None    # (theta, table), made on first use
        self.fused_ops = True          # fused element-wise kernels on the triton backend (runtime.fused_layer_ops)
        if spec.tie_word_embeddings:
            self.lm_head = Linear(torch.empty(0, device=device, dtype=dtype))
            self.lm_head.weight = self.model.embed_tokens.weight
        else:
            self.lm_head = Linear(torch.empty(spec.vocab_size, spec.hidden_size, device=device, dtype=dtype))

    def forward(self, input_ids, positions, kv_caches, meta):
        self.check_step(input_ids, positions, kv_caches, meta)
        if self.fused_ops and (meta.backend == "triton" or (meta.backend == "none" and self.device.type == "cuda")):
            return self._fused_forward(input_ids, positions, kv_caches, meta)
        cos, sin = rope_cos_sin(positions, self.head_dim, self.rope_theta)
        h = self.model.embed_tokens(input_ids)
        for i, (layer, kv) in enumerate(zip(self.model.layers, kv_caches)):
            h = layer(h, cos, sin, kv, layer_meta(meta, i))
        return self.model.norm(h)

    def rope_table(self) -> torch.Tensor:
        """float32 ``[max_seq_len, head_dim]``: cos | sin of every position's angles, made once with
        :func:`rope_cos_sin` (so the fused path rotates by the plain path's exact values)."""
        if self._rope_table is None or self._rope_table[0] != self.rope_theta:
            cos, sin = rope_cos_sin(torch.arange(self.spec.max_seq_len, device=self.device), self.head_dim,
                                    self.rope_theta)
            self._rope_table = (self.rope_theta, torch.cat([cos, sin], dim=-1).contiguous())
        return self._rope_table[1]

    def _fused_forward(self, input_ids, positions, kv_caches, meta):
        """The same layer arithmetic in nine launches a layer (the four products, attention and the
        fused kernels of :mod:`kvsim.kernels.layer_ops`): the residual stream is carried beside the
        activations, so each residual add happens inside the next RMSNorm's launch."""
        from kvsim.kernels.layer_ops import add_rmsnorm, rope_write_kv, silu_mul
        eps, table, t = self.rms_norm_eps, self.rope_table(), input_ids.shape[0]
        be, write = "triton", meta.backend != "none"      # "none": calibration times the layer without attention
        meta = with_step_tiles(meta, self.num_heads, self.num_kv_heads)
        h, residual = self.model.embed_tokens(input_ids), None
        step_meta = meta
        for i, (layer, (kc, vc)) in enumerate(zip(self.model.layers, kv_caches)):
            meta = layer_meta(step_meta, i)
            att, mlp = layer.self_attn, layer.mlp
            x, residual = add_rmsnorm(h, residual, layer.input_layernorm.weight, eps, backend=be)
            q, k, v = attention_heads(*att.qkv(x), self.num_heads, self.num_kv_heads, self.head_dim)
            rope_write_kv(q, k, v, positions, table, *((kc, vc, meta.slot_mapping) if write else ()), backend=be)
            h = att.o_proj(paged_attention(q, k, v, kc, vc, meta, att.scale, write=False).reshape(t, -1))
            x, residual = add_rmsnorm(h, residual, layer.post_attention_layernorm.weight, eps, backend=be)
            h = mlp.down_proj(silu_mul(mlp.gate_up.whole(x), backend=be))
        return add_rmsnorm(h, residual, self.model.norm.weight, eps, backend=be)[0]


# -- Hugging Face config.json ---------------------------------------------------
def check_hf_config(spec: ModelSpec, cfg: dict) -> dict:
    """Check a LLaMA/Mistral ``config.json`` against ``spec``; returns ``{rope_theta, rms_norm_eps}`` from it."""
    from kvsim.engine.models.loading import expect_fields
    if cfg.get("model_type", "llama") not in ("llama", "mistral"):
        raise KvsimError("config.json", f"model_type {cfg.get('model_type')!r} is not 'llama' or 'mistral'")
    rope = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or ({} if rope.get("rope_type", "default") == "default" else rope)
    if scaling:
        raise KvsimError("config.json", f"rope_scaling {scaling!r} is not supported (plain RoPE only)")
    for key in ("attention_bias", "mlp_bias"):
        if cfg.get(key, False):
            raise KvsimError("config.json", f"{key}=true is not supported")
    if cfg.get("hidden_act", "silu") != "silu":
        raise KvsimError("config.json", f"hidden_act={cfg['hidden_act']!r}: only 'silu'")
    heads = cfg.get("num_attention_heads")
    full = {**cfg, "num_key_value_heads": cfg.get("num_key_value_heads") or heads,
            "tie_word_embeddings": bool(cfg.get("tie_word_embeddings", False))}
    if cfg.get("head_dim") is None and heads:
        full["head_dim"] = cfg.get("hidden_size", 0) // heads
    expect_fields(spec, full, {"hidden_size": "hidden_size", "num_hidden_layers": "num_layers",
                               "num_attention_heads": "num_heads", "num_key_value_heads": "num_kv_heads",
                               "head_dim": "head_dim", "intermediate_size": "ffn_hidden_size",
                               "vocab_size": "vocab_size", "max_position_embeddings": "max_seq_len",
                               "tie_word_embeddings": "tie_word_embeddings"})
    if spec.sliding_window and int(cfg.get("sliding_window") or 0) != spec.sliding_window:
        raise KvsimError("config.json", f"sliding_window {cfg.get('sliding_window')!r} but {spec.name} has "
                                        f"{spec.sliding_window or None!r} (pick the catalogue entry that matches)")
    out = {}
    theta = cfg.get("rope_theta", rope.get("rope_theta"))
    if theta is not None:
        out["rope_theta"] = float(theta)
    if cfg.get("rms_norm_eps") is not None:
        out["rms_norm_eps"] = float(cfg["rms_norm_eps"])
    return out
