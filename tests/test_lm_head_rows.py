"""benchmarks/engine/lm_head_rows.py: the LM head timed by rows, at each count and padded to the decode graph's
batch size (plumbing on the CPU; the times mean nothing here)."""
from __future__ import annotations

import pytest

from tests._scripts import load_script

pytest.importorskip("torch")


def test_rows_parse_and_each_row_count_is_timed_at_its_graph_size(tmp_path):
    L = load_script("benchmarks/engine/lm_head_rows.py")
    assert L.parse_rows("1-4,9,3") == [1, 2, 3, 4, 9]
    for bad in ("0-3", "5-2", "x"):
        with pytest.raises(SystemExit):
            L.parse_rows(bad)
    import torch
    res = L.measure("tiny-llama", [1, 3, 5, 9, 17], 2, torch.device("cpu"))
    assert [(r["rows"], r["graph_rows"]) for r in res] == [(1, 1), (3, 4), (5, 8), (9, 16), (17, 24)]
    assert all(r["own_ms"] > 0 and r["padded_ms"] > 0 for r in res)
