"""Iteration records: one CSV row per stepped iteration or fast-forwarded segment, instead of one per iteration.

A long run has tens of millions of iterations (about 37 per request in a paged
ShareGPT-like run); formatting each as a row of ``iterations.csv`` costs more
than simulating them. The simulator keeps a fast-forwarded decode segment as
one record (:mod:`kvsim.segments`), so ``kvsim run`` can write one row per
record instead (``segments.csv``) and build the per-iteration rows only when
they are asked for. ``--iterations`` picks the file:

* ``auto`` (default): ``iterations.csv`` up to :data:`AUTO_MAX_ROWS` iterations
  (every run of up to about 27,000 paged requests: small runs' files are
  unchanged), ``segments.csv`` above;
* ``rows``: always ``iterations.csv`` (one row per iteration);
* ``segments``: always ``segments.csv``.

``segments.csv`` columns: ``iter`` (the record's first iteration), ``steps``
(iterations in it: 1 for a stepped iteration), ``fast_forwarded`` (0/1),
``start_s`` (its first iteration's start), ``end_s`` (its last iteration's
start plus duration), then ``iterations.csv``'s columns from ``swap_s`` on, as
of the record's last iteration (in a segment everything but ``waiting`` and
the memory columns is the same in each of its iterations). Expanding the
segments gives exactly the rows of ``iterations.csv``
(``tests/test_iteration_records.py``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from kvsim.errors import KvsimError
from kvsim.iterlog import ITERATION_COLUMNS

AUTO_MAX_ROWS = 1_000_000
MODES = ("auto", "rows", "segments")
RECORD_COLUMNS = ("iter", "steps", "fast_forwarded", "start_s", "end_s") + ITERATION_COLUMNS[3:]


def check_mode(raw) -> str:
    """``--iterations``' value, or a one-line error naming the flag."""
    mode = str(raw).strip().lower()
    if mode not in MODES:
        raise KvsimError("--iterations", f"got {raw!r}, expected one of {', '.join(MODES)}")
    return mode


def iteration_file(mode: str, num_iterations: int, has_log: bool) -> str:
    """The file the run's iterations go to: ``iterations.csv`` or ``segments.csv`` (a run without a simulator
    log, e.g. a real engine's, always has rows)."""
    if not has_log or mode == "rows" or (mode == "auto" and num_iterations <= AUTO_MAX_ROWS):
        return "iterations.csv"
    return "segments.csv"


def records_of(frame: pd.DataFrame, lo: int, seg_firsts: np.ndarray, seg_ends: np.ndarray) -> pd.DataFrame:
    """The records of iterations ``lo ..`` in ``frame`` (all of ``ITERATION_COLUMNS``, whole segments only),
    the segments among them starting at ``seg_firsts`` and ending before ``seg_ends``."""
    n = len(frame)
    inner = np.zeros(n + 1, dtype=np.int64)
    np.add.at(inner, seg_firsts - lo + 1, 1)        # iterations after a segment's first, up to its end
    np.add.at(inner, seg_ends - lo, -1)
    first = np.flatnonzero(np.cumsum(inner[:n]) == 0)
    last = np.append(first[1:], n) - 1
    ff = np.zeros(n, dtype=np.int64)
    ff[seg_firsts - lo] = 1
    cols = {c: frame[c].to_numpy() for c in ITERATION_COLUMNS}
    out = {"iter": cols["iter"][first], "steps": last - first + 1, "fast_forwarded": ff[first],
           "start_s": cols["start_s"][first], "end_s": cols["start_s"][last] + cols["duration_s"][last]}
    for c in ITERATION_COLUMNS[3:]:
        out[c] = cols[c][last]
    return pd.DataFrame(out, copy=False)


def record_chunks(log, rows: int | None = None):
    """The log's records in consecutive frames: built from the log's records where it can
    (:mod:`kvsim.record_rows`), else from its iterations (about ``rows`` iterations' worth each)."""
    from kvsim import record_rows
    if record_rows.usable(log):
        yield from record_rows.record_frames(log, RECORD_COLUMNS)
        return
    for frame, lo, firsts, ends in log.spans_chunks(rows):
        yield records_of(frame, lo, firsts, ends)


def expand(records: pd.DataFrame) -> pd.DataFrame:
    """Iteration numbers and record of each iteration (for checking a records file against iterations.csv):
    a frame with ``iter`` and the index of its record."""
    steps = records["steps"].to_numpy()
    rec = np.repeat(np.arange(len(records)), steps)
    first = np.repeat(records["iter"].to_numpy(), steps)
    off = np.arange(len(rec)) - np.repeat(np.cumsum(steps) - steps, steps)
    return pd.DataFrame({"iter": first + off, "record": rec})
