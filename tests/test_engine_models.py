"""The engine's OPT and LLaMA models against Hugging Face's, on the paged KV cache (CPU).

Each check builds a tiny random HF model (fp32, eager attention), perturbs every
parameter so biases and norms are non-trivial, loads its state dict into ours and
compares logits (max abs diff < 1e-4) for whole-prompt prefill, chunked prefill,
decode steps and one mixed prefill+decode step, with block size 4, lengths ending
mid-block and shuffled physical blocks. Attention metadata is built by hand here.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from kvsim.catalogue import ModelSpec  # noqa: E402
from kvsim.engine.attention import AttnMetadata  # noqa: E402
from kvsim.engine.models import build_model, load_hf_state_dict  # noqa: E402
from kvsim.engine.models.llama import family_defaults  # noqa: E402
from kvsim.errors import KvsimError  # noqa: E402

BS = 4          # block size
NUM_BLOCKS = 40
TOL = 1e-4
OPT_SPEC = ModelSpec(name="tiny-opt", arch="opt", num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=4,
                     head_dim=16, ffn_hidden_size=128, vocab_size=256, max_seq_len=128)
LLAMA_SPEC = ModelSpec(name="tiny-llama", arch="llama", num_layers=2, hidden_size=64, num_heads=4,
                       num_kv_heads=2, head_dim=16, ffn_hidden_size=96, vocab_size=256, max_seq_len=128)
THETA = 1000.0  # not the family default (10000): exercises the override


# -- helpers -------------------------------------------------------------------
def make_meta(prefills, decodes, backend="torch"):
    """``prefills``: [(block_row, ctx_len, new_len)]; ``decodes``: [(block_row, context_len_incl_new)]."""
    slots, qsl = [], [0]
    for row, ctx, n in prefills:
        slots += [row[p // BS] * BS + p % BS for p in range(ctx, ctx + n)]
        qsl.append(qsl[-1] + n)
    for row, ctx in decodes:
        slots.append(row[(ctx - 1) // BS] * BS + (ctx - 1) % BS)
    width = max([len(r) for r, *_ in prefills + decodes] + [1])

    def table(rows):
        t = torch.zeros(len(rows), width, dtype=torch.int32)
        for i, r in enumerate(rows):
            t[i, :len(r)] = torch.tensor(r, dtype=torch.int32)
        return t

    i32 = lambda xs: torch.tensor(xs, dtype=torch.int32)  # noqa: E731
    return AttnMetadata(
        num_prefill_tokens=qsl[-1], num_decode_tokens=len(decodes),
        slot_mapping=torch.tensor(slots, dtype=torch.int64), prefill_query_start=i32(qsl),
        prefill_context_lens=i32([c for _, c, _ in prefills]), prefill_block_tables=table([p[0] for p in prefills]),
        max_prefill_query_len=max([n for *_, n in prefills] + [0]),
        decode_context_lens=i32([c for _, c in decodes]), decode_block_tables=table([d[0] for d in decodes]),
        max_decode_context_len=max([c for _, c in decodes] + [0]), backend=backend)


class Paged:
    """KV caches plus a shuffled pool of physical blocks handed out to sequences."""

    def __init__(self, model, seed=0):
        shape = (NUM_BLOCKS, BS, model.num_kv_heads, model.head_dim)
        self.caches = [(torch.full(shape, float("nan")), torch.full(shape, float("nan")))
                       for _ in range(model.num_layers)]
        self.free = torch.randperm(NUM_BLOCKS, generator=torch.Generator().manual_seed(seed)).tolist()

    def row(self, length):
        return [self.free.pop() for _ in range(-(-length // BS))]


def step(model, paged, tokens, positions, prefills, decodes, backend="torch"):
    meta = make_meta(prefills, decodes, backend)
    hidden = model(torch.tensor(tokens), torch.tensor(positions), paged.caches, meta)
    return model.compute_logits(hidden)


def perturb(hf, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def hf_opt():
    cfg = transformers.OPTConfig(vocab_size=256, hidden_size=64, num_hidden_layers=2, ffn_dim=128,
                                 num_attention_heads=4, max_position_embeddings=128, word_embed_proj_dim=64,
                                 do_layer_norm_before=True, dropout=0.0, attention_dropout=0.0,
                                 attn_implementation="eager")
    torch.manual_seed(0)
    hf = transformers.OPTForCausalLM(cfg).eval()
    perturb(hf, 1)
    return hf


def hf_llama(tie=False):
    cfg = transformers.LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                   rope_parameters={"rope_type": "default", "rope_theta": THETA},
                                   rms_norm_eps=1e-5, tie_word_embeddings=tie, attn_implementation="eager")
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    perturb(hf, 2)
    return hf


def ours(arch, hf):
    spec = OPT_SPEC if arch == "opt" else LLAMA_SPEC
    kw = {} if arch == "opt" else {"rope_theta": THETA, "rms_norm_eps": 1e-5}
    model = build_model(spec, dtype=torch.float32, device="cpu", **kw)
    load_hf_state_dict(model, hf.state_dict())
    return model


@pytest.fixture(scope="module", params=["opt", "llama"])
def pair(request):
    hf = hf_opt() if request.param == "opt" else hf_llama()
    return hf, ours(request.param, hf)


def seqs(n, length, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (length,), generator=g).tolist() for _ in range(n)]


def ref_logits(hf, tokens):
    with torch.no_grad():
        return hf(torch.tensor([tokens])).logits[0].float()


def close(a, b):
    assert a.shape == b.shape
    diff = (a - b).abs().max().item()
    assert diff < TOL, f"max abs diff {diff}"


# -- agreement with HF ---------------------------------------------------------
def test_whole_prompt_prefill(pair):
    hf, model = pair
    (toks,) = seqs(1, 11)
    paged = Paged(model)
    out = step(model, paged, toks, list(range(11)), [(paged.row(11), 0, 11)], [])
    ref = ref_logits(hf, toks)
    assert ref.abs().max() > 0.5  # logits are not trivially small
    close(out, ref)


def test_chunked_prefill_with_cached_context(pair):
    hf, model = pair
    (toks,) = seqs(1, 13, seed=4)
    paged = Paged(model, seed=1)
    row = paged.row(13)
    first = step(model, paged, toks[:6], list(range(6)), [(row, 0, 6)], [])
    second = step(model, paged, toks[6:], list(range(6, 13)), [(row, 6, 7)], [])
    ref = ref_logits(hf, toks)
    close(first, ref[:6])
    close(second, ref[6:])


def test_prefill_then_decode_steps(pair):
    hf, model = pair
    (toks,) = seqs(1, 10, seed=5)
    paged = Paged(model, seed=2)
    row = paged.row(10)
    ref = ref_logits(hf, toks)
    close(step(model, paged, toks[:7], list(range(7)), [(row, 0, 7)], []), ref[:7])
    for pos in (7, 8, 9):
        out = step(model, paged, [toks[pos]], [pos], [], [(row, pos + 1)])
        close(out, ref[pos:pos + 1])


def mixed_batch(model, paged, backend="torch"):
    """Two prefills (A fresh, B with 3 cached tokens) and two decodes (C at 5, D at 9) in one step."""
    a, b, c, d = seqs(4, 10, seed=6)
    ra, rb, rc, rd = paged.row(6), paged.row(7), paged.row(6), paged.row(10)
    step(model, paged, b[:3] + c[:5] + d[:9], [*range(3), *range(5), *range(9)],
         [(rb, 0, 3), (rc, 0, 5), (rd, 0, 9)], [], backend)
    out = step(model, paged, a[:6] + b[3:7] + [c[5], d[9]], [*range(6), *range(3, 7), 5, 9],
               [(ra, 0, 6), (rb, 3, 4)], [(rc, 6), (rd, 10)], backend)
    return out, (a, b, c, d)


def test_mixed_prefill_and_decode_in_one_step(pair):
    hf, model = pair
    out, (a, b, c, d) = mixed_batch(model, Paged(model, seed=3))
    close(out[:6], ref_logits(hf, a[:6]))
    close(out[6:10], ref_logits(hf, b[:7])[3:])
    close(out[10:11], ref_logits(hf, c[:6])[5:])
    close(out[11:12], ref_logits(hf, d)[9:])


def test_the_comparison_can_fail(pair):
    hf, model = pair
    (toks,) = seqs(1, 9, seed=7)
    paged = Paged(model)
    row = paged.row(9)
    step(model, paged, toks[:5], list(range(5)), [(row, 0, 5)], [])
    # a wrong context length (one cached token forgotten) must change the logits
    bad = step(model, paged, toks[5:], list(range(5, 9)), [(row, 4, 4)], [])
    with pytest.raises(AssertionError):
        close(bad, ref_logits(hf, toks)[5:])


def test_unfused_fallback_gives_the_same_answer(pair):
    hf, model = pair
    (toks,) = seqs(1, 6, seed=8)
    expect = step(model, Paged(model), toks, list(range(6)), [(Paged(model).row(6), 0, 6)], [])
    attn = model.model.decoder.layers[0].self_attn if model.spec.arch == "opt" else model.model.layers[0].self_attn
    old = attn.q_proj.weight
    attn.q_proj.weight = torch.nn.Parameter(old.detach().clone(), requires_grad=False)
    try:
        assert not attn.qkv.intact()
        paged = Paged(model)
        close(step(model, paged, toks, list(range(6)), [(paged.row(6), 0, 6)], []), expect)
    finally:
        attn.q_proj.weight = old
    assert attn.qkv.intact()


# -- checkpoints -----------------------------------------------------------------
@pytest.mark.parametrize("arch", ["opt", "llama"])
def test_checkpoint_dir_loads_and_checks_config(tmp_path, arch):
    hf = hf_opt() if arch == "opt" else hf_llama(tie=True)
    hf.save_pretrained(tmp_path)
    spec = OPT_SPEC if arch == "opt" else ModelSpec(**{**LLAMA_SPEC.__dict__, "tie_word_embeddings": True})
    model = build_model(spec, dtype=torch.float32, device="cpu", weights=str(tmp_path))
    if arch == "llama":
        assert model.rope_theta == THETA and model.rms_norm_eps == 1e-5   # taken from config.json
    (toks,) = seqs(1, 7, seed=9)
    paged = Paged(model)
    close(step(model, paged, toks, list(range(7)), [(paged.row(7), 0, 7)], []), ref_logits(hf, toks))
    wrong = ModelSpec(**{**spec.__dict__, "ffn_hidden_size": 32})
    with pytest.raises(KvsimError, match="ffn_hidden_size"):
        build_model(wrong, dtype=torch.float32, device="cpu", weights=str(tmp_path))


def test_state_dict_errors_name_the_key():
    model = build_model(LLAMA_SPEC, dtype=torch.float32, device="cpu")
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(KvsimError, match="model.layers.0.mlp.up_proj.weight"):
        load_hf_state_dict(model, {**sd, "model.layers.0.mlp.up_proj.weight": torch.zeros(3, 3)})
    with pytest.raises(KvsimError, match="model.bogus"):
        load_hf_state_dict(model, {**sd, "model.bogus": torch.zeros(1)})
    del sd["lm_head.weight"]   # untied: required
    with pytest.raises(KvsimError, match="lm_head.weight"):
        load_hf_state_dict(model, sd)


# -- dummy weights and defaults ------------------------------------------------------
@pytest.mark.parametrize("spec", [OPT_SPEC, LLAMA_SPEC], ids=["opt", "llama"])
def test_dummy_weights_deterministic_and_finite(spec):
    a = build_model(spec, dtype=torch.float32, device="cpu", seed=5)
    b = build_model(spec, dtype=torch.float32, device="cpu", seed=5)
    c = build_model(spec, dtype=torch.float32, device="cpu", seed=6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if "norm" not in k)
    assert all(torch.isfinite(t).all() for t in sa.values())
    norms = [t for k, t in sa.items() if "norm" in k and k.endswith("weight")]
    assert norms and all(torch.equal(t, torch.ones_like(t)) for t in norms)
    big = [t for k, t in sa.items() if t.dim() == 2]
    assert all(0.01 < t.std().item() < 0.03 for t in big)
    paged = Paged(a)
    out = step(a, paged, list(range(9)), list(range(9)), [(paged.row(9), 0, 9)], [])
    assert out.dtype == torch.float32 and out.shape == (9, 256) and torch.isfinite(out).all()
    assert (a.num_layers, a.num_kv_heads, a.head_dim, a.dtype) == (2, spec.num_kv_heads, 16, torch.float32)


@pytest.mark.parametrize("spec", [OPT_SPEC, LLAMA_SPEC], ids=["opt", "llama"])
def test_bfloat16_runs_close_to_float32(spec):
    m32 = build_model(spec, dtype=torch.float32, device="cpu", seed=3)
    m16 = build_model(spec, dtype=torch.bfloat16, device="cpu", seed=3)
    load_hf_state_dict(m16, m32.state_dict())   # casts on copy
    outs = []
    for m in (m32, m16):
        paged = Paged(m)
        paged.caches = [(k.to(m.dtype), v.to(m.dtype)) for k, v in paged.caches]
        outs.append(step(m, paged, list(range(9)), list(range(9)), [(paged.row(9), 0, 9)], []))
    assert outs[1].dtype == torch.float32
    assert (outs[0] - outs[1]).abs().max().item() < 0.05


def test_rope_theta_family_defaults():
    assert family_defaults("Llama-3-8B") == (500000.0, 1e-5)
    assert family_defaults("meta-llama/Meta-Llama-3-70B")[0] == 500000.0
    assert family_defaults("LLaMA-33B") == (10000.0, 1e-6)   # not Llama-3
    assert family_defaults("Llama-2-7B") == (10000.0, 1e-5)
    assert family_defaults("Mistral-7B")[0] == 1000000.0
    model = build_model(LLAMA_SPEC, dtype=torch.float32, device="cpu", rope_theta=123.0)
    assert model.rope_theta == 123.0


def test_opt_rejects_bad_shapes():
    with pytest.raises(KvsimError, match="num_kv_heads"):
        build_model(ModelSpec(**{**OPT_SPEC.__dict__, "num_kv_heads": 2}), dtype=torch.float32, device="cpu")


# -- the Triton kernels under the interpreter ------------------------------------------
TRITON_SCRIPT = textwrap.dedent("""
    import torch, sys
    sys.path.insert(0, {tests!r})
    from test_engine_models import LLAMA_SPEC, Paged, mixed_batch, TOL
    from kvsim.engine.models import build_model
    model = build_model(LLAMA_SPEC, dtype=torch.float32, device="cpu", seed=1)
    ref, _ = mixed_batch(model, Paged(model, seed=4), backend="torch")
    out, _ = mixed_batch(model, Paged(model, seed=4), backend="triton")
    diff = (out - ref).abs().max().item()
    print("diff", diff)
    assert diff < TOL, diff
""")


def test_triton_backend_under_interpreter_matches_torch_backend():
    pytest.importorskip("triton")
    script = TRITON_SCRIPT.format(tests=os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
