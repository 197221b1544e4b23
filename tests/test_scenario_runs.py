"""benchmarks/engine/scenario_runs.py: a validation set's engine runs in one process, the model built once and its
dummy weights re-drawn from each scenario's seed, so each run serves what a fresh ``kvsim engine`` serves (tiny
models on the CPU)."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks" / "engine"))
import scenario_runs as SRN  # noqa: E402


def _scenario(tmp_path: Path, name: str, seed: int, model: str = "tiny-opt", **workload) -> str:
    doc = {"name": name, "model": model, "gpu": "a100-40gb", "dtype": "fp32", "seed": seed,
           "engine": {"block_size": 4, "num_gpu_blocks": 400, "max_num_batched_tokens": 256, "max_num_seqs": 16},
           "workload": {"dataset": "uniform", "prompt_len_range": [3, 20], "output_len_range": [4, 12],
                        "arrival": "burst", "num_requests": 4, **workload},
           "runtime": {"device": "cpu", "attention_backend": "torch"}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_a_reseeded_model_has_a_fresh_builds_weights():
    from kvsim.catalogue import get_model
    from kvsim.engine.models import build_model
    spec = get_model("tiny-llama")
    kw = dict(dtype=torch.float32, device=torch.device("cpu"), weights="dummy")
    reused = build_model(spec, seed=1, **kw)
    reused.init_dummy(7)
    fresh = build_model(spec, seed=7, **kw)
    a, b = reused.state_dict(), fresh.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a[next(iter(a))], build_model(spec, seed=1, **kw).state_dict()[next(iter(a))])


def test_runs_in_one_process_make_the_decisions_fresh_engines_make(tmp_path):
    """Beam search's parents come from the model's logits: with the model reused across scenarios of other
    seeds, each run's copy-on-write counts per step are those of a fresh engine of its own scenario; the
    runs land in kvsim validate's folders, resume, and say when each ran."""
    from kvsim.engine.engine import RealEngine
    import kvsim
    paths = [_scenario(tmp_path, "a", 3, beam_width=2), _scenario(tmp_path, "b", 11, beam_width=2),
             _scenario(tmp_path, "c", 5, model="tiny-llama")]
    out = tmp_path / "validation"
    lines = []
    written = SRN.run_all(paths, out, [], first=1, last=2, log=lines.append)
    assert [d.relative_to(out).as_posix() for d in written] == [
        "a/a/engine", "a/a/engine_r2", "b/b/engine", "b/b/engine_r2", "c/c/engine", "c/c/engine_r2"]
    for d in written:
        assert {"summary.json", "requests.csv", "iterations.csv"} <= {p.name for p in d.iterdir()}
    times = pd.read_csv(out / "scenario_runs.csv")
    assert list(times.scenario) == ["a", "a", "b", "b", "c", "c"] and (times.end_unix >= times.start_unix).all()
    assert (times.load_s[1:4] < 0.05).all()                     # the model built once for a and b
    assert list(times.position) == [1, 2, 3, 4, 5, 6] and (times.decode_host_ms > 0).all()
    fresh = RealEngine(kvsim.load_scenario(paths[1])).run().iterations
    reused = pd.read_csv(out / "b" / "b" / "engine" / "iterations.csv")
    assert fresh.cow_copies.sum() > 0
    assert list(reused.cow_copies) == list(fresh.cow_copies) and list(reused.decode_seqs) == list(fresh.decode_seqs)
    assert SRN.run_all(paths, out, [], first=1, last=2, log=lines.append) == []     # all on disk: none again
