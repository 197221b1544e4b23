"""Committed engine traces (H100) replayed through the calibrated simulator reproduce the committed
validation table exactly: the error figures in the README are re-derivable on a CPU."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from kvsim.validate import run_validation

ROOT = Path(__file__).resolve().parents[1]
VAL = ROOT / "validation" / "H100"
PROFILES = [str(ROOT / "calibrate" / "profiles" / "H100" / f) for f in ("opt-13b.json", "llama-3-8b.json")]
SCENARIOS = ["v03_opt13b_sharegpt_paged_sat", "v07_opt13b_swap", "v10_opt13b_beam4", "v13_llama3_8b_sharegpt_paged"]


@pytest.fixture(scope="module")
def committed() -> pd.DataFrame:
    return pd.read_csv(VAL / "validation-replay.csv")


def test_replay_reproduces_committed_errors(tmp_path, committed):
    for name in SCENARIOS:
        shutil.copytree(VAL / name / "engine", tmp_path / name / "engine")
    paths = [str(ROOT / "scenarios" / "validation" / f"{n}.yaml") for n in SCENARIOS]
    df = run_validation(paths, PROFILES, tmp_path, replay=True)
    want = committed[committed.scenario.isin(SCENARIOS)].reset_index(drop=True)
    got = df.reset_index(drop=True)
    assert list(got.scenario) == list(want.scenario) and list(got.metric) == list(want.metric)
    pd.testing.assert_series_equal(got.measured.astype(float), want.measured.astype(float), check_names=False)
    pd.testing.assert_series_equal(got.predicted.astype(float), want.predicted.astype(float), check_names=False,
                                   rtol=1e-9)
    assert (tmp_path / SCENARIOS[0] / "overlay.png").exists()


def test_committed_tables_cover_every_validation_scenario(committed):
    names = {p.stem for p in (ROOT / "scenarios" / "validation").glob("*.yaml")}
    h200 = pd.read_csv(ROOT / "validation" / "H200" / "validation-replay.csv")
    assert len(names) >= 12 and names == set(committed.scenario) | set(h200.scenario)


def _replay_reproduces(tmp_path, val: Path, scenario_dir: Path, names: list[str], profiles: list[Path]) -> None:
    """``names``' engine traces under ``val`` replayed through ``profiles`` give ``val``'s committed predictions."""
    for name in names:
        shutil.copytree(val / name / "engine", tmp_path / name / "engine")
    df = run_validation([str(scenario_dir / f"{n}.yaml") for n in names], [str(p) for p in profiles], tmp_path,
                        replay=True)
    want = pd.read_csv(val / "validation-replay.csv")
    want = want[want.scenario.isin(names)].reset_index(drop=True)
    got = df.reset_index(drop=True)
    assert list(got.scenario) == list(want.scenario) and list(got.metric) == list(want.metric)
    pd.testing.assert_series_equal(got.predicted.astype(float), want.predicted.astype(float),
                                   check_names=False, rtol=1e-9)


def test_h200_replay_reproduces_committed_errors(tmp_path):
    """H200 traces (chunked prefill priced from the mixed-step grid; OPT-13B with Orca pow2 under bursty
    arrivals) through both H200 profiles reproduce the committed table."""
    _replay_reproduces(tmp_path, ROOT / "validation" / "H200", ROOT / "scenarios" / "validation",
                       ["v15_llama3_8b_chunked512", "v18_opt13b_pow2_bursty"],
                       [ROOT / "calibrate" / "profiles" / "H200" / f for f in ("llama-3-8b.json", "opt-13b.json")])


def test_graph_mode_mismatch_is_a_clear_error(tmp_path):
    import json

    from kvsim.errors import KvsimError
    from kvsim.validate import check_graph_mode
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"meta": {"cuda_graphs": True}}))
    check_graph_mode(str(p), True)
    with pytest.raises(KvsimError, match="runtime.cuda_graphs"):
        check_graph_mode(str(p), False)
    p.write_text(json.dumps({"meta": {}}))          # profiles from before graphs were timed eagerly
    with pytest.raises(KvsimError, match="without CUDA graphs"):
        check_graph_mode(str(p), True)


def test_h200_holdout_replay_reproduces_committed_errors(tmp_path):
    """The holdout scenarios' H200 traces (written before they were run; a fresh calibration of that card) through
    that calibration's profile reproduce the committed holdout table."""
    _replay_reproduces(tmp_path, ROOT / "validation" / "H200-holdout", ROOT / "scenarios" / "holdout",
                       ["h01_opt13b_chunked1024_sharegpt", "h05_opt13b_static_block64_alpaca"],
                       [ROOT / "benchmarks" / "engine" / "results_H200" / "calib_0413" / "opt-13b.json"])
