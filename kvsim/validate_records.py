"""Saved engine runs as ``kvsim validate --replay`` reads them: ``summary.json``, ``requests.csv`` and
``iterations.csv`` checked (one-line errors naming ``--replay``, the file and the key), older contiguous-allocator
records converted to block units. A saved run's csv records may be kept gzip-compressed (``iterations.csv.gz``,
``requests.csv.gz``, as the committed ones under ``validation/`` are): :func:`record_file` finds either."""
from __future__ import annotations

import zlib
from pathlib import Path

import pandas as pd

METRICS = (
    ("throughput_req_s", "throughput (req/s)"),
    ("normalized_latency_s", "mean normalized latency (s/tok)"),
    ("normalized_latency_p50_s", "p50 normalized latency"),
    ("normalized_latency_p99_s", "p99 normalized latency"),
    ("ttft_p50_s", "TTFT p50 (s)"), ("ttft_p99_s", "TTFT p99 (s)"),
    ("tpot_p50_s", "TPOT p50 (s)"), ("tpot_p99_s", "TPOT p99 (s)"),
    ("avg_batched_requests", "avg batch (requests)"),
    ("preemptions", "preemptions"), ("peak_blocks_in_use", "peak KV blocks"),
)

# summary values validate reads from engine records: those the writer (kvsim.metrics.summarize) always gives a
# number, and the latency percentiles and means it writes as null when no request finished
SUMMARY_COUNTS = ("preemptions", "peak_blocks_in_use")
SUMMARY_NULLABLE = ("normalized_latency_s", "normalized_latency_p50_s", "normalized_latency_p99_s", "ttft_p50_s",
                    "ttft_p99_s", "tpot_p50_s", "tpot_p99_s")


def record_file(folder, name: str) -> Path:
    """``folder/name`` of a saved engine run's records, or ``folder/name.gz`` where only the gzip-compressed file
    is there (``pandas.read_csv`` reads either by its extension); ``folder/name`` where neither is, so a caller's
    error names the file as written."""
    path = Path(folder) / name
    if not path.exists():
        gz = path.with_name(name + ".gz")
        if gz.exists():
            return gz
    return path


def check_summary(summary: dict, where) -> None:
    """The numeric values validation reads from an engine summary (:data:`METRICS`): finite numbers >= 0, whole for
    the counts; null only where the writer writes it (a latency with no finished request). KvsimError naming
    ``--replay``, the file and the key otherwise. A key the records lack is left as n/a, as before."""
    import math
    from kvsim.errors import KvsimError
    for key in [k for k, _ in METRICS]:
        if key not in summary:
            continue
        v = summary[key]
        if v is None and key in SUMMARY_NULLABLE:
            continue
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
        if key in SUMMARY_COUNTS:
            ok = ok and float(v).is_integer()
        if not ok:
            what = "a whole number >= 0" if key in SUMMARY_COUNTS else "a finite number >= 0" + \
                (" or null" if key in SUMMARY_NULLABLE else "")
            raise KvsimError("--replay", f"{where}: summary.{key}: expected {what}, got {v!r}")


def read_engine_records(edir: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """summary.json, requests.csv, iterations.csv of a saved engine run (each csv plain or as ``.csv.gz``,
    :func:`record_file`), checked; one-line errors."""
    from kvsim.errors import KvsimError
    from kvsim.records import ITERATION_COLUMNS, REQUEST_COLUMNS
    from kvsim.textio import read_json
    field = "--replay"
    if not (edir / "summary.json").is_file():
        raise KvsimError(field, f"no engine records in {edir} (expected summary.json, requests.csv, "
                                f"iterations.csv (or .csv.gz) from an engine run; --replay needs an --out that "
                                f"has them)")
    doc = read_json(edir / "summary.json", field, "engine summary.json")
    if not isinstance(doc, dict) or not isinstance(doc.get("summary"), dict):
        raise KvsimError(field, f"{edir / 'summary.json'}: expected an object with a 'summary' object")
    check_summary(doc["summary"], edir / "summary.json")
    for key in ("engine", "kv", "scenario"):
        if doc.get(key) is not None and not isinstance(doc[key], dict):
            raise KvsimError(field, f"{edir / 'summary.json'}: {key}: expected an object, "
                                    f"got {type(doc[key]).__name__}")
    frames = []
    for name, cols in (("requests.csv", REQUEST_COLUMNS), ("iterations.csv", ITERATION_COLUMNS)):
        path = record_file(edir, name)
        try:
            df = pd.read_csv(path, encoding="utf-8")
        except (OSError, EOFError, ValueError, UnicodeDecodeError, pd.errors.ParserError, zlib.error) as e:
            raise KvsimError(field, f"cannot read {path}: {e}".splitlines()[0]) from None
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise KvsimError(field, f"{path}: missing columns {', '.join(missing[:4])}; expected engine records")
        numeric = [c for c in cols if c not in ("status", "reject_reason")]
        for c in numeric:
            if not pd.api.types.is_numeric_dtype(df[c]) and not df[c].isna().all():
                raise KvsimError(field, f"{path}: column {c!r} holds non-numbers; expected engine records")
        frames.append(df)
    return (*in_block_units(doc, frames[0], frames[1]),)


def in_block_units(doc: dict, reqs: pd.DataFrame, its: pd.DataFrame) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Records of a contiguous (Orca) allocator written before ``kv.blocks_in_use_unit`` existed
    counted token slots in ``blocks_in_use``, ``peak_blocks_in_use`` and ``blocks_at_finish``; they
    are converted to blocks (a chunk is whole blocks, so the division is exact). Others pass as read."""
    kv = doc.get("kv") if isinstance(doc.get("kv"), dict) else {}
    scenario = doc.get("scenario") if isinstance(doc.get("scenario"), dict) else {}
    engine = scenario.get("engine") if isinstance(scenario.get("engine"), dict) else {}
    if kv.get("blocks_in_use_unit") or not str(engine.get("allocator", "")).startswith("orca"):
        return doc, reqs, its
    bs = engine.get("block_size") or 16
    if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
        from kvsim.errors import KvsimError
        raise KvsimError("--replay", f"scenario.engine.block_size of the engine records: expected a whole number "
                                     f">= 1, got {bs!r}")
    doc = dict(doc, summary=dict(doc["summary"]), kv=dict(kv, blocks_in_use_unit="blocks (converted from slots)"))
    if "peak_blocks_in_use" in doc["summary"]:
        doc["summary"]["peak_blocks_in_use"] = int(doc["summary"]["peak_blocks_in_use"]) // bs
    its = its.assign(blocks_in_use=its.blocks_in_use // bs)
    reqs = reqs.assign(blocks_at_finish=reqs.blocks_at_finish // bs)
    return doc, reqs, its
