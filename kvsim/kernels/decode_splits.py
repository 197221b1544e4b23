"""How a decode-attention launch is cut into flash-decoding partitions, and the kernels' window argument: the
host side of :mod:`kvsim.kernels._attn_decode` (which re-exports it), plain Python so planners and the engine's
warm-up read it without triton."""
from __future__ import annotations

SPLIT_TARGET_WAVES = 8
"""When splitting, aim for ``SPLIT_TARGET_WAVES * num_sms`` programs (about 1,000 on 132 SMs): the
paged kernel needs more programs in flight than the contiguous one to hide its block-table loads
(H200 sweep, kernels/NOTES.md: 8 beat 4 and 16)."""
NO_SPLIT_WAVES = 4
"""Never split once ``num_seqs * num_kv_heads >= NO_SPLIT_WAVES * num_sms``: there the single pass
already streams at copy bandwidth and the partial write + reduce launch only add time (H200:
batch 128 x 8 KV heads ran 0-11 % slower split in two)."""
MIN_SPLIT_TOKENS = 256
"""Never cut a partition shorter than this: below it the partial write + reduce launch cost more
than the extra parallelism buys."""
MAX_SPLITS = 64
NO_WINDOW = 1 << 30
"""The kernels' window argument for full attention (``ctx - NO_WINDOW`` is below every position)."""


def kernel_window(window: int) -> int:
    """The kernels' ``win`` argument: ``window`` tokens, or :data:`NO_WINDOW` for 0 (full attention)."""
    return int(window) if window and window > 0 else NO_WINDOW


def choose_num_splits(num_seqs: int, num_kv_heads: int, max_ctx: int, num_sms: int,
                      block_n: int, target_waves: int = SPLIT_TARGET_WAVES) -> int:
    """The documented flash-decoding heuristic: how many context partitions to use.

    ``programs = num_seqs * num_kv_heads``. If that reaches ``min(NO_SPLIT_WAVES, target_waves) *
    num_sms`` the single-pass kernel is used (returns 1). Otherwise split just enough to reach
    ``target_waves * num_sms`` programs, keeping every partition >= ``MIN_SPLIT_TOKENS`` positions
    and at most ``MAX_SPLITS`` partitions. Examples on 132 SMs, 8 KV heads, defaults: batch 1 x
    8192 tokens -> 32 splits of 256; batch 8 x 8192 -> 17; batch 32 x 8192 -> 5; batch 66 or more
    -> 1; any batch at <= 256 tokens -> 1.
    """
    programs = max(num_seqs * num_kv_heads, 1)
    if programs >= min(NO_SPLIT_WAVES, target_waves) * num_sms or max_ctx <= MIN_SPLIT_TOKENS:
        return 1
    want = -(-target_waves * num_sms // programs)
    cap = max(max_ctx // max(MIN_SPLIT_TOKENS, block_n), 1)
    return int(max(1, min(want, cap, MAX_SPLITS)))


def split_partition(num_seqs: int, num_kv_heads: int, ref_ctx: int, num_sms: int, block_n: int,
                    target_waves: int = SPLIT_TARGET_WAVES) -> int:
    """Partition length (positions, a multiple of ``block_n``) that :func:`choose_num_splits` gives a
    batch whose longest context is ``ref_ctx``; 0 when that batch runs unsplit.

    A CUDA graph fixes the partitioning at capture. Taking it from a reference length (the model's
    longest sequence) rather than from the engine's ``max_model_len`` makes the kernel's work for a
    given batch the same whatever ``max_model_len`` is: a shorter limit only drops trailing
    partitions, which would have been empty. (With ``max_model_len`` 2,048 instead of 8,192, a
    batch of 16 Llama-3-8B rows had partitions of 256 instead of 960 positions and ran ~8 % faster
    than the profile measured at 8,192 said: validation v19 on the H200.)"""
    n = choose_num_splits(num_seqs, num_kv_heads, ref_ctx, num_sms, block_n, target_waves)
    if n <= 1:
        return 0
    per = -(-ref_ctx // n)
    return -(-per // block_n) * block_n
