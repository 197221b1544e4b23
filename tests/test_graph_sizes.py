"""kvsim.graph_sizes: the captured sizes a measured grid shows beaten by a larger one."""
from __future__ import annotations


def test_sizes_a_larger_captured_size_beats_are_reported_with_their_fastest_larger_size():
    from kvsim.graph_sizes import beaten_sizes
    tokens = [16, 32, 48, 64, 96, 128]
    times = [1.00, 1.01, 1.30, 1.10, 1.05, 1.50]      # 48 beaten by 96 (fastest larger), 64 by 96 within 5%
    assert beaten_sizes(tokens, times) == [[48, 96], [64, 96]]
    assert beaten_sizes(tokens, times, margin=0.05) == [[48, 96]]       # 1.05 is not 5% under 1.10
    assert beaten_sizes(tokens, sorted(times)) == []                      # a monotone grid: none
    assert beaten_sizes([], []) == []
