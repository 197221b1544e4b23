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


RUN_FILES = {"json": ("summary.json",), "csv": ("requests.csv", "iterations.csv"), "png": ("run.png",),
             "html": ("report.html",)}
RUN_FILE_NAMES = tuple(f for fs in RUN_FILES.values() for f in fs) + ("segments.csv",) + \
    ("requests.csv.gz", "iterations.csv.gz")   # records kept compressed (validation/): a run over them replaces them
RUN_DEFAULT = ("json", "csv", "png", "html")          # kvsim run's default --outputs
LEGACY = frozenset({"json", "csv", "png"})            # what write_run wrote before reports (kvsim engine)


def _log(res):
    """The run's iteration log when its frame has not been built yet (a simulator result), else None."""
    log = getattr(res, "log", None)
    return log if log is not None and getattr(res, "_iterations", None) is None and len(log) else None


def iteration_frame(res, columns):
    """The run's iterations for a reader of only ``columns``: built from a simulator run's log with just those
    columns (not kept, so the whole frame never has to be held), else the run's whole frame."""
    log = _log(res)
    return res.iterations if log is None else log.frame(columns)


def iteration_chunks(res, columns):
    """The run's iterations (``columns`` of them) as consecutive frames: a simulator run's log read chunk by
    chunk (memory bounded by a chunk, not the run), else the run's whole frame as the one piece."""
    log = _log(res)
    return [res.iterations] if log is None else log.chunks(columns=columns)


def _write_iterations(res, path: Path) -> None:
    """iterations.csv, or segments.csv (:mod:`kvsim.iterrecords`); a simulator run's is written chunk by chunk
    from its log (iterations.csv: the same bytes as the frame's)."""
    log = _log(res)
    if log is None:
        res.iterations.to_csv(path, index=False)
        return
    from kvsim.csvfast import write_csv
    if path.name == "segments.csv":
        from kvsim.iterrecords import record_chunks
        chunks = record_chunks(log)
    else:
        chunks = log.chunks()
    with open(path, "w", encoding="utf-8", newline="") as f:
        for i, chunk in enumerate(chunks):
            write_csv(chunk, f, header=i == 0)


def write_run(res, out: Path, plot: bool = True, extra: dict | None = None, kinds=None,
              report=None, iterations: str = "rows") -> list[str]:
    """The run's files of ``kinds`` (default json, csv, png), written as one set into ``out``
    (see :class:`kvsim.outdir.OutputSet`); ``report()`` returns report.html's text; ``iterations``: ``rows``,
    ``segments`` or ``auto`` (:mod:`kvsim.iterrecords`, which file csv's iterations go to). Returns the names
    written."""
    from kvsim.iterrecords import iteration_file
    from kvsim.outdir import files_for
    kinds = LEGACY if kinds is None else frozenset(kinds)
    if not plot:
        kinds = kinds - {"png"}
    if report is None:
        kinds = kinds - {"html"}
    its_file = iteration_file(iterations, len(res.log) if _log(res) is not None else 0, _log(res) is not None)
    names = [its_file if n == "iterations.csv" else n for n in files_for(kinds, RUN_FILES)]
    with OutputSet(out, RUN_FILE_NAMES) as d:
        if "json" in kinds:
            doc = summary_document(res)
            doc.update(extra or {})
            write_json(d / "summary.json", doc, indent=2, sort_keys=True)
        if "csv" in kinds:
            from kvsim.csvfast import write_csv
            with open(d / "requests.csv", "w", encoding="utf-8", newline="") as f:
                write_csv(res.requests, f)
            _write_iterations(res, d / its_file)
        if "png" in kinds:
            try:
                from kvsim.plots import RUN_PLOT_COLUMNS, plot_run
            except ImportError:          # e.g. a GPU image without matplotlib: the CSVs are enough
                names.remove("run.png")
            else:
                plot_run(res.requests, iteration_frame(res, RUN_PLOT_COLUMNS), res.setup.scenario.name, d / "run.png")
        if "html" in kinds:
            (d / "report.html").write_text(report(), encoding="utf-8")
    return names


ENGINE_DEFAULT = RUN_DEFAULT                            # kvsim engine's default --outputs


def write_engine_run(res, out: Path, kinds=None, report=None) -> list[str]:
    """Same files as a simulator run, plus the engine's device, versions and timing split in summary.json.
    ``kinds`` defaults to json, csv, png (what ``kvsim validate`` keeps in its engine/ folders);
    ``kvsim engine`` passes its ``--outputs`` and ``report()`` for report.html. Returns the names written."""
    return write_run(res, out, extra={"engine": res.info}, kinds=kinds, report=report)
