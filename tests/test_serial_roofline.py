"""benchmarks/engine/serial_roofline.py: a step's kernels each at their own roofline, one after another (CPU)."""
from __future__ import annotations

from tests._scripts import load_script

BW, RATE = 3.0e12, 750e12           # a card's measured copy bandwidth and GEMM rate


def _row(kind, rows=0, ctx=0, chunk=0, prompts=None):
    r = {"kind": kind, "decode_rows": rows, "ctx": ctx, "chunk": chunk}
    if prompts:
        r["prompts"] = prompts
    return r


def test_serial_roofline_is_at_least_each_ceiling_and_the_sum_of_its_kernels():
    S = load_script("benchmarks/engine/serial_roofline.py")
    from kvsim.catalogue import get_model
    spec = get_model("llama-3-8b")
    cost = S.serial_model("llama-3-8b", BW, RATE)
    lin = spec.linear_params_per_layer(1) * spec.num_layers
    head = spec.vocab_size * spec.hidden_size
    kv_tok = spec.kv_bytes_per_token(2)
    for row in (_row("mixed", 64, 1024, 448), _row("mixed", 16, 1024, 256), _row("decode", 32, 1024),
                _row("prefill", chunk=2000), _row("prefill", chunk=512, prompts=4)):
        t = S.serial_roofline_ms(cost, row) / 1e3
        tokens = row["chunk"] + row["decode_rows"]
        flops = 2 * lin * tokens
        weights = 2 * (lin + head) + kv_tok * row["decode_rows"] * row["ctx"]
        assert t >= max(flops / RATE, weights / BW) * (1 - 1e-9)
        # serial: the linear layers' own max plus the KV read, never less than either one alone
        assert t >= (max(flops / RATE, 2 * lin / BW) + kv_tok * row["decode_rows"] * row["ctx"] / BW) * (1 - 1e-9)
        assert t < 2 * max(flops / RATE, weights / BW) + 1e-3


def test_serial_roofline_grows_with_decode_rows_and_with_context():
    S = load_script("benchmarks/engine/serial_roofline.py")
    cost = S.serial_model("opt-13b", BW, RATE)
    ms = [S.serial_roofline_ms(cost, _row("mixed", n, c, 256)) for n, c in ((8, 512), (16, 512), (16, 2048))]
    assert ms[0] < ms[1] < ms[2]
