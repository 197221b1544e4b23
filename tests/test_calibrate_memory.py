"""What the calibration allocates fits the card at every block size: the copy and swap pools
(:func:`kvsim.calibrate.measure.copy_swap_blocks`) drop the block counts whose pools would not fit."""
from __future__ import annotations

import pytest

pytest.importorskip("torch")

from kvsim.calibrate.measure import COPY_BLOCKS, COPY_MEMORY_SHARE, copy_swap_blocks  # noqa: E402

GiB = 2**30


def opt13b_block_bytes(bs: int) -> int:
    return 2 * 40 * bs * 40 * 128 * 2          # K and V, 40 layers, 40 heads of 128, fp16


@pytest.mark.parametrize("bs", [1, 16, 64, 128, 256])
@pytest.mark.parametrize("gpu_free, host_free", [(55 * GiB, 100 * GiB), (110 * GiB, 8 * GiB), (2 * GiB, 1 * GiB)])
def test_pools_fit_the_free_memory_and_keep_two_points(bs, gpu_free, host_free):
    bb = opt13b_block_bytes(bs)
    got = copy_swap_blocks(COPY_BLOCKS, bb, gpu_free, host_free)
    assert got == sorted(got) and set(got) <= set(COPY_BLOCKS) and got[:2] == sorted(COPY_BLOCKS)[:2]
    for n in got[2:]:
        assert (2 * n + 8) * bb <= COPY_MEMORY_SHARE * gpu_free and n * bb <= COPY_MEMORY_SHARE * host_free
    dropped = [n for n in COPY_BLOCKS if n not in got]
    for n in dropped:        # only what does not fit is dropped
        assert (2 * n + 8) * bb > COPY_MEMORY_SHARE * gpu_free or n * bb > COPY_MEMORY_SHARE * host_free


def test_block_256_on_an_h100_drops_the_largest_counts_and_block_16_keeps_all():
    """OPT-13B beside its weights on an 80 GB H100 (~55 GiB free): the 520-block pool of block 256 asked for
    101.6 GiB; block 16's fits whole."""
    assert copy_swap_blocks(COPY_BLOCKS, opt13b_block_bytes(256), 55 * GiB, 100 * GiB) == [1, 4, 16]
    assert copy_swap_blocks(COPY_BLOCKS, opt13b_block_bytes(16), 55 * GiB, 100 * GiB) == COPY_BLOCKS


@pytest.mark.parametrize("sizes, want", [([1, 2, 4, 8, 16, 32, 64, 128, 256], 16), ([256], 256), ([128, 256], 128),
                                         ([1, 2, 4, 8, 32, 64], 8), ([8, 32], 8), ([1, 64], 64)])
def test_the_fits_run_at_the_block_size_nearest_16(sizes, want):
    """The overhead and serving fits' engine runs take the measured block size nearest 16 in ratio (smaller on a
    tie): block 256 alone asked 62.5 GiB for OPT-13B's fit on an 80 GB H100, where block 16's fits."""
    from kvsim.calibrate.profile import fit_block_size
    assert fit_block_size(sizes) == want
    assert fit_block_size(list(reversed(sizes))) == want
