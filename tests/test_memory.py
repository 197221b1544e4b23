"""KV memory budget: vLLM-style arithmetic, paper sanity numbers, errors."""
import pytest

from kvsim.catalogue import get_gpu, get_model
from kvsim.errors import KvsimError
from kvsim.memory import GiB, RUNTIME_RESERVE_BYTES, activation_peak_bytes, kv_budget

OPT13 = get_model("OPT-13B")
A100_40 = get_gpu("A100-40GB")


def test_opt13b_on_a100_40gb_leaves_paper_like_kv():
    b = kv_budget(OPT13, A100_40, block_size_tokens=16)
    assert b.usable_bytes == int(40 * GiB * 0.9)
    assert 23.5 * GiB < b.weight_bytes < 24.5 * GiB          # ~26 GB in the paper's Fig. 1
    assert RUNTIME_RESERVE_BYTES < b.activation_peak_bytes < 3 * GiB
    assert 7 * GiB < b.kv_cache_bytes < 11 * GiB
    assert b.kv_cache_bytes == b.usable_bytes - b.weight_bytes - b.activation_peak_bytes
    assert b.block_bytes == 16 * 819200
    assert b.num_gpu_blocks == b.kv_cache_bytes // b.block_bytes
    assert b.kv_capacity_tokens == 16 * b.num_gpu_blocks
    assert b.num_cpu_blocks == 0


def test_block_count_scales_inversely_with_block_size():
    b1 = kv_budget(OPT13, A100_40, block_size_tokens=1)
    b16 = kv_budget(OPT13, A100_40, block_size_tokens=16)
    assert b16.num_gpu_blocks == b1.num_gpu_blocks // 16
    assert b1.kv_capacity_tokens - b16.kv_capacity_tokens < 16


def test_swap_space_is_per_gpu_cpu_blocks():
    b = kv_budget(OPT13, A100_40, block_size_tokens=16, swap_space_bytes=4 * GiB)
    assert b.num_cpu_blocks == 4 * GiB // (16 * 819200) == 327


def test_utilization_and_activation_knobs_move_kv():
    lo = kv_budget(OPT13, A100_40, block_size_tokens=16, gpu_memory_utilization=0.8)
    hi = kv_budget(OPT13, A100_40, block_size_tokens=16, gpu_memory_utilization=0.95)
    assert hi.kv_cache_bytes - lo.kv_cache_bytes == hi.usable_bytes - lo.usable_bytes
    big = kv_budget(OPT13, A100_40, block_size_tokens=16, max_num_batched_tokens=8192, max_num_seqs=512)
    assert big.activation_peak_bytes > hi.activation_peak_bytes and big.num_gpu_blocks < hi.num_gpu_blocks


def test_activation_estimate_components():
    m = OPT13
    t = 2048
    expected = (3 * t * 5120 * 2 + t * 2 * 20480 * 2 + 2 * 256 * 50272 * 4 + RUNTIME_RESERVE_BYTES)
    assert activation_peak_bytes(m, max_num_batched_tokens=t, max_num_seqs=256) == expected
    # TP splits the MLP intermediate
    assert activation_peak_bytes(m, tensor_parallel=4) < activation_peak_bytes(m)


def test_opt175b_single_a100_errors_with_tp_hint():
    m = get_model("OPT-175B")
    with pytest.raises(KvsimError) as e:
        kv_budget(m, A100_40, block_size_tokens=16)
    msg = str(e.value)
    assert e.value.field == "model" and "\n" not in msg
    assert "OPT-175B weights need 325.2 GiB per GPU but A100-40GB has 36.0 GiB usable" in msg
    assert "gpu_memory_utilization=0.9; use tensor_parallel >= 12" in msg
    # and the hint is right: tp=12 fits the weights, tp=8 (the next smaller valid one) does not
    assert m.weight_bytes(2, 12) <= 36 * GiB < m.weight_bytes(2, 8)


def test_opt175b_fits_at_tp8_on_a100_80gb():
    b = kv_budget(get_model("OPT-175B"), get_gpu("A100-80GB"), block_size_tokens=16, tensor_parallel=8)
    assert b.block_bytes == 16 * get_model("OPT-175B").kv_bytes_per_token(2) // 8
    assert 20 * GiB < b.kv_cache_bytes < 40 * GiB and b.num_gpu_blocks > 1000


def test_tp_gives_more_kv_per_gpu_share():
    b1 = kv_budget(OPT13, get_gpu("A100-80GB"), block_size_tokens=16)
    b2 = kv_budget(OPT13, get_gpu("A100-80GB"), block_size_tokens=16, tensor_parallel=2)
    assert b2.weight_bytes < b1.weight_bytes / 2 * 1.01
    assert b2.kv_capacity_tokens > 2 * b1.kv_capacity_tokens


def test_no_room_for_a_block_names_utilization():
    with pytest.raises(KvsimError) as e:
        kv_budget(OPT13, A100_40, block_size_tokens=16, gpu_memory_utilization=0.62)
    assert e.value.field == "gpu_memory_utilization" and "less than one KV block" in str(e.value)


@pytest.mark.parametrize("kw,field", [
    (dict(block_size_tokens=0), "block_size"),
    (dict(block_size_tokens=16, tensor_parallel=0), "tensor_parallel"),
    (dict(block_size_tokens=16, tensor_parallel=3), "tensor_parallel"),     # 40 heads
    (dict(block_size_tokens=16, gpu_memory_utilization=0.0), "gpu_memory_utilization"),
    (dict(block_size_tokens=16, gpu_memory_utilization=1.2), "gpu_memory_utilization"),
    (dict(block_size_tokens=16, swap_space_bytes=-1), "swap_space"),
])
def test_bad_arguments(kw, field):
    with pytest.raises(KvsimError) as e:
        kv_budget(OPT13, A100_40, **kw)
    assert e.value.field == field


def test_gqa_tp_must_divide_or_multiply_kv_heads():
    m = get_model("Llama-3-70B")   # 64 heads, 8 kv heads
    assert kv_budget(m, get_gpu("H100"), block_size_tokens=16, tensor_parallel=16).block_bytes == \
        16 * 2 * 80 * 1 * 128 * 2
    with pytest.raises(KvsimError, match="tensor_parallel"):
        kv_budget(get_model("Llama-2-70B"), get_gpu("H100"), block_size_tokens=16, tensor_parallel=3)
