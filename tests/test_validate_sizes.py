"""Differential validation by step size: decode steps by rows, prefill and mixed steps by prompt tokens."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kvsim.validate_sizes import MIN_STEPS, bin_labels, step_size_markdown, step_size_table


def frame(rows: list[tuple]) -> pd.DataFrame:
    """Iterations from (prefill_tokens, decode_seqs, duration_s, mem_used, running) tuples."""
    df = pd.DataFrame(rows, columns=["prefill_tokens", "decode_seqs", "duration_s", "mem_used", "running"])
    for c in ("swap_in_blocks", "swap_out_blocks", "cow_copies"):
        df[c] = 0
    df["batched_requests"] = df.decode_seqs + (df.prefill_tokens > 0)
    return df


def test_bins_cover_every_size_once():
    labels = bin_labels((1, 2, 4, 8))
    assert [lab for lab, _, _ in labels] == ["1", "2", "3-4", "5-8", ">8"]
    for size in range(1, 40):
        assert sum(lo <= size <= hi for _, lo, hi in labels) == 1


def test_a_divergence_shows_in_its_size_bin_only():
    """Small decode steps priced right, 9-16-row steps 5% fast: the bins say so, the kinds' mean would not."""
    eng = frame([(0, 2, 0.0050, 400, 2)] * 10 + [(0, 12, 0.0060, 4800, 12)] * 10 + [(100, 0, 0.0070, 900, 3)] * 6)
    sim = frame([(0, 2, 0.0050, 400, 2)] * 10 + [(0, 12, 0.0057, 4800, 12)] * 10 + [(100, 0, 0.0070, 900, 3)] * 6)
    t = step_size_table(sim, eng).set_index(["kind", "bin"])
    assert t.loc[("decode-only", "2")].rel_error_mean == pytest.approx(0.0)
    assert t.loc[("decode-only", "9-16")].rel_error_mean == pytest.approx(-0.05)
    assert t.loc[("decode-only", "9-16")].kv_per_running_measured == pytest.approx(400)
    assert t.loc[("prefill-only", "65-128")].kv_per_running_predicted == pytest.approx(300)
    assert len(t) == 3                       # bins with no steps on either side are left out
    md = step_size_markdown("s", step_size_table(sim, eng))
    assert "| 9-16 | 10 | 10 | 5.70 | 6.00 | 5.70 | 6.00 | -5.0% | 400 | 400 |" in md
    assert "## prefill-only (by prompt tokens)" in md and "## mixed" not in md


def test_too_few_steps_give_no_error_and_one_sided_bins_stay():
    eng = frame([(0, 3, 0.005, 300, 3)] * (MIN_STEPS - 1) + [(300, 4, 0.009, 900, 5)] * MIN_STEPS)
    sim = frame([(0, 3, 0.004, 300, 3)] * MIN_STEPS)
    t = step_size_table(sim, eng).set_index(["kind", "bin"])
    assert np.isnan(t.loc[("decode-only", "3-4")].rel_error_mean)
    mixed = t.loc[("mixed", "257-512")]
    assert mixed.steps_predicted == 0 and mixed.steps_measured == MIN_STEPS and np.isnan(mixed.mean_predicted_s)
    assert "| 3-4 | 5 | 4 |" in step_size_markdown("s", step_size_table(sim, eng))


def test_swap_and_copy_steps_are_not_binned_and_missing_columns_are_unknown():
    eng = frame([(0, 4, 0.005, 100, 4)] * 6)
    eng.loc[0, "swap_out_blocks"] = 3
    eng.loc[1, "cow_copies"] = 1
    t = step_size_table(eng.drop(columns=["running"]), eng)
    row = t.set_index(["kind", "bin"]).loc[("decode-only", "3-4")]
    assert row.steps_measured == 4 and row.steps_predicted == 4
    assert np.isnan(row.kv_per_running_predicted) and row.kv_per_running_measured == pytest.approx(25)
    assert step_size_table(frame([]), frame([])).empty
    assert "No decode, prefill or mixed steps" in step_size_markdown("s", step_size_table(frame([]), frame([])))


def test_outlier_steps_are_engine_steps_far_over_their_bins_typical_step():
    """A one-off stall (a kernel compiled mid-run) is listed with its step; ordinary spread is not. The
    typical step is the simulator's median in the bin, else the engine's own when the simulator has too few."""
    from kvsim.validate_sizes import OUTLIER_FACTOR, outlier_markdown, outlier_steps
    eng = frame([(0, 4, 0.0060, 400, 4)] * 20 + [(2000, 0, 0.070, 900, 9)] * MIN_STEPS + [(2040, 0, 0.600, 900, 9)]
                + [(0, 4, 0.0060 * (OUTLIER_FACTOR - 0.1), 400, 4)])
    eng["iter"] = np.arange(len(eng))
    eng["start_s"] = eng.duration_s.cumsum() - eng.duration_s
    sim = frame([(0, 4, 0.0061, 400, 4)] * 20 + [(2000, 0, 0.050, 900, 9)] * 2)   # too few prefills: engine's median
    out = outlier_steps(sim, eng)
    assert list(out["iter"]) == [20 + MIN_STEPS]
    r = out.iloc[0]
    assert r.kind == "prefill-only" and r.bin == "1025-2048" and r["size"] == 2040
    assert r.typical_from == "engine" and r.typical_s == pytest.approx(0.070) and r.ratio == pytest.approx(0.6 / 0.07)
    md = outlier_markdown(out)
    assert "1 step(s), 0.530 s beyond" in md and "| 25 |" in md
    assert "None." in outlier_markdown(outlier_steps(sim, eng.drop(index=20 + MIN_STEPS)))
    eng.loc[0, "duration_s"] = 0.0061 * OUTLIER_FACTOR * 1.5                     # a decode stall: simulator's median
    out = outlier_steps(sim, eng)
    assert list(out["iter"]) == [20 + MIN_STEPS, 0] and out.typical_from.tolist() == ["engine", "simulator"]
