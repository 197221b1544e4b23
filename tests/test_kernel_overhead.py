"""Fig. 18a analogue read from the project's kernel benchmark CSV."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from kvsim.report.kernel_overhead import OPT13B_LIKE, RESULTS, card, fig18a_reading, paging_overhead


def _write(tmp_path, rows):
    cols = ["section", "model", "batch", "ctx", "block_size", "impl", "ms", "graph_ms"]
    pd.DataFrame(rows, columns=cols).to_csv(tmp_path / "decode_bench.csv", index=False)
    (tmp_path / "meta.json").write_text(json.dumps({"card": "Test GPU"}))


def test_overhead_is_paged_over_contiguous_with_repeats_averaged(tmp_path):
    m = OPT13B_LIKE
    _write(tmp_path, [
        ("grid", m, 8, 512, 16, "paged", 9.0, 1.1),
        ("grid", m, 8, 512, 16, "paged", 9.0, 1.3),        # repeats: mean 1.2
        ("grid", m, 8, 512, None, "contiguous", 9.0, 1.0),
        ("grid", m, 8, 512, 32, "paged", 9.0, 5.0),        # another block size: ignored
        ("grid", m, 8, 512, 16, "paged_nosplit", 9.0, 5.0),  # another variant: ignored
        ("grid", m, 32, 2048, 16, "paged", 2.2, None),     # no graph time: falls back to ms
        ("grid", m, 32, 2048, None, "contiguous", 2.0, None),
        ("blocksize", m, 32, 8192, 16, "paged", 9.0, 9.0),  # another section: ignored
        ("grid", "other", 8, 512, 16, "paged", 9.0, 9.0),
    ])
    t = paging_overhead(tmp_path).set_index(["batch", "ctx"])
    assert t.loc[(8, 512), "overhead"] == pytest.approx(0.2)
    assert t.loc[(32, 2048), "overhead"] == pytest.approx(0.1)
    r = fig18a_reading(tmp_path)
    assert r["card"] == "Test GPU" and r["shapes"] == 2
    assert r["max"] == pytest.approx(0.2) and r["max_shape"] == "batch 8 x ctx 512"


def test_committed_h200_results_give_a_reading():
    r = fig18a_reading()
    assert r["card"] == card(RESULTS) == "NVIDIA H200"
    assert r["shapes"] >= 10 and -0.1 < r["min"] <= r["median"] <= r["max"] < 0.5
