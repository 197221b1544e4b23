"""Dataset names (issue #13): sharegpt_like / alpaca_like are the synthetic lengths; the old names give the
same numbers, and `sharegpt` (vLLM's name for the real file) says so in one note line after a good command."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import kvsim
from kvsim.workload import WorkloadConfig, build_workload
from kvsim.workload.config import SHAREGPT_NOTE
from tests._cli import cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
Q = str(ROOT / "scenarios" / "examples" / "quickstart.yaml")
REAL = "scenarios/traces/sharegpt_llama3_1000.csv"


def lengths(dataset: str, seed: int = 4):
    reqs = build_workload(WorkloadConfig(dataset=dataset, num_requests=400), max_len_tokens=2048,
                          rng=np.random.default_rng(seed))
    return [(r.arrival_s, r.prompt_len, r.output_len) for r in reqs]


@pytest.mark.parametrize("new,old", [("sharegpt_like", "sharegpt"), ("alpaca_like", "alpaca")])
def test_old_names_draw_the_same_requests(new, old):
    assert lengths(new) == lengths(old)
    assert lengths(new) != lengths("alpaca_like" if new == "sharegpt_like" else "sharegpt_like")


def test_default_dataset_is_the_synthetic_name():
    assert WorkloadConfig().dataset == "sharegpt_like"
    assert kvsim.load_scenario({"name": "d"}).workload.dataset == "sharegpt_like"


def test_sharegpt_prints_one_note_after_a_good_run(capsys, tmp_path):
    rc, out, err = cli(capsys, "run", Q, "--set", "workload.dataset=sharegpt", "--set", "workload.num_requests=30",
                       "--out", tmp_path / "a")
    assert rc == 0
    assert err.splitlines() == [SHAREGPT_NOTE]
    assert "sharegpt_like" in err and REAL in err and "dataset: trace" in err
    rc, _, err = cli(capsys, "run", Q, "--set", "workload.num_requests=30", "--out", tmp_path / "b")
    assert rc == 0 and err == ""                                       # the shipped quickstart uses the new name
    same = [(tmp_path / d / "requests.csv").read_bytes() for d in ("a", "b")]
    assert same[0] == same[1]


def test_bad_input_with_sharegpt_is_still_one_line(capsys, tmp_path):
    rc, _, err = cli(capsys, "run", Q, "--set", "workload.dataset=sharegpt", "--set", "workload.num_requests=0",
                     "--out", tmp_path / "x")
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: workload.num_requests")


def test_unknown_dataset_lists_the_current_names(capsys, tmp_path):
    rc, _, err = cli(capsys, "run", Q, "--set", "workload.dataset=sharegpt_real", "--out", tmp_path / "x")
    assert rc == 2 and err.count("\n") == 1 and "workload.dataset" in err
    assert "sharegpt_like" in err and "alpaca_like" in err


def test_the_real_lengths_the_note_points_to_run_as_a_trace(capsys, tmp_path):
    sets = ["workload.dataset=trace", f"workload.path={ROOT / REAL}", "workload.retime_trace=true",
            "workload.arrival=poisson", "workload.num_requests=200"]
    real = kvsim.simulate(kvsim.load_scenario(Q, sets)).requests
    synth = kvsim.simulate(kvsim.load_scenario(Q, ["workload.num_requests=200"])).requests
    assert (real.status == "finished").all() and len(real) == 200
    assert not np.array_equal(real.prompt_len.to_numpy(), synth.prompt_len.to_numpy())


def test_fields_documents_the_names(capsys):
    rc, out, _ = cli(capsys, "fields", "workload.dataset")
    assert rc == 0 and "sharegpt_like" in out and "alpaca_like" in out and REAL in out
