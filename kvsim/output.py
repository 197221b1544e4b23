"""Writing a run's files: summary.json, requests.csv, iterations.csv and a plot."""
from __future__ import annotations

import json
from pathlib import Path

from kvsim.errors import KvsimError


def summary_document(res) -> dict:
    setup = res.setup
    b = setup.budget
    return {
        "scenario": setup.scenario.to_dict(),
        "model": setup.model.name, "gpu": setup.gpu.name,
        "kv": {"num_gpu_blocks": b.num_gpu_blocks, "num_cpu_blocks": b.num_cpu_blocks,
               "block_bytes": b.block_bytes, "kv_cache_bytes": b.kv_cache_bytes,
               "weight_bytes": b.weight_bytes, "activation_peak_bytes": b.activation_peak_bytes,
               "capacity_tokens": int(b.kv_cache_bytes // setup.kv_bytes_per_token)},
        "summary": res.summary,
    }


def write_run(res, out: Path, plot: bool = True) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KvsimError("--out", f"cannot create {out}: {e.strerror or e}") from None
    (out / "summary.json").write_text(json.dumps(summary_document(res), indent=2, sort_keys=True) + "\n")
    res.requests.to_csv(out / "requests.csv", index=False)
    res.iterations.to_csv(out / "iterations.csv", index=False)
    if plot:
        try:
            from kvsim.plots import plot_run
        except ImportError:          # e.g. a GPU image without matplotlib: the CSVs are enough
            return
        plot_run(res.requests, res.iterations, res.setup.scenario.name, out / "run.png")


def write_engine_run(res, out: Path) -> None:
    """Same files as a simulator run, plus the engine's device, versions and timing split."""
    write_run(res, out)
    doc = json.loads((out / "summary.json").read_text())
    doc["engine"] = res.info
    (out / "summary.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
