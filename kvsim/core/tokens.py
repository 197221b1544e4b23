"""Synthetic token ids and chained block hashes for prefix caching.

Workloads without text still need token ids so that shared prefixes can be
recognised by content, as a real engine does. A request's prompt is the shared
prefix (tokens drawn from a generator seeded by ``prefix_id``) followed by its
own tokens (seeded by ``request_id``). Two requests share a full block exactly
when the tokens of that block and of every block before it are equal, which is
what the chained hash encodes: ``h[i] = hash((h[i-1], tokens of block i))``.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from kvsim.core.request import RequestSpec

VOCAB_SIZE = 32000
_PREFIX_SALT = 0x5EED_0001
_REQUEST_SALT = 0x5EED_0002
_OUTPUT_SALT = 0x5EED_0003


@lru_cache(maxsize=256)
def _prefix_tokens(prefix_id: int, prefix_len: int, vocab_size: int) -> np.ndarray:
    """A shared prefix's token ids (read only: many prompts start with them)."""
    rng = np.random.default_rng([_PREFIX_SALT, prefix_id])
    out = rng.integers(0, vocab_size, prefix_len, dtype=np.int32)
    out.flags.writeable = False
    return out


@lru_cache(maxsize=256)
def _prefix_hashes(prefix_id: int, prefix_len: int, vocab_size: int, block_size: int) -> tuple[int, ...]:
    """``block_hashes`` of a shared prefix's full blocks: the first hashes of every prompt starting with it."""
    return tuple(block_hashes(_prefix_tokens(prefix_id, prefix_len, vocab_size), block_size))


def synthetic_prompt_tokens(spec: RequestSpec, vocab_size: int = VOCAB_SIZE) -> np.ndarray:
    """Deterministic int32 token ids of ``spec``'s prompt (length ``prompt_len``)."""
    parts = []
    if spec.prefix_id >= 0 and spec.prefix_len > 0:
        parts.append(_prefix_tokens(spec.prefix_id, spec.prefix_len, vocab_size))
    rest = spec.prompt_len - (spec.prefix_len if parts else 0)
    rng = np.random.default_rng([_REQUEST_SALT, spec.request_id])
    parts.append(rng.integers(0, vocab_size, rest, dtype=np.int32))
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def synthetic_output_tokens(spec: RequestSpec, sample: int, count: int, vocab_size: int = VOCAB_SIZE) -> np.ndarray:
    """Stand-in ids for the first ``count`` output tokens of sample ``sample`` of ``spec``: unique to that
    sequence, so the blocks holding its output can only be found again by the same sequence (the V1
    prefix cache hashes generated tokens too, and a request recomputed after a preemption hits them)."""
    rng = np.random.default_rng([_OUTPUT_SALT, spec.request_id, sample])
    return rng.integers(0, vocab_size, max(0, count), dtype=np.int32)


def prompt_block_hashes(spec: RequestSpec, block_size: int, vocab_size: int = VOCAB_SIZE) -> list[int]:
    """Chained hashes of the full blocks of ``spec``'s synthetic prompt, shared exactly as hashing its tokens
    (``block_hashes(synthetic_prompt_tokens(spec), block_size)``) shares them, without drawing the tokens.

    Blocks holding only shared-prefix tokens take the prefix's hashes (computed once per prefix, from its
    tokens). A block holding any of the request's own tokens is the request's alone (they are drawn from a
    generator seeded by its id), so it hashes from the request id and its index: two prompts' hashes agree
    up to block ``i`` exactly when their tokens do (tested on both definitions), and a request recomputed,
    or fanned out into children with its spec, finds its own blocks again."""
    if spec.prefix_id >= 0 and spec.prefix_len > 0:
        if spec.prefix_len > spec.prompt_len:
            raise ValueError(f"prefix_len {spec.prefix_len} exceeds prompt_len {spec.prompt_len}")
        out = list(_prefix_hashes(spec.prefix_id, spec.prefix_len, vocab_size, block_size))
    else:
        out = []
    h = out[-1] if out else 0
    rid = spec.request_id
    for i in range(len(out), spec.prompt_len // block_size):
        h = hash((h, _REQUEST_SALT, rid, i))
        out.append(h)
    return out


def block_hashes(tokens: np.ndarray, block_size: int, head: list[int] | None = None) -> list[int]:
    """Chained hashes of every *full* block of ``tokens`` (``head``: the first ones, already known).

    Invariant: ``block_hashes(a)[i] == block_hashes(b)[i]`` iff (up to hash
    collisions) ``a[:(i+1)*block_size] == b[:(i+1)*block_size]``.
    """
    out: list[int] = head if head is not None else []
    h = out[-1] if out else 0
    data = np.ascontiguousarray(tokens, dtype=np.int32)
    for i in range(len(out), len(data) // block_size):
        h = hash((h, data[i * block_size:(i + 1) * block_size].tobytes()))
        out.append(h)
    return out
