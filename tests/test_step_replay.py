"""benchmarks/engine/step_replay.py: a set's engine decode steps picked with their rows' contexts, replayed in the
grid's harness (plumbing on the CPU with a tiny model: the times mean nothing here) and priced by a profile."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests._scripts import ROOT, load_script

SET = ROOT / "validation" / "H100-async-opt-1207d"
PROFILE = str(ROOT / "calibrate" / "profiles" / "H100" / "opt-13b-async-1207d.json")


def test_picked_steps_carry_their_rows_contexts_as_the_records_hold_them():
    from kvsim.calibrate.serving_runs import step_contexts
    from kvsim.validate_records import read_engine_records
    S = load_script("benchmarks/engine/step_replay.py")
    run = SET / "v05_opt13b_sharegpt_oracle_sat" / "engine"
    steps, ref = S.pick_steps(run, [1, 9, 17, 24], 3)
    _, reqs, its = read_engine_records(run)
    ctx = step_contexts(its, reqs)
    assert ref == pytest.approx(11.379, abs=1e-3)                    # the run's reference step, ms
    assert sorted({s["n"] for s in steps}) == [1, 9, 17, 24] and all(
        sum(1 for s in steps if s["n"] == n) == 3 for n in (1, 9, 17, 24))
    for s in steps:
        row = ctx.loc[s["iteration"]]
        assert row.valid and len(s["contexts"]) == s["n"] == row.n
        assert sum(s["contexts"]) == row.ctx_sum == its.loc[s["iteration"], "mem_used"]
        assert max(s["contexts"]) == row.ctx_max
        assert s["engine_ms"] == pytest.approx(its.loc[s["iteration"], "duration_s"] * 1e3)
        assert its.loc[s["iteration"], "host_ahead"] == 1
    its_n = [s["iteration"] for s in steps if s["n"] == 17]
    assert len(set(its_n)) == 3 and its_n == sorted(its_n)          # spread through the run, in order


def test_the_calibrations_serving_runs_give_steps_at_their_own_rows():
    S = load_script("benchmarks/engine/step_replay.py")
    runs = ROOT / "benchmarks" / "engine" / "results_H100" / "async_1207d" / "serving_runs" / "opt-13b-b16"
    steps = S.pick_serving(runs, [9, 17, 100], 3)
    assert [(s["scenario"], s["n"]) for s in steps] == [("serving-n9", 9)] * 3 + [("serving-n17", 17)] * 3
    assert all(len(s["contexts"]) == s["n"] and s["run_reference_ms"] is None for s in steps)


def test_a_replay_on_the_cpu_and_its_priced_table(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    S = load_script("benchmarks/engine/step_replay.py")
    monkeypatch.setattr("sys.argv", ["step_replay.py", "--set", str(SET), "--model", "tiny-opt", "--cpu",
                                     "--scenarios", "v01", "--rows", "1-2", "--per-row", "2", "--out", str(tmp_path),
                                     "--profile", PROFILE])
    S.main()
    doc = json.loads((tmp_path / "step_replay.json").read_text())
    assert doc["card"] == "cpu" and doc["replay_reference_ms"] is None and len(doc["steps"]) == 4
    assert all(s["replay_ms"] > 0 and s["scenario"] == "v01_opt13b_sharegpt_paged_low" for s in doc["steps"])
    rows = S.analyse(doc, PROFILE)
    assert [(r["source"], r["n"]) for r in rows] == [("set", 1), ("set", 2)] and all(r["steps"] == 2 for r in rows)
    for r in rows:          # priced from the engine's own contexts (the tiny model's clipped ones only replayed)
        mine = [s for s in doc["steps"] if s["n"] == r["n"]]
        assert r["engine_ms"] == pytest.approx(np.mean([s["engine_ms"] for s in mine]))
        assert 9.0 < r["priced_ms"] < 14.0 and r["serving_path_ms"] == pytest.approx(r["engine_ms"] - r["replay_ms"])
    assert "| set | 1 | 2 |" in capsys.readouterr().out
    runs = ROOT / "benchmarks" / "engine" / "results_H100" / "async_1207d" / "serving_runs" / "opt-13b-b16"
    serving = [dict(s, replay_ms=10.0) for s in S.pick_serving(runs, [9], 40)]
    row = S.analyse(dict(doc, steps=serving), PROFILE)[0]           # (no replay reference: unscaled)
    assert row["source"] == "serving runs" and row["steps"] == 40 and row["replay_ms"] == 10.0
    assert abs(row["priced_ms"] / row["engine_ms"] - 1) < 0.02      # the fit's own steps: priced on the mean


def test_bad_arguments_are_one_line(tmp_path, monkeypatch):
    S = load_script("benchmarks/engine/step_replay.py")
    for argv, field in ((["--analyse", str(tmp_path / "x.json")], "--profile"),
                        (["--runs", str(tmp_path / "none"), "--out", str(tmp_path)], "--runs"),
                        (["--set", str(tmp_path / "none"), "--out", str(tmp_path)], "--set"),
                        (["--set", str(SET), "--out", str(tmp_path), "--per-row", "0"], "--per-row"),
                        (["--set", str(SET), "--out", str(tmp_path), "--rows", "x"], "--rows"),
                        (["--set", str(SET), "--out", str(tmp_path), "--no-split-waves", "0"], "--no-split-waves"),
                        (["--set", str(SET), "--out", str(tmp_path), "--split-ref-len", "0"], "--split-ref-len")):
        monkeypatch.setattr("sys.argv", ["step_replay.py", "--cpu"] + argv)
        with pytest.raises(SystemExit) as e:
            S.main()
        assert str(e.value).startswith(f"error: {field}")


def test_the_h100_replay_splits_each_row_count_into_what_the_price_adds_and_what_the_engine_needed():
    """The committed replay of the 1207f set (results_H100/step_replay_1207g): the overhead columns add up, and the
    set's steps sit on their replay (the finding its README rests on)."""
    S = load_script("benchmarks/engine/step_replay.py")
    base = ROOT / "benchmarks" / "engine" / "results_H100" / "step_replay_1207g"
    doc = json.loads((base / "step_replay.json").read_text())
    prof = str(ROOT / "calibrate" / "profiles" / "H100" / "opt-13b-async-1207f.json")
    rows = S.analyse(doc, prof)
    assert {r["source"] for r in rows} == {"set", "serving runs"} and sum(r["steps"] for r in rows) == 316
    for r in rows:
        assert r["engine_overhead_ms"] == pytest.approx(r["engine_ms"] - r["priced_ms"] + r["priced_overhead_ms"])
        assert 0.0 < r["priced_overhead_ms"] < 1.5 and r["ctx_sd"] > 0
    on_set = [r for r in rows if r["source"] == "set"]
    assert len(on_set) == 9 and all(abs(r["serving_path_ms"]) < 0.15 for r in on_set)
    assert S.markdown(rows, doc).splitlines()[2:5] == (base / "step_replay.md").read_text().splitlines()[2:5]


def test_two_replays_of_the_same_steps_pair_up_and_take_the_cards_drift_off(capsys, monkeypatch):
    S = load_script("benchmarks/engine/step_replay.py")
    base = ROOT / "benchmarks" / "engine" / "results_H100" / "step_replay_1207g"
    a, b = (json.loads((base / f"forced_split_w{w}.json").read_text()) for w in (4, 8))
    rows = S.pair(a, b)
    assert sum(r["steps"] for r in rows) == len(a["steps"]) == len(b["steps"])
    drift = b["replay_reference_ms"] / a["replay_reference_ms"]
    for r in rows:
        assert r["ratio_over_drift"] == pytest.approx(r["ratio"] / drift) and r["ctx_max"] >= r["ctx_per_row"]
    assert S.pair(a, a)[0]["ratio"] == 1.0
    monkeypatch.setattr("sys.argv", ["step_replay.py", "--pair", str(base / "forced_split_w4.json"),
                                     str(base / "forced_split_w8.json")])
    S.main()
    assert capsys.readouterr().out.strip() == (base / "forced_split.md").read_text().strip()
    monkeypatch.setattr("sys.argv", ["step_replay.py", "--pair", str(base / "none.json"), str(base / "none.json")])
    with pytest.raises(SystemExit) as e:
        S.main()
    assert str(e.value).startswith("error: --pair")


def test_steps_after_a_prompt_step_are_binned_with_their_shape_held(tmp_path):
    P = load_script("benchmarks/engine/post_prompt_steps.py")
    assert P.steps_since_prompt(np.array([0, 5, 0, 0, 3, 0])).tolist()[1:] == [0, 1, 2, 0, 1]
    # a synthetic run: 2 rows, time linear in the context sum, +0.5 ms on the first step after a prompt step
    n = 60
    pt = np.where(np.arange(n) % 10 == 0, 100, 0)
    since = P.steps_since_prompt(pt)
    mem = np.arange(n) * 7.0 + 100
    its = pd.DataFrame({"prefill_tokens": pt, "decode_seqs": 2, "mem_used": mem, "host_ahead": 1,
                        "swap_out_blocks": 0, "swap_in_blocks": 0,
                        "duration_s": 0.01 + 1e-6 * mem + np.where(since == 1, 0.5e-3, 0.0)})
    rows = dict((b, m) for b, _, m in P.by_since(P.residuals(its)))
    assert rows["1"] - rows["3-4"] == pytest.approx(0.5, abs=0.01) and rows["3-4"] == pytest.approx(rows["5-8"], abs=0.01)
    its.loc[since == 1, "host_ahead"] = 0                    # host work not hidden: left out
    assert P.by_since(P.residuals(its))[0][1] == 0
    run = tmp_path / "run"
    run.mkdir()
    its.to_csv(run / "iterations.csv", index=False)
    assert "| run |" in P.markdown([run])
    with pytest.raises(SystemExit, match="RUN_DIR"):
        P.read_iterations(tmp_path)
