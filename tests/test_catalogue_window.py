"""Sliding-window catalogue entries: per-layer windows from sliding_window + layer_pattern."""
import pytest

from kvsim.catalogue import get_model, load_models
from kvsim.errors import KvsimError


def test_window_models():
    assert set(get_model("Mistral-7B-SWA").layer_windows()) == {4096}
    g = get_model("google/gemma-2-9b")
    w = g.layer_windows()
    assert len(w) == 42 and w[0] == 4096 and w[1] == 0 and w.count(0) == 21
    assert get_model("Mistral-7B").layer_windows() == (0,) * 32
    assert get_model("mistralai/Mistral-7B-v0.1").sliding_window == 0   # the alias keeps full attention


@pytest.mark.parametrize("extra, msg", [("layer_pattern: [sliding]", "needs a sliding_window"),
                                        ("sliding_window: 8, layer_pattern: [local]", "layer_pattern"),
                                        ("sliding_window: -1", "sliding_window")])
def test_bad_window_fields(tmp_path, extra, msg):
    p = tmp_path / "m.yaml"
    p.write_text("models:\n  - {name: X, arch: llama, num_layers: 2, hidden_size: 8, num_heads: 2, num_kv_heads: 1,"
                 f" head_dim: 4, ffn_hidden_size: 8, vocab_size: 8, max_seq_len: 16, {extra}}}\n")
    with pytest.raises(KvsimError, match=msg):
        load_models(p)
