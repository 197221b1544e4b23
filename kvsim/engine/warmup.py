"""The engine's warm-up: every kernel variant and side path run once before the clock starts.

A kernel that first runs while serving pays its compile (Triton) or load (CUDA modules) inside a timed step:
on the H200 a static batch's step took 0.6 s instead of 0.07 and a beam run's first copy-on-write 0.39 s
instead of 0.009 (``benchmarks/engine/compile_watch.py`` finds such steps). :func:`warmup_shapes` lists the
synthetic steps that reach every variant the engine can meet; :func:`warm_up` runs them through the model,
then the step's other GPU work (:func:`warm_up_side_paths`). The steps write garbage K/V into random cache
blocks: no sequence exists yet, and every slot is written before a real sequence reads it.
"""
from __future__ import annotations

import time

import torch

from kvsim.engine.synthetic_step import synthetic_step


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
        # (a decode context is bounded by the model's length alone, not by the step's token budget)
        for c in sorted({max(1, min(t, max_context)) for t in (bs, bs + 1, 17, 300, 16 * bs, 1500)
                         + split_contexts(max_context)}):
            steps.append(([], [c] * b))                                         # eager decode, split or not
    return steps


def split_contexts(max_context: int) -> tuple[int, ...]:
    """Decode contexts whose split count (at a few rows: one partition per ``MIN_SPLIT_TOKENS`` positions, see
    :func:`kvsim.kernels._attn_decode.choose_num_splits`) takes every power-of-two reduce width and every
    integer class up to ``MAX_SPLITS``: the reduce kernel is compiled per width (``SPLIT_PAD``) and both kernels
    per class of the split count, so an eager engine warmed only up to 1,500 tokens compiled them mid-run at its
    first 3-6k-token contexts (Mistral-7B-SWA, v29 on an H100: 3 compiles, steps 1, 155 and 178)."""
    from kvsim.kernels._attn_decode import MAX_SPLITS, MIN_SPLIT_TOKENS
    counts = sorted({n for k in range(1, MAX_SPLITS.bit_length() + 1) for n in (2 ** k, 2 ** k + 1)
                     if 2 <= n <= MAX_SPLITS})
    return tuple(n * MIN_SPLIT_TOKENS for n in counts if n * MIN_SPLIT_TOKENS <= max_context)


def largest_prefill_step(sc, max_model_len: int, num_gpu_blocks: int) -> int:
    """Prompt tokens the scheduler may put in one step: its token budget, except the static scheduler,
    which has none and is bounded by its batch and the KV pool (warmed up to twice the budget)."""
    e = sc.engine
    if e.scheduler != "static":
        return e.max_num_batched_tokens
    return min(e.max_num_seqs * max_model_len, num_gpu_blocks * e.block_size, 2 * e.max_num_batched_tokens)


def warm_up(model, cache, sc, *, max_model_len: int, num_gpu_blocks: int, device, backend: str) -> float:
    """Run every step of :func:`warmup_shapes` and the side paths once; seconds taken."""
    e = sc.engine
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for prefills, decodes in warmup_shapes(e.max_num_batched_tokens, max_model_len, e.max_num_seqs,
                                               largest_prefill_step(sc, max_model_len, num_gpu_blocks), e.block_size):
            ids, pos, meta = synthetic_step(prefills, decodes, block_size=e.block_size, num_blocks=cache.num_blocks,
                                            vocab_size=model.spec.vocab_size, device=device, backend=backend,
                                            generator=gen, mixed_decode_kernel=sc.runtime.mixed_decode_kernel)
            hidden = model(ids, pos, cache.gpu, meta)
            model.compute_logits(hidden[-1:]).argmax(-1).tolist()
        warm_up_logits(model, hidden, e.max_num_seqs)
    warm_up_side_paths(cache, sc.runtime, model.spec.vocab_size, device)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def warm_up_logits(model, hidden: torch.Tensor, max_rows: int) -> None:
    """The LM head and the draw at every number of sampled rows a step can have (one per sequence, up to
    ``max_rows``), once each. The LM head runs eagerly, outside the step graphs, on exactly the rows a step
    samples, and the GEMM library picks its kernel by that row count: on the H100 and H200 traces of v13 the first
    decode step of 9, 16-17 and 26-28 rows took 3-6 ms more than the later ones of the same size (the steps that
    first sampled more rows than any before; ``benchmarks/engine/first_steps.py``), which fits kernels loaded on
    first use (CUDA's lazy module loading). Zeros in, nothing kept: 256 row counts cost well under a second."""
    h = hidden.new_zeros((max(1, max_rows), hidden.shape[-1]))
    for m in range(1, h.shape[0] + 1):
        model.compute_logits(h[:m]).float().argmax(-1)


def warm_up_side_paths(cache, rt, vocab_size: int, device) -> None:
    """A step's GPU work besides the forward pass, once: sampling (with a throwaway generator, so the
    run's own draws are unchanged), beam search, copy-on-write and swapping (garbage blocks: no sequence
    exists yet)."""
    from kvsim.engine import sampling
    logits = torch.randn(3, vocab_size, generator=torch.Generator().manual_seed(0)).to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    for rows in (logits[:1], logits):
        sampling.sample_rows(rows, rt.sampling, rt.temperature, rt.top_p, gen)
    sampling.beam_first_steps(logits[:1], 2)
    sampling.beam_steps(logits[:2], [[0.0, 0.0]])
    if cache.num_blocks >= 2:
        cache.copy([(0, 1)])
    if cache.cpu:
        cache.swap_out([(0, 0)])
        cache.swap_in([(0, 0)])
        cache.transfers = 0
