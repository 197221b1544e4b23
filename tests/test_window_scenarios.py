"""The bundled sliding-window scenarios run in `kvsim run` (both policies) and `kvsim engine` (CPU);
unsupported settings for a window model are one line naming the field, exit code 2."""
import json
from pathlib import Path

import pytest

from tests._cli import cli

ROOT = Path(__file__).resolve().parents[1]
EX = ROOT / "scenarios" / "examples"


@pytest.mark.parametrize("name", ["mistral_swa_long", "gemma2_alternating"])
@pytest.mark.parametrize("policy", ["v0", "v1"])
def test_window_examples_run(capsys, tmp_path, name, policy):
    rc, out, err = cli(capsys, "run", EX / f"{name}.yaml", "--out", tmp_path, "--set", f"engine.policy={policy}",
                       "--set", "workload.num_requests=40", "--outputs", "json")
    assert rc == 0, err
    assert "KV groups:" in out
    s = json.loads((tmp_path / "summary.json").read_text())["summary"]
    assert s["requests_finished"] == s["requests_total"] == 40


def test_window_beats_full_attention_on_long_prompts(capsys, tmp_path):
    runs = {}
    for model in ("Mistral-7B-SWA", "Mistral-7B"):
        rc, _, err = cli(capsys, "run", EX / "mistral_swa_long.yaml", "--out", tmp_path / model, "--set",
                         f"model={model}", "--set", "workload.num_requests=60", "--set", "engine.num_gpu_blocks=6000",
                         "--set", "workload.arrival=burst", "--outputs", "json")
        assert rc == 0, err
        runs[model] = json.loads((tmp_path / model / "summary.json").read_text())["summary"]
    swa, full = runs["Mistral-7B-SWA"], runs["Mistral-7B"]
    # the same pages hold more sequences once their blocks outside the window are freed
    assert swa["max_batched_requests"] > full["max_batched_requests"]
    assert swa["sim_duration_s"] < full["sim_duration_s"]


def test_engine_example_runs_on_cpu(capsys, tmp_path):
    pytest.importorskip("torch")
    rc, out, err = cli(capsys, "engine", EX / "tiny_swa_engine_cpu.yaml", "--out", tmp_path, "--outputs", "json")
    assert rc == 0, err
    s = json.loads((tmp_path / "summary.json").read_text())["summary"]
    assert s["requests_finished"] == s["requests_total"]


@pytest.mark.parametrize("override, field", [("engine.allocator=orca_max", "engine.allocator"),
                                             ("engine.enable_prefix_caching=true", "engine.enable_prefix_caching"),
                                             ("engine.preemption_mode=swap", "engine.preemption_mode"),
                                             ("workload.beam_width=2", "workload.beam_width"),
                                             ("workload.n=2", "workload.n")])
def test_unsupported_window_settings_exit_2(capsys, tmp_path, override, field):
    rc, out, err = cli(capsys, "run", EX / "mistral_swa_long.yaml", "--out", tmp_path, "--set", override,
                       "--set", "engine.policy=v0")
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and field in lines[0], err
