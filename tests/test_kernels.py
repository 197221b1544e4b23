"""Attention kernels vs the float64 torch references (kvsim.kernels).

Without CUDA the Triton kernels run in Triton's CPU interpreter (``TRITON_INTERPRET=1``, set
here before triton is imported) on tiny shapes; bf16 dots are upcast to fp32 there (the 3.9
interpreter miscomputes bf16 ``tl.dot``; see kvsim/kernels/_common.py), so CPU bf16 runs check
indexing, masking and softmax but not the bf16 tensor-core path, which the ``gpu`` tests cover.
Every input is fresh random data, every output buffer is poisoned with NaN first.
"""
import pytest

from tests._triton_interp import (CUDA, DEV, STALE_TRITON, needs_cuda,  # noqa: F401 (fixture)
                                  only_in_a_usable_process, torch)  # sets up Triton first

from kvsim.errors import KvsimError  # noqa: E402
from kvsim.kernels import (DecodeConfig, contiguous_decode_attention,  # noqa: E402
                           paged_decode_attention, paged_prefill_attention, reference, write_kv)
from kvsim.kernels._attn_decode import choose_num_splits, split_partition  # noqa: E402
from kvsim.kernels.varlen_decode import paged_varlen_decode_attention, single_token_seqs  # noqa: E402
from kvsim.kernels.inputs import (make_decode_problem, page_kv, poison, randn,  # noqa: E402
                                  rel_err, run_file_in_fresh_interpreter, tolerance)

SMALL = DecodeConfig(block_n=16)  # several tiles even for tiny CPU contexts
LENS = [1, 17, 40, 5, 16]  # length 1, mid-block ends, an exact multiple of 16


@pytest.mark.skipif(not STALE_TRITON, reason="this process can run the kernels itself")
def test_rerun_in_fresh_interpreter():
    assert run_file_in_fresh_interpreter(__file__) == 0


def _decode_case(lens, hkv, group, dim, dtype, bs, *, seed, num_splits=None, config=SMALL,
                 check_contiguous=False):
    q, k, v, ctx = make_decode_problem(lens, hkv * group, hkv, dim, dtype, DEV, seed=seed)
    pk = page_kv(k, v, ctx, bs, seed=seed + 1)
    ref = reference.paged_decode(q, pk.k_cache, pk.v_cache, pk.block_table, ctx)
    out = poison(torch.empty_like(q))
    paged_decode_attention(q, pk.k_cache, pk.v_cache, pk.block_table, ctx, out=out,
                           num_splits=num_splits, config=config)
    err = rel_err(out, ref)
    assert err < tolerance(dtype), f"paged rel err {err}"
    if check_contiguous:
        out2 = poison(torch.empty_like(q))
        contiguous_decode_attention(q, k, v, ctx, out=out2, num_splits=num_splits, config=config)
        err2 = rel_err(out2, ref)
        assert err2 < tolerance(dtype), f"contiguous rel err {err2}"
    return out


@pytest.mark.parametrize("dim", [64, 80])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("group", [1, 4])
@pytest.mark.parametrize("bs", [1, 2, 16, 256])
def test_paged_decode_matches_reference(bs, group, dtype, dim):
    _decode_case(LENS, 2, group, dim, dtype, bs, seed=bs * 7 + group + dim, check_contiguous=bs == 16)


@pytest.mark.parametrize("num_splits", [2, 3, 8])
@pytest.mark.parametrize("group", [1, 4])
def test_split_kv_forced(num_splits, group):
    # partitions of 16..32 tokens: length-1 and length-5 sequences leave most partitions empty
    _decode_case(LENS + [70], 2, group, 64, torch.float16, 16, seed=num_splits + 10 * group,
                 num_splits=num_splits, check_contiguous=True)


@pytest.mark.parametrize("pipe", [0, 1, 2, 3])
@pytest.mark.parametrize("bs,num_splits", [(1, 1), (16, 3), (2, None)])
def test_pipeline_variants(pipe, bs, num_splits):
    # PIPE 1/2 prefetch one/two tiles ahead: masks past the partition end must hold
    _decode_case(LENS + [70], 2, 4, 80, torch.float16, bs, seed=pipe + bs, num_splits=num_splits,
                 config=DecodeConfig(block_n=16, pipe=pipe), check_contiguous=True)


def test_split_kv_default_block_n_crosses_256_block():
    _decode_case([300, 3, 257], 1, 4, 64, torch.float16, 256, seed=5, num_splits=2,
                 config=DecodeConfig())


def test_same_kv_viewed_with_block_size_1_and_16_gives_same_output():
    q, k, v, ctx = make_decode_problem(LENS, 8, 2, 64, torch.float16, DEV, seed=11)
    outs = []
    for bs in (1, 16):
        pk = page_kv(k, v, ctx, bs, seed=bs)
        out = poison(torch.empty_like(q))
        outs.append(paged_decode_attention(q, pk.k_cache, pk.v_cache, pk.block_table, ctx,
                                           out=out, config=SMALL))
    outs.append(contiguous_decode_attention(q, k, v, ctx, out=poison(torch.empty_like(q)), config=SMALL))
    assert rel_err(outs[0], outs[1]) < 1e-6 and rel_err(outs[0], outs[2]) < 1e-6


def test_choose_num_splits_heuristic():
    assert choose_num_splits(1, 8, 8192, 132, 64) == 32       # one long sequence: split
    assert choose_num_splits(8, 8, 8192, 132, 64) == 17
    assert choose_num_splits(32, 8, 8192, 132, 64) == 5
    assert choose_num_splits(66, 8, 8192, 132, 64) == 1       # >= 4 waves of programs already
    assert choose_num_splits(64, 8, 8192, 132, 64) == 3
    assert choose_num_splits(8, 8, 8192, 132, 64, target_waves=4) == 9
    assert choose_num_splits(1, 8, 256, 132, 64) == 1         # too short to be worth it
    assert choose_num_splits(1, 1, 10 ** 6, 132, 64) == 64    # capped


def test_split_partition_comes_from_the_reference_length():
    # batch 16 of Llama-3-8B (8 KV heads) on 132 SMs: 9 partitions for 8,192 positions -> 960 each
    assert split_partition(16, 8, 8192, 132, 64) == 960
    assert split_partition(16, 8, 2048, 132, 64) == 256          # what max_ctx 2,048 alone would pick
    assert split_partition(66, 8, 8192, 132, 64) == 0            # unsplit batch
    for b in (1, 3, 8, 16, 32, 64):
        per = split_partition(b, 8, 8192, 132, 64)
        assert per % 64 == 0 and (per == 0 or per >= 256)


def test_split_ref_len_fixes_partitions_and_matches_reference():
    # partitions of the reference length (256 here), not max_ctx / num_splits (2 x 352 for 700)
    lens = [300, 3, 700]
    q, k, v, ctx = make_decode_problem(lens, 4, 1, 64, torch.float16, DEV, seed=41)
    pk = page_kv(k, v, ctx, 16, seed=42)
    ref = reference.paged_decode(q, pk.k_cache, pk.v_cache, pk.block_table, ctx)
    for kw in (dict(split_ref_len=8192), dict(split_ref_len=None), dict(split_ref_len=700)):
        out = poison(torch.empty_like(q))
        paged_decode_attention(q, pk.k_cache, pk.v_cache, pk.block_table, ctx, out=out, max_context_len=700,
                               config=SMALL, **kw)
        assert rel_err(out, ref) < tolerance(torch.float16), kw


def test_scale_and_torch_backend():
    q, k, v, ctx = make_decode_problem([9, 30], 4, 2, 64, torch.float16, DEV, seed=3)
    pk = page_kv(k, v, ctx, 4)
    ref = reference.paged_decode(q, pk.k_cache, pk.v_cache, pk.block_table, ctx, scale=0.3)
    for backend in ("triton", "torch"):
        out = paged_decode_attention(q, pk.k_cache, pk.v_cache, pk.block_table, ctx, 0.3,
                                     out=poison(torch.empty_like(q)), backend=backend)
        assert rel_err(out, ref) < tolerance(torch.float16)


def test_bad_inputs_raise_one_line_errors(monkeypatch):
    q, k, v, ctx = make_decode_problem([3], 4, 2, 64, torch.float16, DEV, seed=1)
    pk = page_kv(k, v, ctx, 4)
    bad_bs = torch.randn(4, 3, 2, 64, device=DEV).half()
    with pytest.raises(KvsimError, match="block_size"):
        paged_decode_attention(q, bad_bs, bad_bs, pk.block_table, ctx)
    with pytest.raises(KvsimError, match="num_kv_heads"):
        paged_decode_attention(q[:, :3], pk.k_cache, pk.v_cache, pk.block_table, ctx)
    with pytest.raises(KvsimError, match="backend"):
        paged_decode_attention(q, pk.k_cache, pk.v_cache, pk.block_table, ctx, backend="cuda")
    if not CUDA:
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(KvsimError, match="backend='torch'"):
            paged_decode_attention(q, pk.k_cache, pk.v_cache, pk.block_table, ctx)


def _prefill_case(ctx_lens, q_lens, hkv, group, dim, dtype, bs, seed, block_m=16, persistent=None,
                  single_decode=False, split=None, diag_split=None, block_n=16, num_warps=None, num_stages=None):
    """Write the new tokens with write_kv, then prefill; compare with a contiguous causal ref.
    ``single_decode``: the prefill kernel skips one-token sequences and the varlen decode kernel serves them."""
    total = [c + n for c, n in zip(ctx_lens, q_lens)]
    _, k, v, _ = make_decode_problem(total, hkv * group, hkv, dim, dtype, DEV, seed=seed)
    pk = page_kv(k, v, ctx_lens, bs, seed=seed, max_blocks=max(-(-t // bs) for t in total))
    # give every sequence blocks for its new tokens too (page_kv only placed the cached ones)
    gen = torch.Generator().manual_seed(seed)
    extra = sum(-(-t // bs) for t in total)
    pk.k_cache = torch.cat([pk.k_cache, randn((extra, bs, hkv, dim), dtype, DEV, gen)])
    pk.v_cache = torch.cat([pk.v_cache, randn((extra, bs, hkv, dim), dtype, DEV, gen)])
    base, fresh, slots, new_k, new_v = pk.k_cache.shape[0] - extra, 0, [], [], []
    for s, (c, n) in enumerate(zip(ctx_lens, q_lens)):
        for b in range(-(-c // bs), -(-(c + n) // bs)):
            pk.block_table[s, b] = base + fresh
            fresh += 1
        for p in range(c, c + n):
            slots.append(int(pk.block_table[s, p // bs]) * bs + p % bs)
            new_k.append(k[s, p])
            new_v.append(v[s, p])
    write_kv(torch.stack(new_k), torch.stack(new_v), pk.k_cache, pk.v_cache,
             torch.tensor(slots, dtype=torch.int32, device=DEV))
    q = randn((sum(q_lens), hkv * group, dim), dtype, DEV, gen)
    qsl = torch.tensor([0] + torch.cumsum(torch.tensor(q_lens), 0).tolist(), dtype=torch.int32, device=DEV)
    ctx = torch.tensor(ctx_lens, dtype=torch.int32, device=DEV)
    out = paged_prefill_attention(q, pk.k_cache, pk.v_cache, pk.block_table, qsl, ctx,
                                  out=poison(torch.empty_like(q)), block_m=block_m, block_n=block_n,
                                  persistent=persistent, skip_single=single_decode, diag_split=diag_split,
                                  num_warps=num_warps, num_stages=num_stages)
    if single_decode:      # the one-token sequences' rows are still NaN: the decode kernel must write them all
        assert torch.isnan(out).any() == (1 in q_lens)
        paged_varlen_decode_attention(q, pk.k_cache, pk.v_cache, pk.block_table, qsl, ctx, out=out, block_n=16,
                                      split=split)
    ref = torch.zeros(q.shape, dtype=torch.float64, device=DEV)
    for s, (c, n) in enumerate(zip(ctx_lens, q_lens)):
        a = int(qsl[s])
        mask = torch.arange(c + n, device=DEV)[None, :] <= (c + torch.arange(n, device=DEV))[:, None]
        ref[a:a + n] = reference._attend(q[a:a + n].double(), k[s, :c + n].double(),
                                         v[s, :c + n].double(), dim ** -0.5, mask)
    err = rel_err(out, ref)
    assert err < tolerance(dtype), f"prefill rel err {err}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("group", [1, 4])
@pytest.mark.parametrize("bs", [1, 16])
def test_paged_prefill_matches_reference(bs, group, dtype):
    # plain prompt (ctx 0), prefix hits ending mid-block, a 1-token chunk, a multi-tile query
    _prefill_case([0, 5, 16, 3], [7, 1, 20, 4], 2, group, 80 if group == 1 else 64, dtype, bs,
                  seed=bs + 3 * group)


@pytest.mark.parametrize("group", [1, 4])
def test_persistent_prefill_programs_cover_every_tile(group, monkeypatch):
    # 2 programs a KV head loop over the real tiles (many per program), the padding sequences have none
    import kvsim.kernels.prefill as prefill
    monkeypatch.setattr(prefill, "PERSISTENT_WAVES", 1)
    monkeypatch.setattr(prefill, "num_sms", lambda dev: 4)
    _prefill_case([0, 40, 99, 7, 250, 3, 0, 0], [33, 1, 1, 5, 1, 1, 0, 0], 2, group, 64, torch.float16, 16,
                  seed=21 + group, persistent=True)


@pytest.mark.parametrize("group", [1, 4])
@pytest.mark.parametrize("bs", [1, 16])
def test_unified_mixed_launch_matches_reference(bs, group):
    # one launch for a mixed step: a prefill chunk over cached context, decode rows (1 new token
    # over context - 1 cached), a 5-token chunk, and padding sequences with no new tokens (as the
    # CUDA-graph path leaves them); the flattened tile grid must map every tile to its sequence
    _prefill_case([0, 40, 99, 7, 250, 3, 0, 0], [33, 1, 1, 5, 1, 1, 0, 0], 2, group, 64, torch.float16, bs,
                  seed=11 + bs + group)


@pytest.mark.parametrize("persistent", [False, True])
@pytest.mark.parametrize("group", [1, 4])
@pytest.mark.parametrize("bs", [1, 16])
def test_mixed_step_decode_rows_through_the_decode_kernel(bs, group, persistent):
    # the same mixed step as above, its one-token sequences (decode rows, a one-token chunk over cached
    # context) served by the varlen decode kernel and skipped by the prefill kernel's tiles; padding
    # sequences with no new token must be written by neither
    _prefill_case([0, 40, 99, 7, 250, 3, 0, 0], [33, 1, 1, 5, 1, 1, 0, 0], 2, group, 64, torch.float16, bs,
                  seed=31 + bs + group, persistent=persistent, single_decode=True)


@pytest.mark.parametrize("balanced", [False, True])
@pytest.mark.parametrize("group", [1, 4])
def test_split_varlen_decode_merges_partitions_exactly(group, balanced, monkeypatch):
    # partitions of 16 positions: rows of 1, 41, 100 and 251 cached tokens cut into 1-16 pieces, merged;
    # balanced, the step's length (>= 16, a multiple of 16 here) is the same for every row
    import kvsim.kernels.varlen_split as vs
    monkeypatch.setattr(vs, "SPLIT_TOKENS", 16)
    monkeypatch.setattr(vs, "ALIGN", 16)
    monkeypatch.setattr(vs, "BALANCED", balanced)
    _prefill_case([0, 40, 99, 7, 250, 3, 0, 0], [33, 1, 1, 5, 1, 1, 0, 0], 2, group, 64, torch.float16, 16,
                  seed=51 + group, single_decode=True, split=True)


@pytest.mark.parametrize("split_tokens", [16, 512])
def test_split_steps_write_every_row_whether_or_not_a_row_is_cut(split_tokens, monkeypatch):
    # at 16 positions a partition, 17 positions (16 cached) are one partition of 17, not 16 + 1, written whole by
    # the split kernel, and 33 are two (16, 17), merged; at 512 no row is cut and the gated plain kernel serves
    # the step while the split kernels write nothing: each row must be the reference's either way, and the
    # chunk's rows and the padding sequence untouched by the decode path
    import kvsim.kernels.varlen_split as vs
    monkeypatch.setattr(vs, "SPLIT_TOKENS", split_tokens)
    monkeypatch.setattr(vs, "BALANCED", False)
    _prefill_case([16, 32, 5, 0, 0], [1, 1, 20, 1, 0], 2, 4, 64, torch.float16, 16,
                  seed=61 + split_tokens, single_decode=True, split=True)


@pytest.mark.parametrize("split", [False, True])
def test_engine_attention_of_a_mixed_step_through_the_decode_kernel(split, monkeypatch):
    # the engine's layer call (kvsim.engine.attention) on a mixed step in the unified layout: the prefill
    # kernel for the chunk, the varlen decode kernel (split or not) for the decode rows, offsets computed once
    # a step by with_step_tiles; against the float64 torch backend on the same caches
    from dataclasses import replace
    import kvsim.kernels.varlen_decode as vd
    import kvsim.kernels.varlen_split as vs
    from kvsim.engine.attention import as_unified, paged_attention, with_step_tiles
    from kvsim.engine.synthetic_step import synthetic_step
    monkeypatch.setattr(vd, "SPLIT", split)
    monkeypatch.setattr(vs, "SPLIT_TOKENS", 16)
    monkeypatch.setattr(vs, "BALANCED", False)      # fixed 16-position partitions: rows cut in up to 3
    gen = torch.Generator().manual_seed(7)
    _, _, meta = synthetic_step([(9, 20)], [1, 30, 47], block_size=4, num_blocks=64, vocab_size=32, device=DEV,
                                backend="triton", generator=gen)
    umeta = with_step_tiles(as_unified(meta, decode_kernel=True), 8, 2)
    assert umeta.single_seqs is not None and (umeta.single_split is not None) == split
    t = umeta.num_tokens
    q, k, v = (randn((t, h, 32), torch.float16, DEV, gen) for h in (8, 2, 2))
    kc, vc = (randn((64, 4, 2, 32), torch.float16, DEV, gen) for _ in range(2))
    got = paged_attention(q, k, v, kc.clone(), vc.clone(), umeta, 32 ** -0.5)
    want = paged_attention(q, k, v, kc.clone(), vc.clone(), replace(meta, backend="torch"), 32 ** -0.5)
    assert rel_err(got, want.double()) < tolerance(torch.float16)


def test_split_starts_count_partitions_of_listed_sequences_only():
    from kvsim.kernels.varlen_split import split_starts
    qsl = torch.tensor([0, 1, 4, 5, 5], dtype=torch.int32, device=DEV)      # lens 1, 3, 1, 0
    ctx = torch.tensor([15, 70, 32, 9], dtype=torch.int32, device=DEV)
    cu = split_starts(single_token_seqs(qsl), ctx, per=16)
    assert cu.tolist() == [0, 1, 3, 3, 3, 16]   # seq 0: 16 positions -> 1; seq 2: 33 -> 2 (16, 17); nothing else
    assert split_starts(single_token_seqs(qsl), ctx, window=8, per=16).tolist() == [0, 1, 2, 2, 2, 16]


@pytest.mark.parametrize("rows, ctx, programs, length", [
    (4, 2047, 66, 512),       # few long rows: the shortest partition, each row cut in 4
    (16, 4095, 66, 1024),     # 16 x 4,096 positions over 66 programs, rounded up to 64: each row cut in 4
    (32, 2047, 66, 1024),     # just under half the programs: still cut, in 2
    (64, 1023, 66, None),     # as many rows as programs: every row whole
    (33, 8191, 66, None),     # half the programs, however long the rows: whole
    (128, 511, 66, None),     # more rows than programs: whole
    (32, 2047, 200, 512),     # the same 32 rows on a card of 200 programs a KV head: cut in 4
])
def test_balanced_split_partitions_follow_the_work_per_program(rows, ctx, programs, length, monkeypatch):
    import kvsim.kernels.varlen_split as vs
    monkeypatch.setattr(vs, "BALANCED", True)
    length = length or vs.WHOLE
    qsl = torch.arange(rows + 2, dtype=torch.int32, device=DEV)       # rows one-token sequences, then a padding one
    qsl[-1] = rows
    lens = torch.full((rows + 1,), ctx, dtype=torch.int32, device=DEV)
    cu = vs.split_starts(single_token_seqs(qsl), lens, programs=programs)
    got = int(cu[-1])
    assert got == length and got % vs.ALIGN == 0 and got >= vs.SPLIT_TOKENS
    assert (int(cu[rows]) > rows) == (rows < vs.CUT_BELOW * programs)        # cut only below the gate
    assert int(cu[rows]) == rows * max(1, (ctx + 1) // got)        # whole partitions, the last one longer
    assert int(cu[rows]) <= max(rows, programs)             # never more items than programs or rows, whichever more
    monkeypatch.setattr(vs, "BALANCED", False)
    assert int(vs.split_starts(single_token_seqs(qsl), lens, programs=programs)[-1]) == vs.SPLIT_TOKENS


def test_varlen_decode_leaves_multi_token_rows_alone_and_checks_inputs():
    q, k, v, ctx = make_decode_problem([5, 9], 4, 2, 64, torch.float16, DEV, seed=3)
    pk = page_kv(k, v, ctx, 4, seed=4)
    qv = randn((4, 4, 64), torch.float16, DEV, torch.Generator().manual_seed(1))
    qsl = torch.tensor([0, 3, 4], dtype=torch.int32, device=DEV)      # sequence 0: 3 new tokens, 1: one
    out = poison(torch.empty_like(qv))
    paged_varlen_decode_attention(qv, pk.k_cache, pk.v_cache, pk.block_table, qsl, ctx - 1, out=out)
    assert torch.isnan(out[:3]).all() and not torch.isnan(out[3]).any()
    ref = reference.paged_decode(qv[3:], pk.k_cache, pk.v_cache, pk.block_table[1:], ctx[1:])
    assert rel_err(out[3:], ref) < tolerance(torch.float16)
    with pytest.raises(KvsimError, match="query_start_loc"):
        paged_varlen_decode_attention(qv, pk.k_cache, pk.v_cache, pk.block_table, qsl[:2], ctx - 1, out=out)


def test_single_token_seqs_compacts_in_order_with_the_count_last():
    qsl = torch.tensor([0, 1, 4, 5, 5, 6, 9], dtype=torch.int32, device=DEV)     # lens 1, 3, 1, 0, 1, 3
    assert single_token_seqs(qsl).tolist()[:3] == [0, 2, 4] and single_token_seqs(qsl).tolist()[-1] == 3
    assert single_token_seqs(torch.tensor([0, 2, 2], dtype=torch.int32, device=DEV)).tolist()[-1] == 0


def test_persistent_varlen_decode_programs_cover_every_sequence(monkeypatch):
    # 1 program a KV head walks all the one-token sequences of a step
    import kvsim.kernels.varlen_decode as vd
    monkeypatch.setattr(vd, "PERSISTENT_WAVES", 1)
    monkeypatch.setattr(vd, "num_sms", lambda dev: 2)
    _prefill_case([0, 40, 99, 7, 250, 3, 0], [3, 1, 1, 5, 1, 1, 0], 2, 1, 64, torch.float16, 16, seed=41,
                  single_decode=True)


# ----------------------------------------------------------------------------- GPU only
@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("pipe", [0, 1, 2, 3])
@pytest.mark.parametrize("bs", [1, 16, 256])
def test_gpu_decode_pipeline_variants(pipe, bs):
    _decode_case([1, 63, 64, 65, 3000, 5000], 8, 4, 96, torch.float16, bs, seed=pipe + bs,
                 num_splits=None, config=DecodeConfig(pipe=pipe), check_contiguous=True)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("dim,group", [(64, 4), (80, 4), (96, 4), (128, 1), (128, 4), (128, 8), (80, 1)])
@pytest.mark.parametrize("splits", [1, None])
def test_gpu_decode_dims_dtypes(splits, dim, group, dtype):
    # lengths 1 ... 4097; splits=None lets the heuristic split (6 seqs x 2 kv heads is few programs)
    _decode_case([1, 17, 1000, 4097, 333, 2048], 2, group, dim, dtype, 16, seed=dim + group,
                 num_splits=splits, config=DecodeConfig(), check_contiguous=splits is None)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("bs", [1, 2, 4, 8, 16, 32, 64, 128, 256])
@pytest.mark.parametrize("splits", [1, 7])
def test_gpu_decode_block_sizes(bs, splits):
    _decode_case([1, 255, 256, 257, 3000, 5000], 8, 4, 128, torch.bfloat16, bs, seed=bs,
                 num_splits=splits, config=DecodeConfig())


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dim,dtype", [(64, torch.float16), (96, torch.bfloat16), (128, torch.float16),
                                       (128, torch.bfloat16)])
@pytest.mark.parametrize("bs", [1, 16, 256])
def test_gpu_prefill(bs, dim, dtype):
    _prefill_case([0, 300, 17, 1000], [129, 64, 1, 300], 8, 4, dim, dtype, bs, seed=bs + dim,
                  block_m=64)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("launch", [(64, 64, 4, 2), (128, 64, 8, 3), (128, 32, 8, 2), (64, 128, 4, 3)])
@pytest.mark.parametrize("group", [1, 4])
def test_gpu_prefill_launches_and_diag_split(group, launch):
    # each launch the prefill_tiles.py sweep may pick, with the diagonal-only mask and without: prompts, chunks over
    # cached context (mid-block), decode rows in the unified launch
    m, n, w, s = launch
    for diag in (False, True):
        _prefill_case([0, 300, 17, 1000, 2047], [129, 64, 1, 300, 1], 8, group, 128, torch.float16, 16,
                      seed=m + n + group, block_m=m, block_n=n, num_warps=w, num_stages=s, diag_split=diag)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("group", [1, 4])
@pytest.mark.parametrize("bs", [16, 64])
def test_gpu_unified_mixed(bs, group):
    # a 512-token chunk over 1,000 cached tokens next to 40 decode rows of up to 3,000 tokens
    ctx = [1000] + [17 + 73 * i for i in range(40)] + [0]
    _prefill_case(ctx, [512] + [1] * 40 + [0], 8 if group == 1 else 2, group, 128, torch.float16, bs,
                  seed=bs + group, block_m=64)
    _prefill_case(ctx, [512] + [1] * 40 + [0], 8 if group == 1 else 2, group, 128, torch.float16, bs,
                  seed=bs + group, block_m=64, persistent=True)
    _prefill_case(ctx, [512] + [1] * 40 + [0], 8 if group == 1 else 2, group, 128, torch.float16, bs,
                  seed=bs + group, block_m=64, single_decode=True)
    _prefill_case(ctx, [512] + [1] * 40 + [0], 8 if group == 1 else 2, group, 128, torch.float16, bs,
                  seed=bs + group, block_m=64, single_decode=True, split=True)

