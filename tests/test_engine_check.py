"""The engine check of the block-size report: SLO rate per block size from engine requests frames, compared with
the report's prediction (kvsim/report/engine_check.py)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kvsim.report.engine_check import compare, engine_rates, load_runs, main, run_metric, slo_rate


def _frame(norm: float, n: int = 20, unfinished: int = 0) -> pd.DataFrame:
    arrival = np.arange(n, dtype=float)
    out = np.full(n, 100)
    return pd.DataFrame({"status": ["finished"] * (n - unfinished) + ["running"] * unfinished,
                         "arrival_s": arrival, "first_token_s": arrival + 0.1,
                         "finish_s": arrival + norm * out, "output_len": out})


def test_run_metric_and_unfinished_runs_fail():
    assert run_metric(_frame(0.05)) == pytest.approx(0.05)
    assert run_metric(_frame(0.05, unfinished=1)) == float("inf")


def test_slo_rate_interpolates_to_the_crossing():
    assert slo_rate([(1, 0.05), (2, 0.08), (3, 0.14)], 0.1) == pytest.approx(2 + (0.1 - 0.08) / 0.06)
    assert slo_rate([(1, 0.05), (2, 0.08), (3, float("inf"))], 0.1) == 2      # a failed run: no crossing to find
    assert slo_rate([(1, 0.2)], 0.1) is None
    assert slo_rate([(2, 0.02), (1, 0.01)], 0.1) == 2                           # all pass: the highest rate run


def _runs(curves: dict[int, list[tuple[float, float]]], seeds=(0,)) -> pd.DataFrame:
    return pd.DataFrame([{"block_size": b, "rate": r, "seed": s, "metric": m * (1 + 0.02 * s)}
                         for b, pts in curves.items() for r, m in pts for s in seeds])


def test_compare_reports_order_margin_and_error():
    runs = _runs({16: [(10, 0.05), (20, 0.15)], 32: [(10, 0.04), (20, 0.12)], 64: [(10, 0.06), (20, 0.3)]},
                 seeds=(0, 1))
    eng = engine_rates(runs, 0.1).set_index("block_size")
    assert eng.loc[32, "engine_rate_req_s"] > eng.loc[16, "engine_rate_req_s"] > eng.loc[64, "engine_rate_req_s"]
    assert eng.loc[32, "engine_noise_req_s"] > 0 and eng.loc[32, "seeds"] == 2
    predicted = {16: 15.0, 32: 17.0, 64: 12.0}
    table, lines = compare(eng.reset_index(), predicted)
    text = "\n".join(lines)
    assert "the same" in lines[0] and "(the same block)" in text
    assert "measured margin of block 32 over block 16" in text
    t = table.set_index("block_size")
    assert t.loc[32, "error"] == pytest.approx(t.loc[32, "engine_rate_req_s"] / 17.0 - 1)
    # a wrong prediction is reported as such
    _, bad = compare(eng.reset_index(), {16: 20.0, 32: 10.0, 64: 12.0})
    assert "different" in bad[0] and "outside" in bad[-1]


def test_a_block_whose_every_rate_met_the_slo_is_a_bound_not_a_measurement():
    runs = _runs({16: [(10, 0.05), (20, 0.15)], 32: [(10, 0.04), (20, 0.08)], 64: [(10, 0.2), (20, 0.3)]})
    eng = engine_rates(runs, 0.1)
    assert list(eng.engine_bound) == ["", "at least", "below"]
    table, lines = compare(eng, {16: 15.0, 32: 17.0, 64: 12.0})
    assert "not bracketed" in lines[0] and "32 (at least 20 req/s)" in lines[0] and "64 (no rate met" in lines[0]
    assert table.set_index("block_size").error.isna().tolist() == [False, True, True]
    assert "no ordering check" in lines[-1]          # one measured block size is left


def test_main_reads_run_folders(tmp_path):
    for b, curve in {16: [(5, 0.05), (10, 0.2)], 32: [(5, 0.04), (10, 0.09), (15, 0.3)]}.items():
        for r, m in curve:
            d = tmp_path / "runs" / f"b{b}_r{r}_s0"
            d.mkdir(parents=True)
            _frame(m).to_csv(d / "requests.csv", index=False)
    pd.DataFrame({"block_size": [16, 32], "max_rate_req_s": [7.0, 10.0]}).to_csv(tmp_path / "bs.csv", index=False)
    assert len(load_runs(tmp_path / "runs", "normalized_latency_s")) == 5
    assert main([str(tmp_path / "runs"), str(tmp_path / "bs.csv")]) == 0
    md = (tmp_path / "runs" / "engine_check.md").read_text()
    assert "report's best block 32" in md and "(the same block)" in md


def test_each_run_is_simulated_as_it_ran(tmp_path):
    """--profile: a run folder (here a simulated one standing in for the engine's) is priced again from the scenario
    its summary records; the same profile reproduces its metric, and a short run is flagged as shorter than the
    report's probes."""
    import kvsim
    from kvsim.output import write_run
    from kvsim.report.engine_check import predicted_runs
    profile = "calibrate/profiles/H100/opt-13b-blocks.json"
    sc = kvsim.load_scenario("scenarios/paper/fig18b_block_size_sharegpt.yaml",
                             ["gpu=h100-80gb", "workload.num_requests=40", "workload.rate_req_s=8",
                              "cost.model=calibrated", f"cost.profile={profile}", "engine.block_size=16"])
    write_run(kvsim.simulate(sc), tmp_path / "b16_r8_s0")
    t = predicted_runs(tmp_path, profile, "normalized_latency_s")
    assert len(t) == 1 and t.requests[0] == 40 and not t.report_probe_length[0]
    assert t.predicted[0] == pytest.approx(t.engine[0], rel=1e-9)


def test_bad_folders_and_reports_get_one_line_and_exit_2(tmp_path, capsys):
    from kvsim.report.engine_check import _main
    assert _main([str(tmp_path / "nowhere"), "bs.csv"]) == 2
    d = tmp_path / "b16_r5_s0"
    d.mkdir()
    _frame(0.05).to_csv(d / "requests.csv", index=False)
    assert _main([str(tmp_path), str(tmp_path / "missing.csv")]) == 2
    pd.DataFrame({"block_size": [16], "max_rate_req_s": [7.0]}).to_csv(tmp_path / "bs.csv", index=False)
    assert _main([str(tmp_path), str(tmp_path / "bs.csv"), "--slo", "normalized_latency_s=abc"]) == 2
    assert _main([str(tmp_path), str(tmp_path / "bs.csv"), "--slo", "ttft_p50_s=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("error: ") for line in err)


def test_the_same_runs_simulated_give_their_own_slo_rate():
    from kvsim.report.engine_check import same_runs_text
    runs = _runs({16: [(10, 0.05), (20, 0.15)], 32: [(10, 0.04), (20, 0.08)]})
    eng = engine_rates(runs, 0.1)                                   # block 16 crosses at 15 req/s; 32 is a bound
    per_run = runs.rename(columns={"metric": "engine"})
    per_run["predicted"] = per_run.engine * [1.0, 0.9, 1.0, 1.0]     # block 16's 20 req/s run predicted 10% low
    text = same_runs_text(per_run, eng, 0.1)
    sim16 = 10 + 10 * (0.1 - 0.05) / (0.135 - 0.05)
    assert f"block 16: simulated {sim16:.3g}, engine 15 req/s ({sim16 / 15 - 1:+.1%})" in text
    assert "block 32: simulated at least 20, engine at least 20 req/s (bounds)" in text


def test_runs_are_as_long_as_the_reports_probes():
    from kvsim.report.engine_check import PROBE_DEFAULTS, probe_length, probe_runs
    old = pd.DataFrame({"block_size": [16, 32], "max_rate_req_s": [15.0, 20.0]})            # no probe columns
    assert probe_length(old, 16) == PROBE_DEFAULTS == (600, 60.0)
    assert probe_runs(old, [16, 32], [1.0, 1.15], [0]) == ["16:15:900:0", "32:20:1200:0", "16:17.25:1035:0",
                                                           "32:23:1380:0"]
    new = old.assign(probe_requests=[100, 100], probe_min_duration_s=[2.0, 2.0])
    assert probe_length(new, 32) == (100, 2.0) and probe_runs(new, [32], [1.0], [0, 1]) == ["32:20:100:0", "32:20:100:1"]


def test_the_next_fraction_steps_toward_the_crossing_and_stops_once_bracketed():
    from kvsim.report.engine_check import next_fraction
    assert next_fraction({}, 0.1, 0.15, 2) == 1.0
    assert next_fraction({1.0: 0.08}, 0.1, 0.15, 2) == 1.15              # met the SLO: the crossing lies above
    assert next_fraction({1.0: 0.12}, 0.1, 0.15, 2) == 0.85              # missed it: below
    assert next_fraction({1.0: 0.12, 0.85: 0.09}, 0.1, 0.15, 2) is None  # bracketed
    assert next_fraction({1.0: 0.12, 0.85: 0.11}, 0.1, 0.15, 2) == 0.7
    assert next_fraction({1.0: 0.12, 0.85: 0.11, 0.7: 0.105}, 0.1, 0.15, 2) is None   # max_rounds steps taken
    assert next_fraction({1.0: float("inf")}, 0.1, 0.6, 1) == 0.4         # an unfinished run fails the SLO
    assert next_fraction({1.0: float("inf"), 0.4: float("inf")}, 0.1, 0.6, 5) is None  # never a rate <= 0
