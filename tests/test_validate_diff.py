"""Differential validation views: step kinds (durations by kind) and the binned scheduler timeline."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kvsim.validate_diff import STEP_COLUMNS, classify_steps, step_kind_table, timeline, write_diff
from kvsim.validate_records import record_file

ROOT = Path(__file__).resolve().parents[1]


def steps(rows: list[tuple]) -> pd.DataFrame:
    """Iterations from (prefill_tokens, decode_seqs, swap_in, swap_out, cow, duration_s) tuples, back to back."""
    df = pd.DataFrame(rows, columns=["prefill_tokens", "decode_seqs", "swap_in_blocks", "swap_out_blocks",
                                     "cow_copies", "duration_s"])
    df["start_s"] = np.concatenate([[0.0], np.cumsum(df.duration_s.to_numpy())[:-1]])
    df["batched_requests"] = df.decode_seqs + (df.prefill_tokens > 0)
    df["batched_tokens"] = df.prefill_tokens + df.decode_seqs
    df["blocks_in_use"] = np.arange(len(df)) % 7 * 3
    df["preempted"] = (df.swap_out_blocks > 0).astype(int)
    return df


ENG = steps([(0, 4, 0, 0, 0, 0.010), (0, 4, 0, 0, 0, 0.020), (0, 5, 0, 0, 0, 0.030),   # decode-only
             (100, 0, 0, 0, 0, 0.050),                                                 # prefill-only
             (50, 3, 0, 0, 0, 0.040), (20, 2, 0, 0, 0, 0.060),                          # mixed
             (0, 3, 0, 8, 0, 0.100), (30, 2, 4, 0, 0, 0.200),                           # swap (wins over mixed)
             (0, 4, 0, 0, 2, 0.070)])                                                  # copy
SIM = steps([(0, 4, 0, 0, 0, 0.012), (0, 4, 0, 0, 0, 0.024),
             (100, 0, 0, 0, 0, 0.040),
             (0, 3, 0, 8, 0, 0.150),
             (0, 4, 0, 0, 2, 0.070), (0, 4, 0, 0, 3, 0.090)])


def test_classification_follows_tokens_then_swap_then_copy():
    assert list(classify_steps(ENG)) == ["decode-only"] * 3 + ["prefill-only"] + ["mixed"] * 2 + ["swap"] * 2 + \
        ["copy"]
    idle = steps([(0, 0, 0, 0, 0, 0.01), (0, 0, 0, 0, 3, 0.01)])
    assert list(classify_steps(idle)) == ["other", "copy"]


def test_step_kind_counts_means_and_errors():
    t = step_kind_table(SIM, ENG).set_index("kind")
    assert list(t.index) == ["decode-only", "prefill-only", "mixed", "swap", "copy"]
    assert t.steps_measured.tolist() == [3, 1, 2, 2, 1] and t.steps_predicted.tolist() == [2, 1, 0, 1, 2]
    d = t.loc["decode-only"]
    assert d.mean_measured_s == pytest.approx(0.020) and d.mean_predicted_s == pytest.approx(0.018)
    assert d.p50_measured_s == pytest.approx(0.020) and d.p90_measured_s == pytest.approx(0.028)
    assert d.rel_error_mean == pytest.approx(-0.1)
    assert t.loc["swap"].mean_measured_s == pytest.approx(0.150) and t.loc["swap"].rel_error_mean == pytest.approx(0)
    assert t.loc["copy"].rel_error_mean == pytest.approx(0.080 / 0.070 - 1)
    assert t.loc["prefill-only"].rel_error_mean == pytest.approx(-0.2)
    assert np.isnan(t.loc["mixed"].rel_error_mean) and np.isnan(t.loc["mixed"].mean_predicted_s)


def test_missing_column_makes_kind_absent_not_guessed():
    t = step_kind_table(SIM.drop(columns="cow_copies"), ENG).set_index("kind")
    assert not t.loc["copy"].available and np.isnan(t.loc["copy"].steps_measured)
    assert t.loc["swap"].available and t.loc["swap"].steps_measured == 2
    # the engine still has the column: its copy step is not counted as decode-only
    assert t.loc["decode-only"].steps_measured == 3 and t.loc["decode-only"].steps_predicted == 4


def test_timeline_conserves_totals_and_peaks():
    tl = timeline(SIM, ENG, bins=4)
    assert len(tl) == 4 and tl.t_start_s.iloc[0] == 0.0
    assert tl.t_end_s.iloc[-1] == pytest.approx(max((d.start_s + d.duration_s).max() for d in (SIM, ENG)))
    for side, its in (("sim", SIM), ("eng", ENG)):
        assert tl[f"{side}_steps"].sum() == len(its)
        assert tl[f"{side}_tokens"].sum() == its.batched_tokens.sum()
        assert np.nanmax(tl[f"{side}_blocks_max"]) == its.blocks_in_use.max()
        assert tl[f"{side}_preemptions_cum"].iloc[-1] == its.preempted.sum()
        assert tl[f"{side}_preemptions_cum"].is_monotonic_increasing
        b = tl[f"{side}_batch"].dropna()
        assert b.between(its.batched_requests.min(), its.batched_requests.max()).all()
    one = timeline(ENG, ENG, bins=1)             # one bin: the duration-weighted mean batch size
    w = ENG.duration_s
    assert one.eng_batch.iloc[0] == pytest.approx((ENG.batched_requests * w).sum() / w.sum())


def test_write_diff_without_records_of_one_side(tmp_path):
    write_diff("x", SIM.iloc[:0], ENG, tmp_path, bins=10)
    tl = pd.read_csv(tmp_path / "timeline.csv")
    assert tl.sim_steps.sum() == 0 and tl.eng_steps.sum() == len(ENG)
    assert "| decode-only | 0 | 3 |" in (tmp_path / "step_kinds.md").read_text()


def test_replay_writes_differential_views(tmp_path):
    from kvsim.validate import run_validation
    name = "v07_opt13b_swap"                       # swaps and preemptions, one short replay
    src = ROOT / "validation" / "H100-async-opt-1207d" / name / "engine"
    shutil.copytree(src, tmp_path / name / "engine")
    run_validation([str(ROOT / "scenarios" / "validation" / f"{name}.yaml")],
                   [str(ROOT / "calibrate" / "profiles" / "H100" / "opt-13b-async-1207d.json")], tmp_path, replay=True)
    d = tmp_path / name
    for f in ("step_kinds.csv", "step_kinds.md", "step_sizes.csv", "step_sizes.md", "timeline.csv", "timeline.png"):
        assert (d / f).exists(), f
    sizes = pd.read_csv(d / "step_sizes.csv")        # every decode-only step lands in exactly one size bin
    assert sizes[sizes.kind == "decode-only"].steps_measured.sum() == sk_decode_only(src)
    sk = pd.read_csv(d / "step_kinds.csv").set_index("kind")
    assert list(sk.reset_index().columns) == list(STEP_COLUMNS)
    eng = pd.read_csv(record_file(src, "iterations.csv"))
    decode_only = ((eng.prefill_tokens == 0) & (eng.decode_seqs > 0) & (eng.swap_in_blocks == 0)
                   & (eng.swap_out_blocks == 0) & (eng.cow_copies == 0))
    assert sk.loc["decode-only"].steps_measured == decode_only.sum()
    assert sk.loc["swap"].steps_measured == ((eng.swap_in_blocks + eng.swap_out_blocks) > 0).sum() > 0
    assert sk.steps_measured.sum() == len(eng)
    tl = pd.read_csv(d / "timeline.csv")
    assert {"t_start_s", "t_end_s", "sim_batch", "eng_batch", "sim_tokens", "eng_tokens", "sim_blocks_max",
            "eng_blocks_max", "sim_preemptions_cum", "eng_preemptions_cum"} <= set(tl.columns)
    assert tl.eng_tokens.sum() == eng.batched_tokens.sum()
    assert np.nanmax(tl.eng_blocks_max) == eng.blocks_in_use.max()
    assert f"({name}/step_kinds.md)" in (tmp_path / "validation-replay.md").read_text()
    assert f"({name}/step_sizes.md)" in (tmp_path / "validation-replay.md").read_text()


def sk_decode_only(src: Path) -> int:
    eng = pd.read_csv(record_file(src, "iterations.csv"))
    return int(((eng.prefill_tokens == 0) & (eng.decode_seqs > 0) & (eng.swap_in_blocks == 0)
                & (eng.swap_out_blocks == 0) & (eng.cow_copies == 0)).sum())


def test_step_kinds_list_the_engines_host_time_and_ahead_share_where_recorded():
    from kvsim.validate_diff import step_kind_markdown
    plain = step_kind_table(SIM, ENG)
    assert plain.host_measured_s.isna().all() and plain.ahead_measured.isna().all()
    assert "host eng" not in step_kind_markdown("s", plain)               # older records: the table as before
    eng = ENG.assign(cpu_s=[0.001, 0.001, 0.004, 0.002, 0.0005, 0.0015, 0.003, 0.003, 0.002],
                     host_ahead=[1, 1, 0, 1, 1, 0, 0, 0, 1])
    t = step_kind_table(SIM, eng).set_index("kind")
    assert t.loc["decode-only"].host_measured_s == pytest.approx(0.002)
    assert t.loc["mixed"].host_measured_s == pytest.approx(0.001) and t.loc["mixed"].ahead_measured == 0.5
    assert t.loc["decode-only"].ahead_measured == pytest.approx(2 / 3)
    md = step_kind_markdown("s", t.reset_index())
    assert "| host eng | ahead eng |" in md and "| 1.00 | 0.50 |" in md      # mixed: 1.00 ms host, half ahead
    assert all(line.count("|") == md.splitlines()[4].count("|") for line in md.splitlines()[4:] if line)
