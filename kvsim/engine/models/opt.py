"""OPT (Zhang et al. 2022) in plain torch over the paged KV cache.

Architecture, as Hugging Face's ``OPTForCausalLM`` with ``do_layer_norm_before``:
token embedding + learned positions (looked up at ``position + 2``: OPT's
offset), then per layer ``h += out_proj(attn(self_attn_layer_norm(h)))`` and
``h += fc2(relu(fc1(final_layer_norm(h))))``, a final LayerNorm and an LM head
tied to ``embed_tokens``. Every linear has a bias; q/k/v run as one fused matmul.

Not supported: OPT-350M's real checkpoint (``word_embed_proj_dim`` 512 with
project_in/out and post-LayerNorm). The catalogue models OPT-350M as a plain
1024-wide pre-LN OPT, which is what dummy weights build; loading its HF
checkpoint is refused with a one-line error.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kvsim.catalogue import ModelSpec
from kvsim.engine.attention import paged_attention, with_step_tiles
from kvsim.engine.models.base import CausalLM, Embedding, Fused, LayerNorm, Linear, attention_heads
from kvsim.engine.tp import even_share, head_shard, row_parallel
from kvsim.errors import KvsimError

POSITION_OFFSET = 2


class OPTAttention(nn.Module):
    """Multi-head self-attention with biases; HF names ``q_proj``/``k_proj``/``v_proj``/``out_proj``."""

    def __init__(self, spec: ModelSpec, *, device, dtype, tp=None):
        super().__init__()
        h = spec.hidden_size
        self.num_heads, self.head_dim = head_shard(spec.num_heads, spec.num_kv_heads, tp).heads, spec.head_dim
        self.scale = spec.head_dim ** -0.5
        q = self.num_heads * spec.head_dim          # this rank's heads (all of them without TP)
        self.qkv = Fused(h, [q, q, q], bias=True, device=device, dtype=dtype)
        self.q_proj, self.k_proj, self.v_proj = self.qkv.parts
        self.out_proj = row_parallel(torch.empty(h, q, device=device, dtype=dtype),
                                     torch.empty(h, device=device, dtype=dtype), tp)

    def forward(self, x, kv_cache, meta):
        q, k, v = attention_heads(*self.qkv(x), self.num_heads, self.num_heads, self.head_dim)
        out = paged_attention(q, k, v, kv_cache[0], kv_cache[1], meta, self.scale)
        return self.out_proj(out.reshape(x.shape[0], -1))


class OPTDecoderLayer(nn.Module):
    """Pre-LN block: attention then a ReLU MLP (``fc1``/``fc2``), each with a residual."""

    def __init__(self, spec: ModelSpec, *, device, dtype, tp=None):
        super().__init__()
        h, f = spec.hidden_size, even_share(spec.ffn_hidden_size, tp, "ffn_hidden_size")[1]
        self.self_attn = OPTAttention(spec, device=device, dtype=dtype, tp=tp)
        self.self_attn_layer_norm = LayerNorm(h, device=device, dtype=dtype)
        self.fc1 = Linear(torch.empty(f, h, device=device, dtype=dtype), torch.empty(f, device=device, dtype=dtype))
        self.fc2 = row_parallel(torch.empty(h, f, device=device, dtype=dtype),
                                torch.empty(h, device=device, dtype=dtype), tp)
        self.final_layer_norm = LayerNorm(h, device=device, dtype=dtype)

    def forward(self, h, kv_cache, meta):
        h = h + self.self_attn(self.self_attn_layer_norm(h), kv_cache, meta)
        return h + self.fc2(F.relu(self.fc1(self.final_layer_norm(h))))


class OPTDecoder(nn.Module):
    """HF's ``model.decoder``: embeddings, layers and the final LayerNorm."""

    def __init__(self, spec: ModelSpec, *, device, dtype, tp=None):
        super().__init__()
        h = spec.hidden_size
        self.embed_tokens = Embedding(spec.vocab_size, h, device=device, dtype=dtype)
        self.embed_positions = Embedding(spec.max_seq_len + POSITION_OFFSET, h, device=device, dtype=dtype)
        self.layers = nn.ModuleList(OPTDecoderLayer(spec, device=device, dtype=dtype, tp=tp)
                                    for _ in range(spec.num_layers))
        self.final_layer_norm = LayerNorm(h, device=device, dtype=dtype)


class _OPTModel(nn.Module):
    """HF's ``model`` level (holds only ``decoder``), kept for the parameter names."""

    def __init__(self, spec: ModelSpec, *, device, dtype, tp=None):
        super().__init__()
        self.decoder = OPTDecoder(spec, device=device, dtype=dtype, tp=tp)


class OPTForCausalLM(CausalLM):
    """OPT on the paged cache; parameter names match HF's ``OPTForCausalLM``. ``tp``: this rank's
    shard under tensor parallelism (:mod:`kvsim.engine.tp`; embeddings and LM head replicated)."""

    def __init__(self, spec: ModelSpec, *, dtype: torch.dtype, device, tp=None):
        if spec.arch != "opt":
            raise KvsimError("arch", f"OPTForCausalLM needs arch 'opt', got {spec.arch!r}")
        if spec.num_kv_heads != spec.num_heads:
            raise KvsimError("num_kv_heads", f"OPT has no GQA: {spec.num_kv_heads} != num_heads {spec.num_heads}")
        if spec.num_heads * spec.head_dim != spec.hidden_size:
            raise KvsimError("head_dim", f"num_heads x head_dim = {spec.num_heads * spec.head_dim} "
                             f"must equal hidden_size {spec.hidden_size} for OPT")
        if spec.tie_word_embeddings is False:
            raise KvsimError("tie_word_embeddings", "OPT's LM head is always tied to embed_tokens")
        super().__init__(spec, dtype=dtype, device=device, tp=tp)
        self.model = _OPTModel(spec, device=device, dtype=dtype, tp=tp)
        self.lm_head = Linear(torch.empty(0, device=device, dtype=dtype))
        self.lm_head.weight = self.model.decoder.embed_tokens.weight  # tied: the same Parameter

    def forward(self, input_ids, positions, kv_caches, meta):
        self.check_step(input_ids, positions, kv_caches, meta)
        dec = self.model.decoder
        meta = with_step_tiles(meta, self.num_heads, self.num_kv_heads)
        h = dec.embed_tokens(input_ids) + dec.embed_positions(positions + POSITION_OFFSET)
        for layer, kv in zip(dec.layers, kv_caches):
            h = layer(h, kv, meta)
        return dec.final_layer_norm(h)


# -- Hugging Face config.json ---------------------------------------------------
def check_hf_config(spec: ModelSpec, cfg: dict) -> dict:
    """Check an OPT ``config.json`` against ``spec``; one-line error naming the field. Returns {} (no options)."""
    from kvsim.engine.models.loading import expect_fields
    if cfg.get("model_type", "opt") != "opt":
        raise KvsimError("config.json", f"model_type {cfg.get('model_type')!r} is not 'opt'")
    if cfg.get("word_embed_proj_dim", spec.hidden_size) != spec.hidden_size:
        raise KvsimError("config.json", f"word_embed_proj_dim={cfg['word_embed_proj_dim']} != hidden_size "
                         f"{spec.hidden_size}: OPT's project_in/out (OPT-350M) is not supported")
    if not cfg.get("do_layer_norm_before", True) or cfg.get("_remove_final_layer_norm", False):
        raise KvsimError("config.json", "only pre-LayerNorm OPT (do_layer_norm_before=true) is supported")
    if cfg.get("activation_function", "relu") != "relu":
        raise KvsimError("config.json", f"activation_function={cfg['activation_function']!r}: only 'relu'")
    if not cfg.get("enable_bias", True) or not cfg.get("layer_norm_elementwise_affine", True):
        raise KvsimError("config.json", "enable_bias and layer_norm_elementwise_affine must be true")
    expect_fields(spec, cfg, {"hidden_size": "hidden_size", "num_hidden_layers": "num_layers",
                              "num_attention_heads": "num_heads", "ffn_dim": "ffn_hidden_size",
                              "vocab_size": "vocab_size", "max_position_embeddings": "max_seq_len"})
    return {}
