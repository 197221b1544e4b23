"""Triton kernels for paged KV-cache attention, with pure-torch references.

Importing this subpackage needs ``torch`` and ``triton``; nothing else in :mod:`kvsim` imports
it. On a machine without CUDA, run the Triton kernels under the interpreter by setting
``TRITON_INTERPRET=1`` *before* the first ``import triton``, or ask for the reference with
``backend="torch"``.

Public API
----------
* :func:`paged_decode_attention` — decode over a paged cache (split-KV chosen automatically).
* :func:`contiguous_decode_attention` — the same kernel over contiguous KV (the baseline).
* :func:`paged_prefill_attention` — causal prefill / prefix attention, variable lengths.
* :func:`write_kv`, :func:`copy_blocks`, :func:`copy_blocks_planes`, :func:`swap_blocks` — cache operations.
* :mod:`kvsim.kernels.reference` — float64 torch references of all of the above.
"""
from kvsim.kernels.cache_ops import copy_blocks, copy_blocks_planes, swap_blocks, swap_runs, write_kv
from kvsim.kernels.contiguous import contiguous_decode_attention
from kvsim.kernels.decode import DecodeConfig, paged_decode_attention
from kvsim.kernels.prefill import paged_prefill_attention

__all__ = [
    "DecodeConfig",
    "contiguous_decode_attention",
    "copy_blocks",
    "copy_blocks_planes",
    "paged_decode_attention",
    "paged_prefill_attention",
    "swap_blocks",
    "swap_runs",
    "write_kv",
]
