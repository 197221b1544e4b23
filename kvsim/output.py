"""Writing a run's files: summary.json, requests.csv, iterations.csv and a plot."""
from __future__ import annotations

from pathlib import Path

from kvsim.outdir import OutputSet, write_json


def summary_document(res) -> dict:
    setup = res.setup
    b = setup.budget
    return {
        "scenario": setup.scenario.to_dict(),
        "model": setup.model.name, "gpu": setup.gpu.name,
        "kv": {"num_gpu_blocks": b.num_gpu_blocks, "num_cpu_blocks": b.num_cpu_blocks,
               "block_bytes": b.block_bytes, "kv_cache_bytes": b.kv_cache_bytes,
               "weight_bytes": b.weight_bytes, "activation_peak_bytes": b.activation_peak_bytes,
               "capacity_tokens": int(b.kv_cache_bytes // setup.kv_bytes_per_token),
               "blocks_in_use_unit": "blocks"},
        "summary": res.summary,
    }


RUN_FILES = ("summary.json", "requests.csv", "iterations.csv", "run.png")


def write_run(res, out: Path, plot: bool = True, extra: dict | None = None) -> None:
    """The run's files, written as one set into ``out`` (see :class:`kvsim.outdir.OutputSet`)."""
    doc = summary_document(res)
    doc.update(extra or {})
    with OutputSet(out, RUN_FILES) as d:
        write_json(d / "summary.json", doc, indent=2, sort_keys=True)
        res.requests.to_csv(d / "requests.csv", index=False)
        res.iterations.to_csv(d / "iterations.csv", index=False)
        if plot:
            try:
                from kvsim.plots import plot_run
            except ImportError:          # e.g. a GPU image without matplotlib: the CSVs are enough
                return
            plot_run(res.requests, res.iterations, res.setup.scenario.name, d / "run.png")


def write_engine_run(res, out: Path) -> None:
    """Same files as a simulator run, plus the engine's device, versions and timing split."""
    write_run(res, out, extra={"engine": res.info})
