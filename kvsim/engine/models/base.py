"""Building blocks shared by the engine's models: the :class:`CausalLM` interface,
weight-holding layers that never initialise themselves, fused projections and
deterministic dummy weights.

Every layer here wraps tensors that the caller has already allocated with
``torch.empty(..., device=device)``: nothing is initialised on the CPU and
copied over, so building a 13B model on a GPU costs one allocation per tensor
plus (for dummy weights) one ``normal_`` per tensor.

Parameter names follow Hugging Face's exactly, so a HF state dict loads by name
(:func:`kvsim.engine.models.loading.load_hf_state_dict`). Projections that the
engine computes with one matmul (q/k/v, LLaMA's gate/up) are stored as row
slices of one fused tensor: each HF-named parameter is a *view* into it, so
loading into the views fills the fused tensor. :class:`Fused` checks that the
views still alias the fused tensor (``.to()`` or ``.half()`` breaks that) and
otherwise falls back to one matmul per projection.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kvsim.catalogue import ModelSpec

DUMMY_STD = 0.02


def _param(t: torch.Tensor) -> nn.Parameter:
    """An inference-only parameter aliasing ``t`` (no copy)."""
    return nn.Parameter(t, requires_grad=False)


class Linear(nn.Module):
    """``y = x @ weight.T + bias`` over pre-allocated tensors (``weight`` is ``[out, in]``)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        self.weight = _param(weight)
        self.bias = _param(bias) if bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class Embedding(nn.Module):
    """A lookup table ``[num_embeddings, dim]`` over a pre-allocated tensor."""

    def __init__(self, num: int, dim: int, *, device, dtype):
        super().__init__()
        self.weight = _param(torch.empty(num, dim, device=device, dtype=dtype))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)


class LayerNorm(nn.Module):
    """LayerNorm with weight and bias (OPT), computed in the input dtype like ``nn.LayerNorm``."""

    def __init__(self, dim: int, *, eps: float = 1e-5, device, dtype):
        super().__init__()
        self.eps = eps
        self.weight = _param(torch.empty(dim, device=device, dtype=dtype))
        self.bias = _param(torch.empty(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)


class RMSNorm(nn.Module):
    """RMSNorm as LLaMA defines it: normalise in float32, cast back, then scale by ``weight``."""

    def __init__(self, dim: int, *, eps: float, device, dtype):
        super().__init__()
        self.eps = eps
        self.weight = _param(torch.empty(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class Fused:
    """Several linears with the same input stored as row slices of one ``[sum(out), in]`` tensor.

    Not a module (so it adds no level to parameter names): the parent registers
    :attr:`parts` under their HF names. ``fused(x)`` returns one output per part.
    """

    def __init__(self, in_features: int, out_features: list[int], *, bias: bool, device, dtype):
        self.sizes = list(out_features)
        self.weight = torch.empty(sum(self.sizes), in_features, device=device, dtype=dtype)
        self.bias = torch.empty(sum(self.sizes), device=device, dtype=dtype) if bias else None
        starts = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
        self.parts = [Linear(self.weight[a:a + n], None if self.bias is None else self.bias[a:a + n])
                      for a, n in zip(starts, self.sizes)]
        self._starts = starts

    def intact(self) -> bool:
        """True while every part's parameters still alias the fused tensors."""
        row = self.weight.stride(0) * self.weight.element_size()
        for part, a in zip(self.parts, self._starts):
            if part.weight.data_ptr() != self.weight.data_ptr() + a * row:
                return False
            if self.bias is not None and part.bias.data_ptr() != self.bias.data_ptr() + a * self.bias.element_size():
                return False
        return True

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.intact():
            return list(F.linear(x, self.weight, self.bias).split(self.sizes, dim=-1))
        return [part(x) for part in self.parts]

    def whole(self, x: torch.Tensor) -> torch.Tensor:
        """The parts' outputs side by side, ``[T, sum(out)]`` (one matmul while intact)."""
        if self.intact():
            return F.linear(x, self.weight, self.bias)
        return torch.cat([part(x) for part in self.parts], dim=-1)


def attention_heads(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int,
                    num_kv_heads: int, head_dim: int):
    """Reshape flat projections ``[T, H*D]`` into the ``[T, H, D]`` layout paged attention takes."""
    t = q.shape[0]
    return (q.reshape(t, num_heads, head_dim), k.reshape(t, num_kv_heads, head_dim),
            v.reshape(t, num_kv_heads, head_dim))


class CausalLM(nn.Module):
    """A decoder-only LM running one engine step over a paged KV cache.

    Subclasses build HF-named submodules and implement :meth:`forward`; they
    must set ``self.lm_head`` (a :class:`Linear`, possibly sharing the
    embedding's parameter when tied).

    Attributes: ``spec`` (:class:`ModelSpec`), ``num_layers``, ``num_heads``,
    ``num_kv_heads``, ``head_dim``, ``dtype``, ``device``, ``tp``. Under tensor
    parallelism (``tp``, a :class:`kvsim.engine.tp.TPGroup`) ``num_heads`` and
    ``num_kv_heads`` are this rank's (its KV cache holds only those heads).
    """

    lm_head: Linear

    def __init__(self, spec: ModelSpec, *, dtype: torch.dtype, device, tp=None):
        super().__init__()
        from kvsim.engine.tp import head_shard
        self.spec = spec
        self.tp = tp
        shard = head_shard(spec.num_heads, spec.num_kv_heads, tp)
        self.num_layers = spec.num_layers
        self.num_heads = shard.heads
        self.num_kv_heads = shard.kv_heads
        self.head_dim = spec.head_dim
        self.dtype = dtype
        self.device = torch.device(device)
        self.scale = spec.head_dim ** -0.5

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                kv_caches: list[tuple[torch.Tensor, torch.Tensor]], meta) -> torch.Tensor:
        """Run one step: ``input_ids``/``positions`` ``[T]`` -> final hidden states ``[T, hidden]``.

        ``kv_caches[layer] = (k_cache, v_cache)``, each ``[num_blocks, block_size,
        num_kv_heads, head_dim]``; the step's K/V are written into them at
        ``meta.slot_mapping``. Tokens are ordered prefill first, then decode.
        """
        raise NotImplementedError

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[N, hidden]`` -> float32 logits ``[N, vocab]``."""
        return self.lm_head(hidden).float()

    def check_step(self, input_ids: torch.Tensor, positions: torch.Tensor, kv_caches, meta) -> None:
        """One-line errors for inputs that do not fit this model (cheap: shapes only)."""
        from kvsim.errors import KvsimError
        if input_ids.dim() != 1 or positions.shape != input_ids.shape:
            raise KvsimError("input_ids", f"shape {tuple(input_ids.shape)} and positions "
                             f"{tuple(positions.shape)} must both be [T]")
        if input_ids.shape[0] != meta.num_tokens:
            raise KvsimError("meta", f"{meta.num_tokens} tokens but input_ids has {input_ids.shape[0]}")
        if len(kv_caches) != self.num_layers:
            raise KvsimError("kv_caches", f"{len(kv_caches)} layers given, the model has {self.num_layers}")

    def init_dummy(self, seed: int = 0) -> None:
        """Deterministic random weights: N(0, 0.02) for matrices and biases, norms weight 1 / bias 0.

        One ``torch.Generator`` on the model's device seeded with ``seed``;
        parameters are filled in ``named_parameters()`` order, so the result is
        a function of (spec, dtype, device type, seed).
        """
        gen = torch.Generator(device=self.device)
        gen.manual_seed(int(seed))
        norm_params = {id(p) for m in self.modules() if isinstance(m, (LayerNorm, RMSNorm))
                       for p in m.parameters(recurse=False)}
        with torch.no_grad():
            for name, p in self.named_parameters():
                if id(p) in norm_params:
                    p.fill_(1.0 if name.endswith("weight") else 0.0)
                else:
                    p.normal_(0.0, DUMMY_STD, generator=gen)
