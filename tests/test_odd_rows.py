"""benchmarks/engine/odd_rows.py: whole decode steps at every row count, each at its decode graph's batch size
(plumbing on the CPU, where no graph is captured; the times mean nothing here)."""
from __future__ import annotations

import pytest

from tests._scripts import load_script

pytest.importorskip("torch")


def test_every_row_count_and_context_is_timed_at_its_graph_size(tmp_path):
    O = load_script("benchmarks/engine/odd_rows.py")
    import torch
    res = O.measure("tiny-llama", [1, 3, 5, 9], [20, 40], torch.device("cpu"))
    assert [(r["rows"], r["graph_rows"], r["ctx"]) for r in res] == [
        (1, 1, 20), (3, 4, 20), (5, 8, 20), (9, 16, 20), (1, 1, 40), (3, 4, 40), (5, 8, 40), (9, 16, 40)]
    assert all(r["ms"] > 0 for r in res)


def test_bad_contexts_are_refused_in_one_line(tmp_path, monkeypatch, capsys):
    O = load_script("benchmarks/engine/odd_rows.py")
    for bad in ("x", "0,64"):
        monkeypatch.setattr("sys.argv", ["odd_rows.py", "--cpu", "--ctx", bad, "--out", str(tmp_path)])
        with pytest.raises(SystemExit) as e:
            O.main()
        assert str(e.value).startswith("error: --ctx")
