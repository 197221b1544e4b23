"""Catalogue: published shapes, derived sizes, tolerant lookup, validation on load."""
import pytest

from kvsim.catalogue import (GPUSpec, ModelSpec, get_gpu, get_model, list_gpus, list_models,
                             load_gpus, load_models)
from kvsim.errors import KvsimError

REQUIRED_MODELS = ["OPT-125M", "OPT-350M", "OPT-1.3B", "OPT-2.7B", "OPT-6.7B", "OPT-13B", "OPT-30B",
                   "OPT-66B", "OPT-175B", "LLaMA-7B", "LLaMA-13B", "LLaMA-33B", "LLaMA-65B",
                   "Llama-2-7B", "Llama-2-13B", "Llama-2-70B", "Llama-3-8B", "Llama-3-70B", "Mistral-7B"]


def test_required_entries_present():
    assert set(REQUIRED_MODELS) <= set(list_models())
    assert {"A100-40GB", "A100-80GB", "H100-80GB", "H200-141GB", "L4"} <= set(list_gpus())


def test_opt13b_kv_bytes_per_token_is_800kb():
    assert get_model("OPT-13B").kv_bytes_per_token(2) == 819200 == 800 * 1024


def test_gqa_kv_bytes():
    assert get_model("Llama-3-8B").kv_bytes_per_token(2) == 131072
    assert get_model("Mistral-7B").kv_bytes_per_token(2) == 131072
    # Llama-2-70B: 80 layers x 8 kv heads x 128 x 2 (K,V) x 2 bytes
    assert get_model("Llama-2-70B").kv_bytes_per_token(2) == 2 * 80 * 8 * 128 * 2


@pytest.mark.parametrize("name,expected", [
    ("OPT-13B", 12.9e9), ("Llama-2-7B", 6.74e9), ("Llama-3-8B", 8.03e9), ("OPT-175B", 175e9),
    ("Llama-2-70B", 69.0e9), ("Llama-3-70B", 70.6e9), ("Mistral-7B", 7.24e9), ("LLaMA-65B", 65.3e9),
    ("OPT-125M", 125e6), ("OPT-6.7B", 6.7e9)])
def test_num_params_matches_published(name, expected):
    assert get_model(name).num_params() == pytest.approx(expected, rel=0.01)


def test_published_shapes_spot_checks():
    m = get_model("Llama-3-70B")
    assert (m.num_layers, m.hidden_size, m.num_heads, m.num_kv_heads, m.ffn_hidden_size,
            m.vocab_size, m.max_seq_len, m.arch) == (80, 8192, 64, 8, 28672, 128256, 8192, "llama")
    m = get_model("OPT-175B")
    assert (m.num_layers, m.hidden_size, m.num_heads, m.max_seq_len, m.arch) == (96, 12288, 96, 2048, "opt")
    assert get_model("Llama-2-13B").max_seq_len == 4096
    assert get_model("opt-13b").tie_word_embeddings and not get_model("llama-2-7b").tie_word_embeddings


def test_tensor_parallel_splits_weights_and_kv():
    m = get_model("OPT-13B")
    assert m.kv_bytes_per_token(2, tp=4) == m.kv_bytes_per_token(2) // 4
    w1, w4 = m.weight_bytes(2, 1), m.weight_bytes(2, 4)
    assert w1 / 4 < w4 < w1 / 4 * 1.02        # only norms/biases/positions are replicated
    assert m.linear_params_per_layer(4) * 4 == m.linear_params_per_layer(1)


def test_kv_heads_replicate_when_tp_exceeds_them():
    m = get_model("Llama-3-70B")  # 8 kv heads
    assert m.kv_bytes_per_token(2, tp=8) == 2 * 80 * 1 * 128 * 2
    assert m.kv_bytes_per_token(2, tp=16) == m.kv_bytes_per_token(2, tp=8)


def test_flops_per_token_linear():
    m = get_model("Llama-2-7B")
    lin = 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008) + 32000 * 4096
    assert m.flops_per_token_linear() == 2 * lin
    assert m.weight_bytes(2) == 2 * m.num_params()


@pytest.mark.parametrize("alias", ["opt-13b", "OPT-13B", "facebook/opt-13b", "OPT_13B", " opt 13b "])
def test_model_lookup_tolerant(alias):
    assert get_model(alias).name == "OPT-13B"


def test_model_lookup_hf_names():
    assert get_model("meta-llama/Llama-2-7b-hf").name == "Llama-2-7B"
    assert get_model("meta-llama/Meta-Llama-3-8B").name == "Llama-3-8B"
    assert get_model("huggyllama/llama-7b").name == "LLaMA-7B"
    assert get_model("mistralai/Mistral-7B-v0.1").name == "Mistral-7B"
    assert get_model("facebook/opt-1.3b").name == "OPT-1.3B"


def test_unknown_model_error():
    with pytest.raises(KvsimError) as e:
        get_model("gpt-5")
    assert e.value.field == "model" and "unknown model 'gpt-5'" in str(e.value) and "OPT-13B" in str(e.value)


@pytest.mark.parametrize("alias,name", [("a100-40gb", "A100-40GB"), ("A100-80GB", "A100-80GB"),
                                        ("NVIDIA A100-SXM4-40GB", "A100-40GB"), ("h100", "H100-80GB"),
                                        ("NVIDIA H100 80GB HBM3", "H100-80GB"), ("h200", "H200-141GB"),
                                        ("l4", "L4")])
def test_gpu_lookup(alias, name):
    assert get_gpu(alias).name == name


def test_gpu_ambiguous_and_unknown():
    with pytest.raises(KvsimError, match="ambiguous gpu 'A100'.*A100-40GB, A100-80GB") as e:
        get_gpu("A100")
    assert e.value.field == "gpu"
    with pytest.raises(KvsimError, match="unknown gpu 'V100'") as e:
        get_gpu("V100")
    assert e.value.field == "gpu"


def test_gpu_datasheet_numbers():
    a = get_gpu("A100-40GB")
    assert isinstance(a, GPUSpec)
    assert a.memory_bytes == 40 * 2**30 and a.hbm_bandwidth_Bps == 1555e9 and a.peak_fp16_flops == 312e12
    h = get_gpu("H100-80GB")
    assert h.hbm_bandwidth_Bps == 3.35e12 and h.host_link_Bps == 2 * a.host_link_Bps
    assert get_gpu("L4").interconnect_Bps < a.interconnect_Bps


def test_catalogue_validation_missing_field(tmp_path):
    p = tmp_path / "models.yaml"
    p.write_text("models:\n  - {name: Tiny, arch: opt, num_layers: 2, hidden_size: 64, num_heads: 4,\n"
                 "     num_kv_heads: 4, head_dim: 16, ffn_hidden_size: 256, max_seq_len: 128}\n")
    with pytest.raises(KvsimError, match="models.yaml: Tiny: missing field 'vocab_size'"):
        load_models(p)


def test_catalogue_validation_bad_values(tmp_path):
    p = tmp_path / "models.yaml"
    base = ("models:\n  - {name: Tiny, arch: %s, num_layers: %s, hidden_size: 64, num_heads: 4,\n"
            "     num_kv_heads: 4, head_dim: 16, ffn_hidden_size: 256, vocab_size: 100, max_seq_len: 128}\n")
    p.write_text(base % ("gpt", 2))
    with pytest.raises(KvsimError, match="'arch' must be one of opt, llama"):
        load_models(p)
    p.write_text(base % ("opt", -1))
    with pytest.raises(KvsimError, match="'num_layers' must be a positive integer"):
        load_models(p)
    p.write_text(base % ("llama", 2))
    spec, _ = load_models(p)["Tiny"]
    assert isinstance(spec, ModelSpec) and spec.kv_bytes_per_token(2) == 2 * 2 * 4 * 16 * 2
    g = tmp_path / "gpus.yaml"
    g.write_text("gpus:\n  - {name: X, memory_mib: 1024, hbm_bandwidth_GBps: 100, peak_fp16_tflops: 10,\n"
                 "     host_link_GBps: 16}\n")
    with pytest.raises(KvsimError, match="gpus.yaml: X: missing field 'interconnect_GBps'"):
        load_gpus(g)
