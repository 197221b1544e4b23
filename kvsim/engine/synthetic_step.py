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


def warmup_shapes(max_tokens: int, max_context: int, max_seqs: int = 1, step_tokens: int | None = None,
                  block_size: int = 16) -> list[tuple[list[tuple[int, int]], list[int]]]:
    """Steps that compile every kernel variant the engine meets. Triton specialises each integer argument
    by whether it is 1, a multiple of 16 or neither, and the attention kernels take two that vary from step
    to step: the number of sequences and the width of their block table (the longest one's blocks). So the
    steps cover every pair of classes of those two for the prefill kernels (1, 2 or 16 prompts, widths of
    1, 2 and 16 blocks: a short prompt with cached context sets the width cheaply) and for eager decode
    (1, 3, 16 and 64 rows), and the decode kernel's split vs single pass. A pair missed compiles on the
    clock: 0.6-1.1 s in one step of a static batch of Llama-3-8B on the H200
    (``benchmarks/engine/compile_watch.py``). With ``max_seqs`` > 1, also eager steps of up to 32 prompts
    filling ``max_tokens`` and ``step_tokens`` (the largest prefill step the scheduler can make, when it has no
    token budget): the first step of a new large shape otherwise pays one-off library and allocator work on the
    clock (a 32-prompt static batch of 4,733 tokens took 1.16 s against 0.22 s for the next, OPT-13B on the H200)."""
    def fit(t: int) -> int:
        return max(1, min(t, max_tokens, max_context))

    def chunk(new: int, cached: int) -> tuple[int, int]:      # new + cached never passes max_context
        n = fit(new)
        return n, max(0, min(cached, max_context - n))
    bs = max(1, block_size)
    widths = (1, 2, 16)                                       # blocks of the longest sequence: 1, neither, 16k
    steps: list[tuple[list[tuple[int, int]], list[int]]] = []
    for n in sorted({fit(t) for t in (1, 16, 17, 33, 256, 511, max_tokens)}):
        steps.append(([(n, 0)], []))
    for groups in (2, 16):                                    # several prompts, each width of block table
        if groups > max(max_seqs, 2) or 2 * groups > max_tokens:
            continue
        for w in widths:
            steps.append(([chunk(2, w * bs - 2)] + [chunk(2, 0)] * (groups - 1), []))
    steps.append(([chunk(17, 32), chunk(16, 0)], []))                           # chunked / cached prefix
    steps.append(([chunk(20, 0), chunk(33, 64)], [fit(40), fit(300), fit(17)]))   # mixed step
    seqs = min(max_seqs, 32)
    if seqs > 1:
        for total in sorted({max_tokens, max(max_tokens, step_tokens or 0)}):
            per = max(1, min(max_context, total // seqs))
            steps.append(([(per, 0)] * max(1, min(max_seqs, total // per)), []))
    for b in (1, 3, 16, 64):
        for c in sorted({fit(t) for t in (bs, bs + 1, 17, 300, 16 * bs, 1500)}):
            steps.append(([], [c] * b))                                         # eager decode, split or not
    return steps
