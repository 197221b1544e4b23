"""Tensor parallelism for the engine's models over ``torch.distributed`` (issue #16).

Megatron-style split of every decoder layer over ``N`` ranks:

* **column-parallel** (output features split, no communication): q/k/v, OPT's
  ``fc1``, LLaMA's ``gate_proj``/``up_proj``. They stay plain :class:`Linear`
  layers holding their rank's rows; the fused q/k/v and gate/up tensors of
  :mod:`kvsim.engine.models.base` simply hold the rank's shares side by side.
* **row-parallel** (input features split, output all-reduced):
  ``out_proj``/``o_proj`` and ``fc2``/``down_proj``: :class:`RowParallelLinear`
  multiplies its column shard, sums the partial outputs over the group and only
  then adds the (replicated) bias, so the bias is counted once.
* **heads**: rank ``r`` of ``N`` owns query heads ``[r H/N, (r+1) H/N)``
  (``N`` must divide ``H``). KV heads (GQA rule, :func:`head_shard`): when
  ``N`` divides ``K`` each rank owns ``K/N`` consecutive KV heads (no copy);
  when ``K`` divides ``N`` (``N > K``) each rank holds the single KV head its
  query heads read, ``r K / N``, replicated on ``N/K`` ranks; any other ``N``
  is refused (the same rule as :func:`kvsim.memory.validate_tensor_parallel`).
  The KV cache of a rank therefore has ``max(K/N, 1)`` heads.
* **replicated**: token/position embeddings, LayerNorm/RMSNorm weights, the
  row-parallel biases and the LM head. After each row-parallel all-reduce the
  hidden states are identical on every rank, so every rank could compute the
  logits; only rank 0 samples.

Weights: a TP model is built with empty shards and filled from a *full* HF-named
state dict by :func:`load_full_state_dict`, which narrows each tensor to the
rank's slice (:func:`shard_tensor`). For dummy weights the full model is built
once per rank with the usual seeded :meth:`CausalLM.init_dummy`, so TP=N
reproduces TP=1 up to float summation order.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kvsim.errors import KvsimError


@dataclass(frozen=True)
class TPGroup:
    """This process's place in a tensor-parallel group: ``rank`` of ``world_size`` in ``group``
    (a ``torch.distributed`` process group; ``None`` means the default group)."""

    rank: int
    world_size: int
    group: object = None

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Sum ``x`` over the group in place (returned for chaining)."""
        if self.world_size > 1:
            import torch.distributed as dist
            dist.all_reduce(x, group=self.group)
        return x


@dataclass(frozen=True)
class HeadShard:
    """The attention heads one rank owns: query heads ``[head_start, head_start + heads)`` and
    KV heads ``[kv_start, kv_start + kv_heads)`` of the full model."""

    heads: int
    head_start: int
    kv_heads: int
    kv_start: int
    kv_replicated: bool = False


def head_shard(num_heads: int, num_kv_heads: int, tp: TPGroup | None) -> HeadShard:
    """Rank ``tp.rank``'s heads under the GQA rule of the module doc (the whole model when ``tp`` is None)."""
    if tp is None or tp.world_size == 1:
        return HeadShard(num_heads, 0, num_kv_heads, 0)
    n, r = tp.world_size, tp.rank
    if num_heads % n:
        raise KvsimError("tensor_parallel", f"{n} must divide num_heads={num_heads}")
    if num_kv_heads % n == 0:
        k = num_kv_heads // n
        return HeadShard(num_heads // n, r * num_heads // n, k, r * k)
    if n % num_kv_heads == 0:
        return HeadShard(num_heads // n, r * num_heads // n, 1, r * num_kv_heads // n, kv_replicated=True)
    raise KvsimError("tensor_parallel", f"{n} must divide or be a multiple of num_kv_heads={num_kv_heads}")


def even_share(size: int, tp: TPGroup | None, what: str) -> tuple[int, int]:
    """``(start, length)`` of rank ``tp.rank``'s equal share of ``size`` features."""
    if tp is None or tp.world_size == 1:
        return 0, size
    if size % tp.world_size:
        raise KvsimError("tensor_parallel", f"{tp.world_size} must divide {what}={size}")
    n = size // tp.world_size
    return tp.rank * n, n


class RowParallelLinear(nn.Module):
    """``y = all_reduce(x_shard @ weight_shard.T) + bias``: ``weight`` is ``[out, in / N]``, the
    input arrives split the same way (the heads or MLP features this rank computed). Same
    parameter names as :class:`kvsim.engine.models.base.Linear` (not imported: no cycle)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, tp: TPGroup):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None
        self.tp = tp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.tp.all_reduce(F.linear(x, self.weight))
        return y + self.bias if self.bias is not None else y


def row_parallel(weight: torch.Tensor, bias: torch.Tensor | None, tp: TPGroup | None) -> nn.Module:
    """A :class:`RowParallelLinear` under TP, else a plain ``Linear`` (TP=1 is untouched)."""
    if tp is None or tp.world_size == 1:
        from kvsim.engine.models.base import Linear
        return Linear(weight, bias)
    return RowParallelLinear(weight, bias, tp)


# HF layer name -> (split dimension of its weight, what is split). Biases of dim-0 (column) splits
# follow their rows; biases of row-parallel layers and everything not listed are replicated.
SHARD_RULES = {"q_proj": (0, "q"), "k_proj": (0, "kv"), "v_proj": (0, "kv"),
               "out_proj": (1, "q"), "o_proj": (1, "q"),
               "fc1": (0, "ffn"), "gate_proj": (0, "ffn"), "up_proj": (0, "ffn"),
               "fc2": (1, "ffn"), "down_proj": (1, "ffn")}


def shard_range(spec, kind: str, tp: TPGroup | None) -> tuple[int, int]:
    """``(start, length)`` in features of rank ``tp.rank``'s slice for a ``SHARD_RULES`` kind."""
    sh = head_shard(spec.num_heads, spec.num_kv_heads, tp)
    d = spec.head_dim
    if kind == "q":
        return sh.head_start * d, sh.heads * d
    if kind == "kv":
        return sh.kv_start * d, sh.kv_heads * d
    return even_share(spec.ffn_hidden_size, tp, "ffn_hidden_size")


def shard_tensor(name: str, full: torch.Tensor, spec, tp: TPGroup | None) -> torch.Tensor:
    """Rank ``tp.rank``'s slice of the full HF-named tensor ``name`` (a view; the tensor itself
    when replicated)."""
    parts = name.split(".")
    rule = SHARD_RULES.get(parts[-2]) if len(parts) >= 2 else None
    if rule is None or tp is None or tp.world_size == 1:
        return full
    dim, kind = rule
    if parts[-1] == "bias" and dim == 1:
        return full                       # row-parallel bias: added once, after the all-reduce
    start, length = shard_range(spec, kind, tp)
    return full.narrow(0 if parts[-1] == "bias" else dim, start, length)


def load_full_state_dict(model: torch.nn.Module, full: dict[str, torch.Tensor]) -> None:
    """Fill a TP model's parameters from the full model's state dict (every parameter must be there;
    shapes are checked, so a wrong rule fails loudly)."""
    tp, spec = getattr(model, "tp", None), model.spec
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name not in full:
                raise KvsimError("weights", f"{name} missing from the full state dict")
            src = shard_tensor(name, full[name], spec, tp)
            if tuple(src.shape) != tuple(p.shape):
                raise KvsimError("weights", f"{name}: shard {tuple(src.shape)} != parameter {tuple(p.shape)}")
            p.copy_(src)
