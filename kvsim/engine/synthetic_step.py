"""Engine steps built from shapes alone — for warm-up, KV sizing and calibration.

:func:`synthetic_step` returns the ``input_ids``, ``positions`` and
:class:`~kvsim.engine.attention.AttnMetadata` of one step with the given
prefill chunks ``(new, cached)`` and decode contexts, in the engine's token
order (prefill tokens first). Each sequence gets its own block table, drawn
at random from the cache's ``num_blocks`` blocks (so big batches read memory
the way real ones do, not one hot block): distinct blocks for every sequence
when the cache has enough, otherwise drawn with replacement (then sequences
may share blocks, which only timing runs may do: the values then depend on the
order the GPU runs them). The step writes its new K/V into those blocks, so
never run it on a cache that holds live sequences.
"""
from __future__ import annotations

import torch

from kvsim.engine.attention import MIXED_DECODE_KERNEL, AttnMetadata


def synthetic_step(prefills: list[tuple[int, int]], decode_ctx: list[int], *, block_size: int, num_blocks: int,
                   vocab_size: int, device, backend: str, generator: torch.Generator | None = None,
                   mixed_decode_kernel: bool | None = None):
    """``(input_ids, positions, meta)`` of one step (see module doc). ``decode_ctx`` counts the new token.
    A step with prompts launches the decode kernel on their one-token sequences as the engine's runner does
    (``mixed_decode_kernel``, default :data:`~kvsim.engine.attention.MIXED_DECODE_KERNEL`), so warm-up compiles
    and calibration times the launches the engine makes."""
    i32 = dict(dtype=torch.int32)
    rand = dict(generator=generator)

    lens = [c + n for n, c in prefills] + list(decode_ctx)
    width = max([-(-t // block_size) for t in lens] + [1])
    if len(lens) * width <= num_blocks:
        perm = torch.randperm(num_blocks, **rand).to(torch.int32)
        tables = [perm[i * width:(i + 1) * width] for i in range(len(lens))]
    else:
        tables = [torch.randint(0, num_blocks, (width,), **rand, **i32) for _ in lens]
    pos, slots = [], []
    for (new, cached), tb in zip(prefills, tables):
        p = torch.arange(cached, cached + new)
        pos.append(p)
        slots.append(tb[p // block_size].long() * block_size + p % block_size)
    for c, tb in zip(decode_ctx, tables[len(prefills):]):
        p = torch.tensor([c - 1])
        pos.append(p)
        slots.append(tb[p // block_size].long() * block_size + p % block_size)
    pos_t = torch.cat(pos) if pos else torch.zeros(0, dtype=torch.long)
    slots_t = torch.cat(slots) if slots else torch.zeros(0, dtype=torch.long)
    n_pre = sum(n for n, _ in prefills)
    qstart = torch.tensor([0] + [sum(n for n, _ in prefills[:i + 1]) for i in range(len(prefills))], **i32)
    ptab = torch.stack(tables[:len(prefills)]) if prefills else torch.zeros((0, 1), **i32)
    dtab = torch.stack(tables[len(prefills):]) if decode_ctx else torch.zeros((0, 1), **i32)
    dev = torch.device(device)
    meta = AttnMetadata(
        num_prefill_tokens=n_pre, num_decode_tokens=len(decode_ctx), slot_mapping=slots_t.to(dev),
        prefill_query_start=qstart.to(dev), prefill_context_lens=torch.tensor([c for _, c in prefills], **i32).to(dev),
        prefill_block_tables=ptab.to(dev), max_prefill_query_len=max([n for n, _ in prefills] + [1]),
        decode_context_lens=torch.tensor(list(decode_ctx), **i32).to(dev), decode_block_tables=dtab.to(dev),
        max_decode_context_len=max(list(decode_ctx) + [1]), backend=backend,
        single_rows_decode=(MIXED_DECODE_KERNEL if mixed_decode_kernel is None else bool(mixed_decode_kernel)) and n_pre > 0)
    ids = torch.randint(0, vocab_size, (len(pos_t),), **rand).to(dev)
    return ids, pos_t.to(dev), meta
