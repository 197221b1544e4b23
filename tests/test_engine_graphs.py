"""Decode CUDA graphs and engine warm-up: padding logic on the CPU (the eager padded path), graph
replay on the GPU, and both leave the engine's tokens unchanged."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import kvsim  # noqa: E402
from kvsim.catalogue import get_model  # noqa: E402
from kvsim.engine.cuda_graphs import DecodeGraphs, PrefillGraphs, graph_batch_sizes, prefill_token_sizes  # noqa: E402
from kvsim.engine.engine import RealEngine  # noqa: E402
from kvsim.engine.models import build_model  # noqa: E402
from kvsim.engine.runner import pad_rows  # noqa: E402
from kvsim.engine.attention import MIXED_DECODE_KERNEL, as_unified  # noqa: E402
from kvsim.engine.synthetic_step import synthetic_step  # noqa: E402
from kvsim.engine.warmup import warmup_shapes  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")])]


@pytest.mark.parametrize("max_batch", [1, 3, 8, 9, 63, 64, 65, 200, 256, 300, 512])
def test_graph_batch_sizes_cover_every_batch_with_little_padding(max_batch):
    sizes = graph_batch_sizes(max_batch)
    assert sizes == sorted(set(sizes)) and sizes[0] == 1 and sizes[-1] == max_batch
    for n in range(1, max_batch + 1):
        b = min(s for s in sizes if s >= n)
        assert b - n < max(8, n // 4) or n <= 4, (n, b)      # padding under ~25 % beyond small batches


@pytest.mark.parametrize("max_tokens", [1, 10, 16, 17, 100, 256, 2048, 4096])
def test_prefill_token_sizes_cover_every_count_with_little_padding(max_tokens):
    sizes = prefill_token_sizes(max_tokens)
    assert sizes == sorted(set(sizes)) and sizes[-1] == max_tokens
    for n in range(1, max_tokens + 1):
        b = min(s for s in sizes if s >= n)
        assert b - n < max(16, n // 4), (n, b)


def test_pad_rows_zero_pads_ragged_tables():
    assert pad_rows([[3, 1, 2], [7], []]).tolist() == [[3, 1, 2], [7, 0, 0], [0, 0, 0]]
    assert pad_rows([]).shape == (0, 1)
    assert pad_rows([[5]]).dtype.name == "int32"


def _model_and_cache(name: str, device: str, dtype, blocks: int = 64, bs: int = 4):
    spec = get_model(name)
    model = build_model(spec, dtype=dtype, device=torch.device(device), weights="dummy", seed=3)
    g = torch.Generator(device=device).manual_seed(4)
    shape = (blocks, bs, spec.num_kv_heads, spec.head_dim)
    caches = [(torch.randn(shape, generator=g, device=device).to(dtype),
               torch.randn(shape, generator=g, device=device).to(dtype)) for _ in range(spec.num_layers)]
    return spec, model, caches


def _clone(caches):
    return [(k.clone(), v.clone()) for k, v in caches]


def _check_same_as_plain(model, caches, graphs, steps, device, backend, spec, unified=False):
    """Each step: the same hidden states and the same cache writes as the plain forward (padding
    rows write nothing; values equal up to the rounding of a GEMM over a padded batch). With
    ``unified`` the graph runs the step in the mixed-step layout (decode rows as 1-token chunks)
    while the plain forward runs it with separate prefill and decode launches."""
    gen = torch.Generator().manual_seed(5)
    for prefills, decodes in steps:
        ids, pos, meta = synthetic_step(prefills, decodes, block_size=4, num_blocks=64, vocab_size=spec.vocab_size,
                                        device=device, backend=backend, generator=gen)
        gmeta = as_unified(meta) if unified else meta
        assert graphs.fits(gmeta) and not (unified and graphs.fits(meta))
        before = _clone(caches)
        with torch.inference_mode():
            want = model(ids, pos, caches, meta)
        after_plain = _clone(caches)
        for (k, v), (k0, v0) in zip(caches, before):          # restore, then run the graph path
            k.copy_(k0)
            v.copy_(v0)
        with torch.inference_mode():
            got = graphs.run(ids, pos, gmeta).clone()
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        for (k, v), (k1, v1), (k0, v0) in zip(caches, after_plain, before):
            assert torch.equal(k != k0, k1 != k0) and torch.equal(v != v0, v1 != v0)
            torch.testing.assert_close(k, k1, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(v, v1, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["tiny-opt", "tiny-llama"])
def test_padded_graph_step_equals_plain_step(name, device):
    """Decode batches 1, 3 (padded to 4), 9 (padded to 16) and 16."""
    spec, model, caches = _model_and_cache(name, device, torch.float32)
    backend = "triton" if device == "cuda" else "torch"
    graphs = DecodeGraphs(model, caches, block_size=4, max_batch=16, max_context_len=spec.max_seq_len,
                          backend=backend, capture=True)
    assert graphs.captured == (device == "cuda")
    steps = [([], ctx) for ctx in ([9], [3, 40, 17], [5] * 9, list(range(1, 17)))]
    _check_same_as_plain(model, caches, graphs, steps, device, backend, spec)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["tiny-opt", "tiny-llama"])
def test_padded_prefill_graph_step_equals_plain_step(name, device):
    """Prompts, chunked prefills over cached context and several sequences, padded to 16-token multiples."""
    spec, model, caches = _model_and_cache(name, device, torch.float32)
    backend = "triton" if device == "cuda" else "torch"
    graphs = PrefillGraphs(model, caches, block_size=4, max_tokens=64, max_seqs=4, max_context_len=spec.max_seq_len,
                           backend=backend)
    assert graphs.captured == (device == "cuda")
    steps = [([(5, 0)], []), ([(16, 0)], []), ([(7, 0), (3, 4), (20, 9)], []), ([(1, 30)] * 4, []),
             ([(40, 0), (24, 100)], [])]
    _check_same_as_plain(model, caches, graphs, steps, device, backend, spec)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["tiny-opt", "tiny-llama"])
def test_mixed_step_in_prefill_graph_equals_two_launch_step(name, device):
    """Mixed steps (chunks next to decode rows) replayed through the prefill graphs in the unified
    layout give what the eager two-launch step gives."""
    spec, model, caches = _model_and_cache(name, device, torch.float32)
    backend = "triton" if device == "cuda" else "torch"
    graphs = PrefillGraphs(model, caches, block_size=4, max_tokens=64, max_seqs=8, max_context_len=spec.max_seq_len,
                           backend=backend)
    steps = [([(5, 0)], [9]), ([(16, 4)], [3, 40, 17]), ([(7, 0), (3, 4)], [5, 60, 1, 2, 33])]
    _check_same_as_plain(model, caches, graphs, steps, device, backend, spec, unified=True)


@pytest.mark.parametrize("device", DEVICES)
def test_prefill_graph_steps_skip_sizes_and_stay_exact(device):
    """Sizes asked to be skipped (and, on a GPU, routed past) are never replayed: a step pads to the next size kept,
    and its outputs are the plain step's."""
    spec, model, caches = _model_and_cache("tiny-llama", device, torch.float32)
    backend = "triton" if device == "cuda" else "torch"
    graphs = PrefillGraphs(model, caches, block_size=4, max_tokens=64, max_seqs=4, max_context_len=spec.max_seq_len,
                           backend=backend, skip=[16, 32], route=device == "cuda")
    assert {16, 32} <= set(graphs.skipped) and set(graphs.skipped).isdisjoint(graphs.lookup)
    assert len(graphs.replay_time_s) == (len(graphs.sizes) if device == "cuda" else 0)
    for n in (5, 16, 20, 33, 64):
        b = graphs.padded_size(n)
        assert b >= n and b in graphs.sizes and (b not in graphs.skipped or b == graphs.sizes[-1])
    if device == "cpu":
        assert [graphs.padded_size(n) for n in (5, 16, 20, 33)] == [48, 48, 48, 48]
    steps = [([(5, 0)], []), ([(20, 9)], []), ([(7, 0), (3, 4)], [])]
    _check_same_as_plain(model, caches, graphs, steps, device, backend, spec)


def test_fits_refuses_prefill_and_oversized_steps():
    spec, model, caches = _model_and_cache("tiny-opt", "cpu", torch.float32)
    graphs = DecodeGraphs(model, caches, block_size=4, max_batch=4, max_context_len=64, backend="torch")
    kw = dict(block_size=4, num_blocks=64, vocab_size=spec.vocab_size, device="cpu", backend="torch")
    assert graphs.fits(synthetic_step([], [10, 20], **kw)[2])
    assert not graphs.fits(synthetic_step([(5, 0)], [10], **kw)[2])          # has a prefill
    assert not graphs.fits(synthetic_step([], [10] * 5, **kw)[2])            # batch 5 > 4
    assert not graphs.fits(synthetic_step([], [65], **kw)[2])                # context beyond the capture
    pg = PrefillGraphs(model, caches, block_size=4, max_tokens=32, max_seqs=2, max_context_len=64, backend="torch")
    assert pg.fits(synthetic_step([(20, 0), (12, 8)], [], **kw)[2])
    assert not pg.fits(synthetic_step([(20, 0)], [10], **kw)[2])             # has a decode
    assert not pg.fits(synthetic_step([(33, 0)], [], **kw)[2])               # 33 tokens > 32
    assert not pg.fits(synthetic_step([(5, 0)] * 3, [], **kw)[2])            # 3 sequences > 2
    assert not pg.fits(synthetic_step([(10, 60)], [], **kw)[2])              # 70 tokens of context > 64


def test_warmup_shapes_stay_within_limits():
    for max_tokens, max_ctx in ((8192, 2048), (256, 256), (16, 4096), (2048, 8192), (4096, 20), (8, 8)):
        for seqs, step in ((1, None), (32, None), (256, 2 * max_tokens), (3, max_tokens // 2)):
            shapes = warmup_shapes(max_tokens, max_ctx, seqs, step)
            for prefills, decodes in shapes:
                assert all(1 <= n <= max_tokens and c >= 0 and n + c <= max_ctx for n, c in prefills)
                assert len(prefills) <= max(seqs, 2)
                assert len(prefills) <= 2 or sum(n for n, _ in prefills) <= max(max_tokens, step or 0)
                assert all(1 <= c <= max_ctx for c in decodes)
            if seqs > 1 and max_tokens >= 2 * seqs:     # a multi-prompt step fills what the scheduler can, within a prompt
                multi = [p for p, _ in shapes if len(p) > 2 or len(p) == seqs]
                can = min(max(max_tokens, step or 0), min(seqs, 32) * max_ctx)
                assert multi and max(sum(n for n, _ in p) for p in multi) > can - max_ctx


def _scenario(device: str, **runtime):
    return kvsim.load_scenario({
        "name": "graphs", "model": "tiny-opt", "gpu": "a100-40gb", "dtype": "fp32",
        "engine": {"block_size": 4, "num_gpu_blocks": 300, "num_cpu_blocks": 100, "max_num_batched_tokens": 256,
                   "max_num_seqs": 16},
        "workload": {"dataset": "uniform", "prompt_len_range": [3, 30], "output_len_range": [4, 20],
                     "arrival": "burst", "num_requests": 12},
        "runtime": {"device": device, "attention_backend": "torch" if device == "cpu" else "triton", **runtime},
        "seed": 2})


@pytest.mark.parametrize("runtime", [{}, {"sampling": "random", "temperature": 0.8, "top_p": 0.9}])
def test_warm_up_does_not_change_tokens(runtime):
    """Warm-up writes garbage into free cache blocks, samples, copies and swaps blocks; the run after it
    must be unaffected (random sampling too: the warm-up draws from its own generator)."""
    model = build_model(get_model("tiny-opt"), dtype=torch.float32, device=torch.device("cpu"), weights="dummy")
    plain = RealEngine(_scenario("cpu", **runtime), model=model)
    warmed = RealEngine(_scenario("cpu", **runtime), model=model)
    assert warmed._warm_up() > 0 and warmed.cache.transfers == 0
    assert warmed.run().outputs == plain.run().outputs


def test_warm_up_runs_inside_the_constructor(monkeypatch):
    """Warm-up as the constructor calls it (before the runner and the graphs exist), forced on the CPU: a
    warm-up that read the runner raised there on the GPU while the tests above, calling it on a built
    engine, passed."""
    monkeypatch.setattr(RealEngine, "_warms_up", lambda self: True)
    model = build_model(get_model("tiny-opt"), dtype=torch.float32, device=torch.device("cpu"), weights="dummy")
    eng = RealEngine(_scenario("cpu", sampling="random"), model=model)
    assert eng.warmup_s > 0 and eng.cache.transfers == 0
    assert eng.run().outputs == RealEngine(_scenario("cpu", sampling="random"), model=model).run().outputs


def test_warm_up_runs_the_lm_head_at_every_sampled_row_count(monkeypatch):
    """The LM head runs eagerly on exactly the rows a step samples (one per sequence, up to max_num_seqs), and its
    GEMM kernel depends on that count: the warm-up must have run it at each count once, so no step's first use of
    a count pays a kernel load on the clock."""
    model = build_model(get_model("tiny-opt"), dtype=torch.float32, device=torch.device("cpu"), weights="dummy")
    seen: set[int] = set()
    head = model.compute_logits

    def spy(hidden):
        seen.add(int(hidden.shape[0]))
        return head(hidden)
    monkeypatch.setattr(model, "compute_logits", spy)
    eng = RealEngine(_scenario("cpu"), model=model)
    seen.clear()
    eng._warm_up()
    assert seen >= set(range(1, eng.sc.engine.max_num_seqs + 1))


@pytest.mark.parametrize("runtime", [{}, {"sampling": "random", "temperature": 0.8, "top_p": 0.9}])
def test_logits_rows_padded_to_the_graph_sizes_give_the_same_tokens(monkeypatch, runtime):
    """With decode graphs the LM head runs on the sampled rows padded to the next graph batch size (the runner's
    ``logit_sizes``); the padding rows' logits are dropped, so every token (random draws too) is what the unpadded
    head gives, and every LM head call has a graph size of rows."""
    model = build_model(get_model("tiny-opt"), dtype=torch.float32, device=torch.device("cpu"), weights="dummy")
    plain = RealEngine(_scenario("cpu", **runtime), model=model)
    assert plain.runner.logit_sizes is None                 # (no graphs on the CPU: nothing padded)
    want = plain.run().outputs
    sizes = [1, 2, 4, 8, 16]
    seen: list[int] = []
    head = model.compute_logits

    def spy(hidden):
        seen.append(int(hidden.shape[0]))
        return head(hidden)
    eng = RealEngine(_scenario("cpu", **runtime), model=model)
    eng.runner.logit_sizes = sizes
    monkeypatch.setattr(model, "compute_logits", spy)
    res = eng.run()
    assert res.outputs == want and res.info["logits_graph_rows"] is True
    assert seen and set(seen) <= set(sizes) and 16 in seen and any(n < 16 for n in seen)
    # runtime.pad_logits=false: the runner keeps no sizes even where decode graphs exist
    from kvsim.engine.cuda_graphs import DecodeGraphs
    from kvsim.engine.runner import ModelRunner
    graphs = DecodeGraphs(model, eng.cache.gpu, block_size=4, max_batch=16, max_context_len=64, backend="torch",
                          capture=False)
    args = (model, eng.cache, eng.kv, {})
    assert ModelRunner(*args, backend="torch", graphs=[graphs]).logit_sizes == graphs.sizes
    assert ModelRunner(*args, backend="torch", graphs=[graphs], pad_logits=False).logit_sizes is None


def _cls(x: int) -> str:            # how Triton specialises an integer argument
    return "one" if x == 1 else "16k" if x % 16 == 0 else "other"


@pytest.mark.parametrize("bs", [8, 16, 64])
def test_warmup_shapes_cover_every_specialisation_of_the_attention_kernels(bs):
    """Prompts x block-table width and decode rows x width, each in every class (1, 16k, neither) the
    scheduler can produce: a missing pair compiled a kernel in the middle of a static batch on the H200."""
    shapes = warmup_shapes(8192, 8192, 256, 16384, block_size=bs)
    prefill = {(_cls(len(p)), _cls(max(-(-(n + c) // bs) for n, c in p))) for p, _ in shapes if p}
    decode = {(_cls(len(d)), _cls(max(-(-c // bs) for c in d))) for p, d in shapes if d and not p}
    every = {(a, b) for a in ("one", "16k", "other") for b in ("one", "16k", "other")}
    assert prefill == every and decode == every
    few = warmup_shapes(8192, 8192, 4, None, block_size=bs)              # 4 sequences at most: no 16-prompt step
    assert max(len(p) for p, _ in few) <= 4


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_engine_tokens_equal_with_and_without_graphs():
    model = build_model(get_model("tiny-opt"), dtype=torch.float32, device=torch.device("cuda"), weights="dummy")
    eager = RealEngine(_scenario("cuda", cuda_graphs=False), model=model).run()
    eng = RealEngine(_scenario("cuda"), model=model)
    graphed = eng.run()
    assert graphed.info["cuda_graph_steps"] > 0 and eager.info["cuda_graph_steps"] == 0
    assert graphed.info["cuda_graph_prefill_tokens"]                # prefill graphs were captured too
    assert graphed.outputs == eager.outputs
    # routing (the default) timed every prefill graph; what it skipped are captured sizes, never the largest
    tokens, skipped = graphed.info["cuda_graph_prefill_tokens"], graphed.info["cuda_graph_prefill_skip"]
    assert len(graphed.info["cuda_graph_prefill_replay_ms"]) == len(tokens)
    assert set(skipped) <= set(tokens[:-1])
    wide = RealEngine(_scenario("cuda", cuda_graph_prefill_skip=list(tokens[:-1])), model=model).run()  # all as the largest
    assert wide.info["cuda_graph_prefill_skip"] == list(tokens[:-1]) and wide.outputs == eager.outputs


def test_synthetic_step_gives_sequences_distinct_blocks_when_it_can():
    kw = dict(block_size=4, vocab_size=100, device="cpu", backend="torch", generator=torch.Generator().manual_seed(0))
    _, _, meta = synthetic_step([(24, 100), (40, 0)], [9, 9], num_blocks=124, **kw)
    used = [meta.prefill_block_tables[0, :31], meta.prefill_block_tables[1, :10], meta.decode_block_tables[:, :3]]
    flat = torch.cat([u.reshape(-1) for u in used]).tolist()
    assert len(flat) == len(set(flat))
    _, _, meta = synthetic_step([], [9] * 50, num_blocks=8, **kw)              # more than the cache: reuse
    assert meta.decode_block_tables.max() < 8


def test_decode_graph_partitions_follow_the_model_not_max_model_len():
    """Decode graphs size split-KV partitions for the model's longest sequence, whatever the engine's
    ``max_model_len`` (the capture's ``max_context_len``) is, so one profile prices every limit."""
    spec, model, caches = _model_and_cache("tiny-llama", "cpu", torch.float32)
    for limit in (16, 64, spec.max_seq_len):
        graphs = DecodeGraphs(model, caches, block_size=4, max_batch=4, max_context_len=limit, backend="torch")
        assert graphs.split_ref_len == spec.max_seq_len
        assert graphs._meta(4).decode_split_ref_len == spec.max_seq_len
        assert graphs._meta(4).max_decode_context_len == limit
    short = DecodeGraphs(model, caches, block_size=4, max_batch=4, max_context_len=64, backend="torch",
                         split_ref_len=32)            # a diagnostic's shorter partitions (step_replay --split-ref-len)
    assert short.split_ref_len == 32 and short._meta(4).decode_split_ref_len == 32


def test_synthetic_steps_launch_the_decode_kernel_on_prompts_as_the_runner_does():
    """Warm-up and calibration must make the launches the engine makes: its runner sends a prompt step's
    one-token sequences to the decode kernel (the kernel then compiled on the clock, mid-run, when warm-up
    steps did not)."""
    kw = dict(block_size=4, num_blocks=64, vocab_size=100, device="cpu", backend="torch")
    assert synthetic_step([(5, 0), (1, 8)], [], **kw)[2].single_rows_decode is MIXED_DECODE_KERNEL
    assert synthetic_step([(5, 0)], [], mixed_decode_kernel=True, **kw)[2].single_rows_decode
    assert not synthetic_step([(5, 0)], [], mixed_decode_kernel=False, **kw)[2].single_rows_decode
    assert not synthetic_step([], [9, 9], mixed_decode_kernel=True, **kw)[2].single_rows_decode


@pytest.mark.parametrize("kv_heads, sms, max_ctx", [(8, 132, 8192), (40, 132, 2048), (8, 132, 32768), (8, 114, 4096)])
def test_warmup_shapes_cover_every_split_of_eager_decode(kv_heads, sms, max_ctx):
    """Eager decode splits long contexts into partitions; the reduce kernel compiles per power-of-two width of
    the split count and both kernels per class of it (1, 16k, neither): every (width, class) that serving can
    reach at any rows and context must come up in the warm-up (an H100 Mistral-7B-SWA run compiled 3 kernels
    mid-run, its contexts past the warm-up's 1,500 tokens)."""
    import triton

    from kvsim.kernels._attn_decode import choose_num_splits

    def key(rows, ctx):
        n = choose_num_splits(rows, kv_heads, ctx, sms, 64)
        return None if n <= 1 else (max(2, triton.next_power_of_2(n)), _cls(n))
    serving = {key(r, c) for r in range(1, 257) for c in range(16, max_ctx + 1, 16)} - {None}
    warm = {key(len(d), max(d)) for p, d in warmup_shapes(2048, max_ctx, 256, 2048) if d and not p} - {None}
    assert serving and serving <= warm, sorted(serving - warm)


def test_the_split_kv_setting_reaches_the_kernels_and_keeps_graphs_apart(monkeypatch):
    """runtime.mixed_decode_split switches the varlen decode kernel's split-KV for the run (a module switch the
    kernels read at capture and launch), and graphs captured under one setting are never lent to the other."""
    from kvsim.kernels import varlen_decode
    monkeypatch.setattr(varlen_decode, "SPLIT", False)
    model = build_model(get_model("tiny-opt"), dtype=torch.float32, device=torch.device("cpu"), weights="dummy")
    on = RealEngine(_scenario("cpu", attention_backend="triton", mixed_decode_split=True), model=model)
    assert varlen_decode.SPLIT is True
    off = RealEngine(_scenario("cpu", attention_backend="triton", mixed_decode_split=False), model=model)
    assert varlen_decode.SPLIT is False
    assert on._parts_key(on._graph_settings()) != off._parts_key(off._graph_settings())
    RealEngine(_scenario("cpu", mixed_decode_split=True), model=model)      # torch attention: no kernel switched
    assert varlen_decode.SPLIT is False
