"""Whole engine iterations on the GPU, the way the engine runs them: the calibration's step grids (decode steps
over batch x context, unequal-context decode steps, prefill steps over the graph ladder's token counts, prefill
batches and cached-context prefills, mixed steps), the card's reference step and its drift while they are timed.

The timers and helpers are :mod:`kvsim.calibrate.measure`'s, looked up there at call time (``M._bench``), so a
test that replaces ``measure._bench`` replaces them here too.
"""
from __future__ import annotations

import time

import torch

from kvsim.calibrate import measure as M
from kvsim.calibrate import prefill_grids as PG
from kvsim.kernels import varlen_decode

STEP_BATCH = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256]
# decode contexts a row, up to the model's longest sequence; 32 and 64 since 2026-12-07: below 128 the cost model
# went on along the first segment's slope, while the engine's steps there are where chat and instruction requests
# spend their first decode steps (the overlapped sets priced 2-8-row steps at <=128 tokens a row up to 3.7% fast and
# 9-16-row ones up to 3.6% slow, validation/*/decode-repriced-replay.csv; OPT-13B's short serving runs on an H100
# ran 1.5-3.4% under the price, kvsim.calibrate.short_fit): 26 points a block size, measured now, not extrapolated
STEP_CTX = [32, 64, 128, 256, 512, 768, 1024, 1536, 2048, 4096, 8192]
SPREAD_MAX = [512, 1024, 2048]   # decode steps with unequal contexts (evenly spaced up to this longest one)
STEP_PREFILL = [16, 64, 256, 512, 1024, 2048]
MIX_DECODE = [1, 8, 32, 96, 192]    # mixed steps: decode rows x their context x the chunk's new tokens
MIX_CTX = [256, 1024, 2048]
MIX_CHUNK = [16, 64, 256, 512, 1024, 1792]
PREFILL_TIMING = "between_decode_steps"   # recorded in prefill_step: how its points were timed
PREFILL_REPS = 10              # prefill steps: timed calls per point (each after two decode steps)
KV_POOL_TOKENS = 65536        # distinct KV tokens the step grids read (far larger than L2)
GRAPH_PREFILL_MAX_TOKENS = 2048   # = RuntimeConfig.cuda_graph_prefill_max_tokens's default
GRAPH_PREFILL_SEQS = 256          # the engine's prefill graphs hold min(max_num_seqs, 256) sequences
# the full grids; kvsim.calibrate.fast passes reduced ones (prefill None: every captured token count;
# mix None: no mixed steps)
FULL_STEP_GRID = {"batch": STEP_BATCH, "ctx": STEP_CTX, "spread": SPREAD_MAX, "prefill": None,
                  "mix": (MIX_DECODE, MIX_CTX, MIX_CHUNK),
                  "prefill_batch": (PG.PREFILL_BATCH_SEQS, PG.PREFILL_BATCH_TOKENS),
                  "prefill_cached": (PG.PREFILL_CACHED_NEW, PG.PREFILL_CACHED_CTX)}


def measure_steps(model, bs: int, dev, *, cuda_graphs: bool = True, max_context_len: int | None = None,
                  grid: dict | None = None, route: bool = True) -> tuple[dict, dict, dict, dict | None, dict | None, dict | None,
                                                    dict | None]:
    """Whole engine iterations on the GPU (forward of all layers + LM head + greedy sampling):
    decode steps over batch x context, decode steps whose contexts are unequal (evenly spaced up to
    SPREAD_MAX: a batch's longest sequence can set the attention kernel's makespan), single-sequence
    prefill steps over prompt tokens, and mixed
    steps (one fresh chunk of MIX_CHUNK tokens next to MIX_DECODE decode rows of MIX_CTX context),
    run in the engine's unified layout (one varlen attention launch, prefill graphs).

    Steps run the way the engine runs them: replayed from CUDA graphs captured for
    ``max_context_len`` (the engine's default, the model's longest sequence) unless ``cuda_graphs``
    is off — decode graphs by batch, prefill graphs at every captured token count up to
    GRAPH_PREFILL_MAX_TOKENS with room for GRAPH_PREFILL_SEQS sequences (the engine's defaults).
    Block tables draw blocks at random from a pool of KV_POOL_TOKENS tokens, so big batches read
    DRAM like real ones without needing batch x context tokens of memory. ``grid`` replaces the axes
    (FULL_STEP_GRID's keys); with ``grid["mix"]`` None no mixed steps are timed and the last item is None. The fifth value
    is the card's reference step (:mod:`kvsim.engine.reference_step`), timed first, as engine runs time it,
    with the same shape timed the grid's way beside it (``grid_timing_s``) and the reference step timed again
    after the decode grid, after the prefill grid and at the end (``checkpoints_s``): the card's drift;
    the last two are the multi-prompt and cached-context prefill grids of :mod:`kvsim.calibrate.prefill_grids`
    (None where ``grid["prefill_batch"]`` / ``grid["prefill_cached"]`` is None). ``route``: the prefill graphs skip
    the sizes a larger one replays faster, as the engine's do by default (``runtime.cuda_graph_prefill_route``);
    the prefill grid records them (``graph_skip``), and every step is timed through the graph the engine would use.
    """
    g = dict(FULL_STEP_GRID, **(grid or {}))
    batches = list(g["batch"])
    from kvsim.cost.calibrated import spread_contexts
    from kvsim.engine.attention import as_unified
    from kvsim.engine.cuda_graphs import DecodeGraphs, PrefillGraphs, prefill_token_sizes
    from kvsim.engine.synthetic_step import synthetic_step
    spec = model.spec
    max_ctx = max_context_len or spec.max_seq_len
    pool = KV_POOL_TOKENS // bs
    caches = [M._cache(model, pool, bs, dev) for _ in range(model.num_layers)]
    gen = torch.Generator().manual_seed(bs)
    graphs = DecodeGraphs(model, caches, block_size=bs, max_batch=max(batches), max_context_len=max_ctx,
                          backend=M.BACKEND, batch_sizes=batches) if cuda_graphs else None
    if g["prefill"] is not None:
        prefill_tokens = sorted({min(t, max_ctx) for t in g["prefill"]})
    elif cuda_graphs:
        prefill_tokens = prefill_token_sizes(min(GRAPH_PREFILL_MAX_TOKENS, max_ctx))
    else:
        prefill_tokens = sorted({min(t, max_ctx) for t in STEP_PREFILL})
    pgraphs = PrefillGraphs(model, caches, block_size=bs, max_tokens=prefill_tokens[-1], max_seqs=GRAPH_PREFILL_SEQS,
                            max_context_len=max_ctx, backend=M.BACKEND,
                            token_sizes=prefill_tokens if g["prefill"] is not None else None,
                            route=route) if cuda_graphs else None

    def eager(ids, pos, meta):
        return model(ids, pos, caches, meta)
    decode = graphs.run if graphs is not None else eager       # the engine's path for each kind of step
    prefill = pgraphs.run if pgraphs is not None else eager

    def step(prefills, decodes):
        return synthetic_step(prefills, decodes, block_size=bs, num_blocks=pool, vocab_size=spec.vocab_size,
                              device=dev, backend=M.BACKEND, generator=gen)
    ctx_axis = sorted({min(c, max_ctx) for c in g["ctx"]})
    ref = M._card_reference(model, caches, graphs, bs, pool, dev, gen)     # the card's speed, as engine runs time it

    def timed(meta_of):
        ids, pos, meta = meta_of
        return M._bench(lambda: model.compute_logits(decode(ids, pos, meta)).argmax(-1).tolist(), warmup=3, rep=15,
                      min_samples=M.STEP_SAMPLES)

    def checkpoint(label):   # the reference step again: did the card's speed drift while the grids were timed?
        if ref is not None:
            again = M._card_reference(model, caches, graphs, bs, pool, dev, torch.Generator().manual_seed(1000 + bs))
            ref.setdefault("checkpoints_s", {})[label] = None if again is None else again["time_s"]
    dec_grid = []
    t_stage = [time.perf_counter()]

    def stage(what: str) -> None:       # where a calibration's time goes, in its log
        now = time.perf_counter()
        M._log(f"{what} in {now - t_stage[0]:.1f} s")
        t_stage[0] = now
    stage(f"graphs captured ({len(batches)} decode batches, {len(prefill_tokens)} prefill token counts)")
    with torch.inference_mode():
        if ref is not None:      # the reference shape timed the grid's way (CUDA events, L2 flushed) beside it
            from kvsim.engine.reference_step import CTX as REF_CTX, ROWS as REF_ROWS
            ref["grid_timing_s"] = timed(step([], [min(REF_CTX, max_ctx)] * REF_ROWS))
        for n in batches:
            dec_grid.append([timed(step([], [c] * n)) for c in ctx_axis])
        checkpoint("after_decode_grid")
        stage(f"decode steps: {len(batches)} x {len(ctx_axis)} points")
        # unequal contexts, each beside the uniform step at its mean, timed in the same run: where the
        # spread step lies between uniform-at-mean and uniform-at-longest needs no interpolation
        spread, at_mean, tops = [], [], sorted({min(t, max_ctx) for t in g["spread"]})
        for n in batches:
            row, mrow = [], []
            for top in tops:
                ctx = spread_contexts(n, top)
                row.append(timed(step([], ctx)))
                mrow.append(timed(step([], [max(1, round(sum(ctx) / n))] * n)))
            spread.append(row)
            at_mean.append(mrow)
        stage(f"unequal-context decode steps: {len(batches)} x {len(tops)} points, each with its twin")
        pre = []
        # each prefill timed between two decode steps (16 rows of 512 context), as prompts are in serving
        cool = step([], [min(512, max_ctx)] * min(16, max(batches)))

        def between():
            for _ in range(2):
                decode(*cool)
        for t in prefill_tokens:
            ids, pos, meta = step([(t, 0)], [])
            pre.append(M._bench_between(lambda: model.compute_logits(prefill(ids, pos, meta)[-1:]).argmax(-1).tolist(),
                                      between, reps=PREFILL_REPS))

        def time_prefill(prefills):     # one prefill-only step, the engine's way (graph if it fits), as above
            ids, pos, meta = step(prefills, [])
            run = prefill if pgraphs is None or pgraphs.fits(meta) else eager
            last = meta.prefill_query_start[1:].long() - 1
            return M._bench_between(lambda: model.compute_logits(run(ids, pos, meta)[last]).argmax(-1).tolist(),
                                  between, reps=PREFILL_REPS)
        checkpoint("after_prefill_grid")
        stage(f"prefill steps: {len(prefill_tokens)} token counts")
        pbatch, pcached = PG.time_prefill_grids(time_prefill, max_ctx, batch=g.get("prefill_batch"),
                                                cached=g.get("prefill_cached"), log=M._log)
        stage("prefill batches and cached-context prefills")
        top = prefill_tokens[-1]
        mix_rows, mix_ctx, mix_chunk = g["mix"] or ([], [], [])
        chunks = [t for t in mix_chunk if t + max(mix_rows) <= top] or [max(1, top - max(mix_rows))] if mix_rows else []
        mix = []
        for n in mix_rows:
            plane = []
            for c in mix_ctx:
                row = []
                for t in chunks:
                    ids, pos, meta = step([(t, 0)], [min(c, max_ctx)] * n)
                    meta = as_unified(meta)
                    run = prefill if pgraphs is None or pgraphs.fits(meta) else eager
                    # between decode steps, as the prefill steps: back to back, a step with a long chunk held the
                    # card at its power limit (SM clocks ~1,600 MHz through the H200 grids against ~1,970 in serving)
                    row.append(M._bench_between(lambda: model.compute_logits(run(ids, pos, meta)[-(n + 1):])
                                                .argmax(-1).tolist(), between, reps=PREFILL_REPS))
                plane.append(row)
            mix.append(plane)
        checkpoint("end")
        if mix:
            stage(f"mixed steps: {len(mix_rows)} x {len(mix_ctx)} x {len(chunks)} points")
    skip = list(pgraphs.skipped) if pgraphs is not None else []     # sizes routed past (runtime.cuda_graph_prefill_route)
    replay = [float(t) for t in pgraphs.replay_time_s] if pgraphs is not None else []   # what routing timed
    if skip:
        M._log(f"prefill graphs routed past (a larger one replayed >= 5% faster): {skip}")
    del caches, graphs, pgraphs
    mixed = {"decode": list(mix_rows), "ctx": list(mix_ctx), "chunk": chunks, "time_s": mix,
             "cuda_graphs": bool(cuda_graphs), "timing": PREFILL_TIMING,
             "decode_split": bool(varlen_decode.SPLIT)} if g["mix"] else None
    if mixed is not None and varlen_decode.SPLIT:      # rows cut only below this share of the programs
        from kvsim.kernels import varlen_split
        mixed["decode_split_cut_below"] = float(varlen_split.CUT_BELOW)
    return ({"batch": batches, "ctx": ctx_axis, "time_s": dec_grid, "cuda_graphs": bool(cuda_graphs),
             "max_context_len": int(max_ctx)},
            {"batch": batches, "max_ctx": tops, "time_s": spread, "mean_time_s": at_mean,
             "top_time_s": [[row[ctx_axis.index(t)] for t in tops] for row in dec_grid],
             "shape": "contexts evenly spaced up to max_ctx", "cuda_graphs": bool(cuda_graphs)},
            {"tokens": prefill_tokens, "time_s": pre, "cuda_graphs": bool(cuda_graphs), "timing": PREFILL_TIMING,
             **({"graph_route": bool(route), "graph_skip": skip, "graph_replay_s": replay} if cuda_graphs else {})},
            mixed, ref, pbatch, pcached)
