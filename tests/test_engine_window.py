"""The real engine on CPU with a sliding-window model (Tiny-Llama-SWA: layer 0 slides over 24 tokens,
layer 1 attends fully): greedy tokens equal Hugging Face's (a Qwen2 with the same layer types and zero
q/k/v biases is exactly that LLaMA), blocks leave the window as decode advances and none leaks,
preemption by recompute and chunked prefill keep the tokens, under policies v0 and v1, and the Triton
kernels (interpreter) agree with torch."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")
transformers = pytest.importorskip("transformers")

import kvsim  # noqa: E402
from kvsim.catalogue import get_model  # noqa: E402
from kvsim.core.tokens import synthetic_prompt_tokens  # noqa: E402
from kvsim.engine.engine import RealEngine  # noqa: E402
from kvsim.engine.models import build_model, load_hf_state_dict  # noqa: E402
from kvsim.errors import KvsimError  # noqa: E402

NAME = "Tiny-Llama-SWA"


def hf_pair(sliding: bool = True):
    spec = get_model(NAME)
    torch.manual_seed(0)
    kinds = ["sliding_attention" if w and sliding else "full_attention" for w in spec.layer_windows()]
    cfg = transformers.Qwen2Config(
        vocab_size=spec.vocab_size, hidden_size=spec.hidden_size, intermediate_size=spec.ffn_hidden_size,
        num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads, max_position_embeddings=spec.max_seq_len, rope_theta=10000.0,
        tie_word_embeddings=False, use_sliding_window=sliding, sliding_window=spec.sliding_window,
        max_window_layers=0, layer_types=kinds, attn_implementation="eager")
    hf = transformers.Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for key, p in hf.named_parameters():
            if key.endswith(".bias"):
                p.zero_()
    ours = build_model(spec, dtype=torch.float32, device=torch.device("cpu"), weights="dummy")
    load_hf_state_dict(ours, {k: v for k, v in hf.state_dict().items() if not k.endswith(".bias")})
    return hf, ours


def scenario(**over):
    data = {"name": "engine-window", "model": NAME, "gpu": "a100-40gb", "dtype": "fp32",
            "engine": {"block_size": 4, "num_gpu_blocks": 400, "max_num_batched_tokens": 256, "max_num_seqs": 16},
            "workload": {"dataset": "uniform", "prompt_len_range": [10, 40], "output_len_range": [10, 30],
                         "arrival": "burst", "num_requests": 6},
            "runtime": {"device": "cpu", "attention_backend": "torch"}, "seed": 1}
    return kvsim.load_scenario(data, [f"{k}={v}" for k, v in over.items()])


@pytest.fixture(scope="module")
def models():
    return hf_pair()


def run(model, **over):
    eng = RealEngine(scenario(**over), model=model)
    res = eng.run()
    assert res.summary["requests_finished"] == res.summary["requests_total"]
    assert eng.kv.blocks_in_use() == 0                 # no block leaked
    eng.kv.check_invariants()
    return res, eng


def hf_tokens(hf, spec):
    prompt = torch.tensor([synthetic_prompt_tokens(spec, hf.config.vocab_size).tolist()])
    with torch.no_grad():
        ref = hf.generate(prompt, max_new_tokens=spec.output_len, min_new_tokens=spec.output_len,
                          do_sample=False, eos_token_id=None, pad_token_id=0)
    return ref[0, prompt.shape[1]:].tolist()


@pytest.mark.parametrize("policy", ["v0", "v1"])
def test_greedy_matches_hf_with_sliding_layers(models, policy):
    hf, ours = models
    res, eng = run(ours, **{"engine.policy": policy})
    assert eng.kv.window_frees > 0, "contexts must outgrow the window"
    for spec in eng.setup.requests:
        assert res.outputs[spec.request_id][0] == hf_tokens(hf, spec), spec
    full_hf, _ = hf_pair(sliding=False)                # the window matters: full attention differs
    assert any(res.outputs[s.request_id][0] != hf_tokens(full_hf, s) for s in eng.setup.requests)


@pytest.mark.parametrize("policy", ["v0", "v1"])
def test_recompute_preemption_keeps_tokens(models, policy):
    ample, _ = run(models[1], **{"workload.num_requests": 8, "engine.policy": policy})
    tight, _ = run(models[1], **{"workload.num_requests": 8, "engine.num_gpu_blocks": 40, "engine.policy": policy})
    assert tight.summary["preemptions"] > 0
    assert tight.outputs == ample.outputs


@pytest.mark.parametrize("policy", ["v0", "v1"])
def test_chunked_mixed_steps_keep_tokens(models, policy):
    # v1 always chunks; its chunks free the blocks behind their window before the prompt ends
    ref, _ = run(models[1])
    res, eng = run(models[1], **{"engine.scheduler": "chunked", "engine.max_num_batched_tokens": 24,
                                 "engine.max_num_seqs": 8, "engine.policy": policy})
    its = res.iterations
    assert ((its.prefill_tokens > 0) & (its.decode_seqs > 0)).sum() > 0, "the scenario must produce mixed steps"
    assert res.outputs == ref.outputs


@pytest.mark.parametrize("field, value", [("engine.allocator", "orca_oracle"),
                                          ("engine.enable_prefix_caching", "true"), ("workload.n", "2")])
def test_unsupported_settings_are_one_line_errors(field, value):
    with pytest.raises(KvsimError) as err:
        RealEngine(scenario(**{field: value}))
    assert err.value.field == field and "\n" not in str(err.value)


TRITON_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from tests.test_engine_window import hf_pair, run
    _, ours = hf_pair()
    ref, _ = run(ours, **{{"workload.num_requests": 3, "workload.output_len_range": "[8,14]"}})
    for policy in ("v0", "v1"):
        tri, _ = run(ours, **{{"workload.num_requests": 3, "workload.output_len_range": "[8,14]",
                              "runtime.attention_backend": "triton", "engine.policy": policy,
                              "engine.max_num_batched_tokens": 16, "engine.scheduler": "chunked"}})
        assert tri.outputs == ref.outputs, (policy, tri.outputs, ref.outputs)
    print("ok")
""")


def test_triton_backend_under_interpreter_matches_torch():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": root}
    res = subprocess.run([sys.executable, "-c", TRITON_SCRIPT.format(root=root)], env=env, capture_output=True,
                         text=True, timeout=600, cwd=root)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
