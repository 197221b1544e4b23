"""segments.csv's records built from the log's own records (:mod:`kvsim.record_rows`) against the records of
the expanded iteration rows (:func:`kvsim.iterrecords.records_of`), byte for byte, in every mode of
``test_bounded_records`` and with sliding windows (raw segments), in chunks small enough to cut between any two
records; and the expansion still used where a segment lacks its end clock.

(``test_iteration_records`` checks the written segments.csv against stepping; this one the two ways of building
records, where chunk boundaries and the rarer columns — arrivals queued during runs, raw memory — differ.)
"""
from __future__ import annotations

import io

import pytest

from kvsim import csvfast, record_rows
from kvsim.build import setup_run
from kvsim.config import load_scenario
from kvsim.iterlog import IterationLog
from kvsim.iterrecords import RECORD_COLUMNS, record_chunks, records_of
from kvsim.sim import SimEngine
from kvsim.spill import SpillArray
from tests.test_bounded_records import MODES, scenario

WINDOW = ("scenarios/examples/mistral_swa_long.yaml", ["workload.num_requests=100"])


def _text(frames) -> str:
    out = io.StringIO()
    for i, f in enumerate(frames):
        csvfast.write_csv(f, out, header=i == 0)
    return out.getvalue()


def _expanded(log) -> str:
    return _text(records_of(f, lo, a, b) for f, lo, a, b in log.spans_chunks())


def _log(sc, monkeypatch) -> IterationLog:
    monkeypatch.setattr(SpillArray, "LIMIT", 48)                  # records on disk after a few values
    eng = SimEngine(setup_run(sc))
    eng.run()
    return eng.log


@pytest.mark.parametrize("mode", sorted(MODES) + ["window"])
@pytest.mark.parametrize("chunk", [(1, 1), (3, 7), (1 << 16, 1 << 16)])
def test_records_from_the_log_equal_records_of_the_rows(mode, chunk, monkeypatch):
    sc = load_scenario(WINDOW[0], WINDOW[1]) if mode == "window" else scenario(mode)
    log = _log(sc, monkeypatch)
    assert record_rows.usable(log)
    monkeypatch.setattr(record_rows, "SEGMENTS_PER_CHUNK", chunk[0])
    monkeypatch.setattr(record_rows, "STEPPED_PER_CHUNK", chunk[1])
    got = _text(record_rows.record_frames(log, RECORD_COLUMNS))
    assert got == _expanded(log)
    assert got == _text(record_chunks(log))                      # (what segments.csv is written from)
    if mode not in ("beam4", "rejected", "window"):
        assert len(log.segments) > 3 and got.count("\n") - 1 < len(log)
    if mode == "window":
        assert log.segments._raw                                 # (sliding windows: raw segment memory)
    if mode == "swap":
        assert log.segments._waits                               # (arrivals queued during runs)


def test_segments_without_their_end_clock_fall_back_to_the_rows(monkeypatch):
    """A log whose segments were added without ``t1`` (an older caller) has its records built from the rows:
    the same text as a log with them."""
    want = _text(record_chunks(_log(scenario("swap"), monkeypatch)))
    add, add_values = IterationLog.add_segment, IterationLog.add_segment_values     # (paged runs: add_segment_values)
    monkeypatch.setattr(IterationLog, "add_segment", lambda self, *a: add(self, *a[:10]))     # (t1 left out)
    monkeypatch.setattr(IterationLog, "add_segment_values", lambda self, *a: add_values(self, *a[:10]))
    log = _log(scenario("swap"), monkeypatch)
    assert not log.segments.has_ends() and not record_rows.usable(log)
    monkeypatch.setattr(record_rows, "record_frames", None)                 # (not called: it would fail)
    assert _text(record_chunks(log)) == want
