"""Sliding window vs full attention in ``kvsim paper``: the window model holds less KV per request."""
from __future__ import annotations

import pandas as pd

from kvsim.report import paper_window


def test_window_model_holds_no_more_kv_per_request_than_full():
    rows = [paper_window.point((m, 0.5, ["workload.num_requests=12"])) for m in paper_window.MODELS]
    w, f = rows
    assert w["kv_cache_gib"] == f["kv_cache_gib"]             # same shapes, same budget
    assert w["kv_per_req_max_mib"] <= f["kv_per_req_max_mib"]
    # every prompt is longer than the 4,096-token window, so the window model holds strictly less on average
    assert w["mean_prompt_len"] > 4096 and w["kv_per_req_mean_mib"] < f["kv_per_req_mean_mib"]
    df = pd.DataFrame(rows)
    m = paper_window.measure({"window": df}, 0.1)
    assert set(m["models"]) == set(paper_window.MODELS)
    text = "\n".join(paper_window.summary_lines(m))
    assert "Mistral-7B-SWA" in text and "Why:" in text
