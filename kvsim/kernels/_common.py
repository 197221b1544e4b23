"""Shared helpers for the kernel wrappers: backend choice, shape checks, device facts.

Backends
--------
Every public kernel function takes ``backend="triton"`` (default) or ``backend="torch"``.
``"triton"`` launches the Triton kernel; on a machine without CUDA that only works under the
Triton interpreter (``TRITON_INTERPRET=1`` set *before* ``triton`` is first imported), and
otherwise raises a one-line :class:`~kvsim.errors.KvsimError` telling the caller to pass
``backend="torch"``. ``"torch"`` runs the pure-torch reference in :mod:`kvsim.kernels.reference`
(float64 math, result cast to the output dtype) — never chosen silently.

Interpreter caveat (documented, tested): Triton 3.9's CPU interpreter computes ``tl.dot`` on
bfloat16 operands wrongly (it reinterprets the bits), so under the interpreter the kernels
upcast bf16 tiles to float32 before each dot (constexpr ``DOT_F32``). On a GPU the native
bf16/fp16 tensor-core dot is used with float32 accumulation.
"""
from __future__ import annotations

import functools
import os

import torch

from kvsim.errors import KvsimError

BACKENDS = ("triton", "torch")
HEAD_DIMS = (64, 80, 96, 128)
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_backend(backend: str, *tensors: torch.Tensor) -> None:
    """Validate ``backend`` and that the Triton backend can run on the tensors' device."""
    if backend not in BACKENDS:
        raise KvsimError("backend", f"{backend!r} is not one of {BACKENDS}")
    if backend == "triton" and not interpreting():
        for t in tensors:
            if t is not None and not t.is_cuda:
                raise KvsimError(
                    "backend",
                    f"'triton' needs CUDA tensors (got {t.device}) or TRITON_INTERPRET=1; "
                    "pass backend='torch' for the reference",
                )


def dot_f32(dtype: torch.dtype) -> bool:
    """Whether kernels must upcast dot operands to fp32 (bf16 under the interpreter)."""
    return interpreting() and dtype == torch.bfloat16


def next_pow2(n: int) -> int:
    """Smallest power of two >= n (n >= 1)."""
    return 1 << (max(int(n), 1) - 1).bit_length()


def is_pow2(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


def require(cond: bool, field: str, message: str) -> None:
    """Raise a one-line :class:`KvsimError` naming ``field`` unless ``cond``."""
    if not cond:
        raise KvsimError(field, message)


def check_dtype(name: str, t: torch.Tensor) -> None:
    require(t.dtype in FLOAT_DTYPES, name, f"dtype {t.dtype} not in {FLOAT_DTYPES}")


def check_int_index(name: str, t: torch.Tensor) -> None:
    require(t.dtype in (torch.int32, torch.int64), name, f"dtype {t.dtype} must be int32 or int64")


def check_varlen_inputs(q, k_cache, v_cache, block_table, query_start_loc, context_lens, backend: str,
                        window) -> int:
    """The checks both varlen kernels make (prefill and the one-token rows' decode kernel): packed tokens ``q``
    ``[tokens, num_q_heads, head_dim]``, 4-D caches of q's dtype and head size, a power-of-two block size,
    integer index tensors of matching lengths, the backend and the window. One-line errors; returns the
    number of sequences."""
    require(q.dim() == 3, "q", f"shape {tuple(q.shape)} must be [tokens, num_q_heads, head_dim]")
    require(k_cache.dim() == 4 and k_cache.shape == v_cache.shape, "k_cache",
            f"shape {tuple(k_cache.shape)} must be 4-D and equal v's")
    check_dtype("q", q)
    require(k_cache.dtype == q.dtype == v_cache.dtype, "k_cache", "dtype must equal q's")
    require(k_cache.shape[3] == q.shape[2] <= 256, "head_dim", f"{q.shape[2]} must match the cache, <= 256")
    require(q.shape[1] % k_cache.shape[2] == 0, "num_kv_heads", "must divide num_q_heads")
    require(is_pow2(k_cache.shape[1]) and k_cache.shape[1] <= 256, "block_size",
            f"{k_cache.shape[1]} must be a power of two in 1..256")
    for name, t in (("query_start_loc", query_start_loc), ("context_lens", context_lens),
                    ("block_table", block_table)):
        check_int_index(name, t)
    num_seqs = context_lens.shape[0]
    require(query_start_loc.shape == (num_seqs + 1,), "query_start_loc",
            f"shape {tuple(query_start_loc.shape)} must be ({num_seqs + 1},)")
    require(block_table.dim() == 2 and block_table.shape[0] == num_seqs, "block_table",
            f"shape {tuple(block_table.shape)} must be [{num_seqs}, max_blocks]")
    for name, t in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache)):
        require(t.stride(-1) == 1, name, "last dimension must be contiguous")
    check_backend(backend, q, k_cache, v_cache, block_table, query_start_loc, context_lens)
    require(isinstance(window, int) and window >= 0, "window", f"got {window!r}, expected tokens >= 0 (0 = full)")
    return num_seqs


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of ``device``; 132 (an H100 SXM) for CPU/interpreter runs."""
    if device.type == "cuda":
        return _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return 132


def default_scale(head_dim: int, scale: float | None) -> float:
    """Softmax scale: ``1/sqrt(head_dim)`` unless given."""
    return float(head_dim) ** -0.5 if scale is None else float(scale)


def max_int(t: torch.Tensor, given: int | None) -> int:
    """``given`` if not None else ``int(t.max())`` (one host sync; pass it to avoid that)."""
    if given is not None:
        return int(given)
    return int(t.max().item()) if t.numel() else 0
