"""benchmarks/engine/spread_slopes.py: decode steps' pricing error against their spread, by row count (CPU)."""
from __future__ import annotations

from tests._scripts import load_script


def test_spread_slopes_recover_a_planted_longest_row_term():
    # steps whose engine - price is 0.1 + 0.8 ms per 1,000 tokens of spread (and nothing per mean context), noisy:
    # the fit must find 0.8 within its standard errors, and skip row counts with too few steps
    import numpy as np
    import pandas as pd
    S = load_script("benchmarks/engine/spread_slopes.py")
    rng = np.random.default_rng(0)
    mean = rng.uniform(100, 900, 400)
    top = mean + rng.uniform(0, 800, 400)
    res = 0.1 + 0.8 * (top - mean) / 1e3 + rng.normal(0, 0.05, 400)
    steps = pd.DataFrame({"n": 12, "b": 16, "mean": mean, "top": top, "res_ms": res})
    few = pd.DataFrame({"n": 5, "b": 8, "mean": mean[:10], "top": top[:10], "res_ms": res[:10]})
    t = S.slopes(pd.concat([steps, few]))
    assert list(t.n) == [12]
    r = t.iloc[0]
    assert abs(r.c_spread - 0.8) < 4 * r.c_spread_se and r.c_spread_se < 0.05
    assert abs(r.c_mean) < 4 * r.c_mean_se
    assert S.split_note("opt-13b", 16) == "unsplit" and S.split_note("opt-13b", 8) == "split"
    assert S.split_note("llama-3-8b", 32) == "split"
