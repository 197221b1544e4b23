"""KV-cache memory budget: how many KV blocks fit on a GPU, vLLM-style.

vLLM sizes its KV cache by profiling: it runs one forward pass of
``max_num_batched_tokens`` dummy tokens, measures the peak, and gives the rest
of ``total_memory x gpu_memory_utilization`` to KV blocks. We do the same
arithmetic analytically (all numbers per GPU)::

    kv_cache_bytes = memory_bytes x gpu_memory_utilization
                     - weight_bytes - activation_peak_bytes
    num_gpu_blocks = floor(kv_cache_bytes / block_bytes)

``activation_peak_bytes`` (see :func:`activation_peak_bytes`) is an estimate of
that profiled peak plus a fixed reserve for memory outside PyTorch's tensors.
"""
from __future__ import annotations

from dataclasses import dataclass

from kvsim.catalogue import GPUSpec, ModelSpec
from kvsim.errors import KvsimError

GiB = 1 << 30
MiB = 1 << 20

#: Fixed reserve on top of the forward-pass activations: CUDA context (~300-500 MiB
#: on A100/H100, invisible to PyTorch's allocator but counted by vLLM's profiler via
#: cudaMemGetInfo), cuBLAS/Triton workspaces, NCCL buffers and allocator
#: fragmentation. 1 GiB is what vLLM deployments typically lose beyond weights + profiled peak.
RUNTIME_RESERVE_BYTES = 1 * GiB

#: Live copies of the [tokens, hidden] hidden state at the peak of a layer: residual
#: stream, normalised input, attention output / layer output.
HIDDEN_STATE_COPIES = 3

#: Logits are materialised in fp32 for the last token of each sequence (max_num_seqs
#: rows); the sampler keeps a second [seqs, vocab] fp32 tensor (probabilities).
LOGITS_COPIES = 2


@dataclass
class KVBudget:
    """The per-GPU memory split for one model on one GPU (all byte counts per GPU)."""

    model_name: str
    gpu_name: str
    tensor_parallel: int
    block_size_tokens: int
    usable_bytes: int            # memory_bytes x gpu_memory_utilization
    weight_bytes: int
    activation_peak_bytes: int   # forward-pass peak estimate + RUNTIME_RESERVE_BYTES
    kv_cache_bytes: int          # usable - weights - activations
    block_bytes: int             # kv_bytes_per_token(tp) x block_size_tokens
    num_gpu_blocks: int          # floor(kv_cache_bytes / block_bytes)
    num_cpu_blocks: int          # swap_space_bytes // block_bytes (swap space is per GPU)
    kv_capacity_tokens: int      # num_gpu_blocks x block_size_tokens

    def summary(self) -> str:
        """One line: weights / activations / KV in GiB and the block count."""
        return (f"{self.model_name} on {self.gpu_name} (tp={self.tensor_parallel}): "
                f"weights {self.weight_bytes / GiB:.2f} GiB, activations {self.activation_peak_bytes / GiB:.2f} GiB, "
                f"KV {self.kv_cache_bytes / GiB:.2f} GiB = {self.num_gpu_blocks} blocks of "
                f"{self.block_size_tokens} tokens ({self.kv_capacity_tokens} tokens)")


def activation_peak_bytes(model: ModelSpec, *, tensor_parallel: int = 1, dtype_bytes: int = 2,
                          max_num_batched_tokens: int = 2048, max_num_seqs: int = 256) -> int:
    """Estimated per-GPU peak memory of one profiling forward pass, plus the runtime reserve.

    With ``T = max_num_batched_tokens``:

    * hidden states: ``HIDDEN_STATE_COPIES x T x hidden x dtype``;
    * the largest per-layer intermediate, whichever is bigger of the fused QKV
      output ``T x (heads + 2 kv_heads)/tp x head_dim`` and the MLP's
      ``T x mlp_matrices x ffn/tp`` (OPT: fc1 output + activation; LLaMA: fused
      gate/up output 2 x ffn + SwiGLU output), times dtype;
    * logits: ``LOGITS_COPIES x max_num_seqs x vocab x 4`` (fp32, full vocab
      gathered on each GPU; only the last position of each sequence is projected);
    * ``RUNTIME_RESERVE_BYTES``.
    """
    tp = tensor_parallel
    t = max_num_batched_tokens
    hidden = HIDDEN_STATE_COPIES * t * model.hidden_size * dtype_bytes
    qkv_width = (-(-model.num_heads // tp) + 2 * model.kv_heads_per_gpu(tp)) * model.head_dim
    mlp_width = model.mlp_matrices * -(-model.ffn_hidden_size // tp)
    intermediate = t * max(qkv_width, mlp_width) * dtype_bytes
    logits = LOGITS_COPIES * max_num_seqs * model.vocab_size * 4
    return hidden + intermediate + logits + RUNTIME_RESERVE_BYTES


def validate_tensor_parallel(model: ModelSpec, tensor_parallel: int) -> None:
    """tp must be >= 1, divide num_heads, and divide (or be a multiple of) num_kv_heads, as vLLM requires."""
    tp = tensor_parallel
    if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1:
        raise KvsimError("tensor_parallel", f"got {tp!r}, expected an integer >= 1")
    if model.num_heads % tp:
        raise KvsimError("tensor_parallel", f"got {tp}, must divide {model.name}'s num_heads={model.num_heads}")
    kv = model.num_kv_heads
    if (kv % tp) if tp <= kv else (tp % kv):
        raise KvsimError("tensor_parallel", f"got {tp}, must divide or be a multiple of "
                                            f"{model.name}'s num_kv_heads={kv}")


def _valid_tps(model: ModelSpec) -> list[int]:
    out = []
    for tp in range(1, model.num_heads + 1):
        try:
            validate_tensor_parallel(model, tp)
        except KvsimError:
            continue
        out.append(tp)
    return out


def kv_budget(model: ModelSpec, gpu: GPUSpec, *, block_size_tokens: int, tensor_parallel: int = 1,
              gpu_memory_utilization: float = 0.9, dtype_bytes: int = 2,
              max_num_batched_tokens: int = 2048, max_num_seqs: int = 256,
              swap_space_bytes: int = 0) -> KVBudget:
    """Per-GPU KV budget of ``model`` on ``gpu`` (see module doc for the rule).

    Raises :class:`KvsimError` on bad arguments ("block_size", "tensor_parallel",
    "gpu_memory_utilization", ...), with a ``tensor_parallel >= N`` hint when the
    weights alone do not fit, and naming ``gpu_memory_utilization`` when the
    weights fit but not even one KV block does.
    """
    if isinstance(block_size_tokens, bool) or not isinstance(block_size_tokens, int) or block_size_tokens < 1:
        raise KvsimError("block_size", f"got {block_size_tokens!r}, expected an integer >= 1")
    validate_tensor_parallel(model, tensor_parallel)
    u = gpu_memory_utilization
    if isinstance(u, bool) or not isinstance(u, (int, float)) or not 0 < u <= 1:
        raise KvsimError("gpu_memory_utilization", f"got {u!r}, expected a number in (0, 1]")
    if dtype_bytes not in (1, 2, 4):
        raise KvsimError("dtype_bytes", f"got {dtype_bytes!r}, expected 1, 2 or 4")
    for name, v in (("max_num_batched_tokens", max_num_batched_tokens), ("max_num_seqs", max_num_seqs)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise KvsimError(name, f"got {v!r}, expected an integer >= 1")
    if isinstance(swap_space_bytes, bool) or not isinstance(swap_space_bytes, int) or swap_space_bytes < 0:
        raise KvsimError("swap_space", f"got {swap_space_bytes!r}, expected a byte count >= 0")

    tp = tensor_parallel
    usable = int(gpu.memory_bytes * u)
    weights = model.weight_bytes(dtype_bytes, tp)
    if weights > usable:
        fits = [t for t in _valid_tps(model) if model.weight_bytes(dtype_bytes, t) <= usable]
        hint = (f"use tensor_parallel >= {fits[0]}" if fits
                else f"no tensor_parallel up to {model.num_heads} fits; use a bigger GPU")
        raise KvsimError("model", f"{model.name} weights need {weights / GiB:.1f} GiB per GPU but {gpu.name} has "
                                  f"{usable / GiB:.1f} GiB usable at gpu_memory_utilization={u:g}; {hint}")
    act = activation_peak_bytes(model, tensor_parallel=tp, dtype_bytes=dtype_bytes,
                                max_num_batched_tokens=max_num_batched_tokens, max_num_seqs=max_num_seqs)
    block_bytes = model.kv_bytes_per_token(dtype_bytes, tp) * block_size_tokens
    kv_bytes = usable - weights - act
    logits = LOGITS_COPIES * max_num_seqs * model.vocab_size * 4
    most = gpu.memory_bytes - weights        # left at gpu_memory_utilization=1: a term above it is the culprit
    if kv_bytes < block_bytes and logits > most:
        raise KvsimError("max_num_seqs", f"got {max_num_seqs}: the sampler's logits for that many sequences need "
                                         f"{logits / GiB:.3g} GiB, more than the {most / GiB:.2f} GiB the GPU "
                                         f"has after the weights; lower max_num_seqs")
    if kv_bytes < block_bytes and act - logits > most:
        raise KvsimError("max_num_batched_tokens", f"got {max_num_batched_tokens}: activations for that many "
                                                   f"tokens need {(act - logits) / GiB:.3g} GiB, more than the "
                                                   f"{most / GiB:.2f} GiB the GPU has after the weights")
    if kv_bytes < block_bytes and block_bytes > most - act:
        raise KvsimError("block_size", f"got {block_size_tokens}: one KV block of {model.name} needs "
                                       f"{block_bytes / GiB:.3g} GiB, more than the {most / GiB:.2f} GiB the "
                                       f"GPU has after the weights; use a smaller block_size")
    if kv_bytes < block_bytes:
        raise KvsimError("gpu_memory_utilization",
                         f"{model.name} on {gpu.name} (tp={tp}): weights {weights / GiB:.2f} GiB + activations "
                         f"{act / GiB:.2f} GiB leave {max(kv_bytes, 0) / MiB:.1f} MiB of the {usable / GiB:.2f} GiB "
                         f"usable at gpu_memory_utilization={u:g}, less than one KV block "
                         f"({block_bytes / MiB:.2f} MiB); raise gpu_memory_utilization, lower "
                         f"max_num_batched_tokens/max_num_seqs or raise tensor_parallel")
    blocks = kv_bytes // block_bytes
    return KVBudget(model_name=model.name, gpu_name=gpu.name, tensor_parallel=tp,
                    block_size_tokens=block_size_tokens, usable_bytes=usable, weight_bytes=weights,
                    activation_peak_bytes=act, kv_cache_bytes=kv_bytes, block_bytes=block_bytes,
                    num_gpu_blocks=blocks, num_cpu_blocks=swap_space_bytes // block_bytes,
                    kv_capacity_tokens=blocks * block_size_tokens)
