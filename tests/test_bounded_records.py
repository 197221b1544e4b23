"""Records kept in bounded memory must give the same numbers and the same files.

* :class:`kvsim.pairwise.PairwiseSums` fed in arbitrary pieces equals ``np.sum`` of the whole column bit for bit;
* :class:`kvsim.spill.SpillArray` reads back what was appended, across the file / buffer boundary;
* :func:`kvsim.itl_stream.itl_percentiles` over chunked ends equals ``weighted_percentiles(*itl_gaps(...))``;
* the summary gathered chunk by chunk equals the summary of the whole frame;
* the request table equals the frame built from row tuples (rejected and unfinished requests included);
* in every mode (paged, chunked, prefix caching, swap, n=4, beam 4, V1) a fast-forwarded run whose
  records spill to disk after a few values and are written in small chunks writes the same
  summary.json, requests.csv and iterations.csv bytes as stepping one iteration at a time.
"""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from kvsim import csvfast
from kvsim.build import setup_run
from kvsim.config import load_scenario
from kvsim.iterlog import IterationLog
from kvsim.iterstats import IterationStats
from kvsim.itl_stream import itl_percentiles
from kvsim.latency import itl_gaps, weighted_percentiles
from kvsim.metrics import SUMMARY_INPUTS
from kvsim.output import write_run
from kvsim.pairwise import PairwiseSums
from kvsim.request_table import REQUEST_COLUMNS
from kvsim.sim import SimEngine
from kvsim.spill import SpillArray

BASE = {"model": "opt-13b", "gpu": "a100-40gb",
        "engine": {"allocator": "paged", "block_size": 16, "gpu_memory_utilization": 0.7},
        "workload": {"dataset": "sharegpt_like", "rate_req_s": 4.0, "num_requests": 120}, "seed": 0}
MODES = {
    "paged": {},
    "chunked": {"engine": {"scheduler": "chunked", "max_num_batched_tokens": 512}},
    "prefix": {"engine": {"enable_prefix_caching": True}, "workload": {"prefix_len": 128, "num_prefixes": 2}},
    "swap": {"engine": {"preemption_mode": "swap", "num_gpu_blocks": 700, "num_cpu_blocks": 3000}},
    "n4": {"engine": {"num_gpu_blocks": 700, "num_cpu_blocks": 3000}, "workload": {"n": 4}},
    "beam4": {"workload": {"beam_width": 4, "num_requests": 40}},
    "v1": {"engine": {"policy": "v1"}},
    "cut": {"workload": {"rate_req_s": 8.0}, "max_time_s": 12.0},
    "rejected": {"engine": {"num_gpu_blocks": 40, "num_cpu_blocks": 100}},
}


def scenario(mode: str):
    d = copy.deepcopy(BASE)
    for k, v in MODES[mode].items():
        if isinstance(v, dict):
            d[k].update(v)
        else:
            d[k] = v
    return load_scenario(d)


@pytest.mark.parametrize("seed", range(6))
def test_pairwise_sums_equal_numpy_sum_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    for n in [0, 1, 7, 8, 9, 127, 128, 129, 255, 1000, 8193] + rng.integers(1, 70000, 3).tolist():
        x = rng.random((n, 3)) * rng.choice([1e-6, 1.0, 1e9], size=(n, 3)) - 0.3
        want = np.array([np.ascontiguousarray(x[:, c]).sum() for c in range(3)])
        s, i = PairwiseSums(n, 3), 0
        while i < n:
            k = int(rng.integers(1, max(2, n // 4 + 2)))
            s.feed(x[i:i + k])
            i += k
        assert s.totals().tobytes() == want.tobytes(), n


def test_pairwise_sums_refuse_a_short_feed():
    s = PairwiseSums(10, 1)
    s.feed(np.ones(9))
    with pytest.raises(ValueError):
        s.totals()


@pytest.mark.parametrize("typecode, limit", [("q", 24), ("d", 8), ("q", 1 << 20)])
def test_spill_array_reads_back_what_was_appended(typecode, limit):
    a, ref = SpillArray(typecode, limit_bytes=limit), []
    rng = np.random.default_rng(1)
    for i in range(300):
        v = rng.integers(-5, 5, int(rng.integers(0, 5)))
        if i % 3 == 0:
            a.extend(v.tolist())
        elif i % 3 == 1:
            a.extend_array(v)
        else:
            for x in v.tolist():
                a.append(x)
        ref.extend(v.tolist())
    ref = np.array(ref)
    assert len(a) == len(ref)
    for lo, hi in [(0, len(ref)), (3, 17), (len(ref) - 5, len(ref) + 9), (40, 40)]:
        assert np.array_equal(a.read(lo, hi), ref[lo:hi])
    assert np.array_equal(np.concatenate(list(a.chunks(13))), ref)
    if limit < 100:
        assert a._flushed > 0                       # it really went to the file


def _finished_times(reqs):
    d = reqs[reqs.status == "finished"]
    return d.first_token_s.to_numpy(), d.finish_s.to_numpy(), d.output_len.to_numpy()


@pytest.mark.parametrize("mode", ["paged", "swap", "n4", "cut"])
def test_streamed_itl_percentiles_equal_itl_gaps(mode):
    res = SimEngine(setup_run(scenario(mode)), fast_forward=False).run()
    its, reqs = res.iterations, res.requests
    qs = (50, 90, 99, 0.5, 100, 37.5)
    want = weighted_percentiles(*itl_gaps(reqs, its), qs)
    ends = (its.start_s + its.duration_s).to_numpy()[its.decode_seqs.to_numpy() > 0]
    for size in (1, 7, 500, len(ends) + 1):
        got = itl_percentiles(*_finished_times(reqs), lambda: (ends[i:i + size] for i in range(0, len(ends), size)),
                              qs)
        assert np.array_equal(got, want, equal_nan=True), size


@pytest.mark.parametrize("mode", ["paged", "prefix", "n4"])
def test_summary_from_chunks_equals_summary_from_frame(mode, monkeypatch):
    monkeypatch.setattr(SpillArray, "LIMIT", 64)
    eng = SimEngine(setup_run(scenario(mode)))
    res = eng.run()
    whole = IterationStats.from_frame(res.iterations[list(SUMMARY_INPUTS)])
    parts = IterationStats.from_chunks(len(eng.log), eng.log.chunks(rows=37, columns=SUMMARY_INPUTS))
    assert whole.wsums == parts.wsums and whole.n == parts.n
    assert (whole.max_batched, whole.peak_blocks) == (parts.max_batched, parts.peak_blocks)
    assert whole.itl_percentiles(res.requests, (50, 99)) == parts.itl_percentiles(res.requests, (50, 99))
    w = res.iterations.duration_s.to_numpy()
    assert whole.wsums["mem_used"] == (res.iterations.mem_used.to_numpy() * w).sum()


def _row_frame(groups) -> pd.DataFrame:
    """The request frame built the way it was before the table: one tuple per group, sorted by id."""
    rows = []
    for g in sorted(groups, key=lambda g: g.group_id):
        s = g.spec
        rows.append((s.request_id, g.status.value, s.arrival_s, g.first_scheduled_s, g.first_token_s,
                     g.finish_s, s.prompt_len, s.output_len, s.n, s.beam_width, s.prefix_id, s.prefix_len,
                     g.num_preemptions, g.num_swaps, g.num_recomputes, g.cached_tokens, g.blocks_at_finish,
                     g.reject_reason or ""))
    df = pd.DataFrame(rows, columns=list(REQUEST_COLUMNS))
    for c in ("first_scheduled_s", "first_token_s", "finish_s"):
        df[c] = df[c].astype(float)
    return df


@pytest.mark.parametrize("mode", ["paged", "cut", "rejected", "n4"])
def test_request_table_equals_row_frame(mode, monkeypatch):
    monkeypatch.setattr(SimEngine, "TAKE_EVERY", 1)
    eng = SimEngine(setup_run(scenario(mode)))
    kept = []
    take = type(eng.table).take_done

    def spy(table, sched):                        # keep the groups the table lets go, to rebuild the old frame
        kept.extend(g for g in sched.finished + sched.rejected if g is not None)
        take(table, sched)
    monkeypatch.setattr(type(eng.table), "take_done", spy)
    res = eng.run()
    groups = {g.group_id: g for g in kept}
    groups.update({g.group_id: g for g in eng.sched.request_groups()})
    assert len(kept) > 0
    if mode == "rejected":
        assert (res.requests.status == "rejected").any()
    if mode == "cut":
        assert res.requests.finish_s.isna().any()
    pd.testing.assert_frame_equal(res.requests, _row_frame(groups.values()), check_exact=True)


def _files(out):
    return {f: (out / f).read_bytes() for f in ("summary.json", "requests.csv", "iterations.csv")}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_written_files_from_segments_equal_stepping(mode, tmp_path, monkeypatch):
    sc = scenario(mode)
    step = SimEngine(setup_run(sc), fast_forward=False).run()
    write_run(step, tmp_path / "step", plot=False)
    framed = tmp_path / "framed.csv"
    step.iterations.to_csv(framed, index=False)               # the whole frame, written at once
    monkeypatch.setattr(SpillArray, "LIMIT", 48)             # records on disk after a few values
    monkeypatch.setattr(IterationLog, "CHUNK_ROWS", 29)      # written and summarised in small chunks
    monkeypatch.setattr(SimEngine, "TAKE_EVERY", 3)
    monkeypatch.setattr(csvfast, "PIECE", 5)                 # CSV text built a few rows at a time
    eng = SimEngine(setup_run(sc))
    ff = eng.run()
    write_run(ff, tmp_path / "ff", plot=False)
    if mode != "beam4":
        assert eng.ff_steps > 0 and len(eng.log.segments) > 0
    assert _files(tmp_path / "ff") == _files(tmp_path / "step")
    assert (tmp_path / "ff" / "iterations.csv").read_bytes() == framed.read_bytes()
    assert (tmp_path / "ff" / "requests.csv").read_bytes() == step.requests.to_csv(index=False).encode()


EDGE_FLOATS = [0.0, -0.0, 1e-4, 9.999999999999999e-05, 1e-5, 1e16, 9999999999999998.0, 1e15, 123456789012345.67,
               5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, float("inf"), -float("inf"), 0.1, 1 / 3,
               -2.5, 2.0, 1e22, 1e-300, 0.000123]


def test_fast_csv_equals_pandas_on_edge_values_and_falls_back():
    from kvsim.csvfast import to_csv_text
    rng = np.random.default_rng(0)
    rand = rng.random(2000) * 10.0 ** rng.integers(-30, 30, 2000)
    f = pd.DataFrame({"x": np.array(EDGE_FLOATS * 100), "i": np.arange(len(EDGE_FLOATS) * 100) - 50})
    g = pd.DataFrame({"y": rand, "z": -rand, "k": rng.integers(-2**62, 2**62, 2000),
                      "small": rng.integers(0, 1 << 16, 2000), "edge": np.arange(2000) + (1 << 16) - 1000})
    for frame in (f, g, g.iloc[:0]):
        for header in (True, False):
            assert to_csv_text(frame, header) == frame.to_csv(index=False, header=header)
    plain = pd.DataFrame({"x": [1.0, float("nan"), -0.0], "s": ["finished", "", "rejected: 4 > 2 (max=2)"],
                          "n": [1, 2, 3]})
    assert to_csv_text(plain) == plain.to_csv(index=False)
    quoted = pd.DataFrame({"x": [1.0, float("nan")], "s": ["a,b", "c"]})      # needs quoting: pandas writes it
    assert to_csv_text(quoted) == quoted.to_csv(index=False) == 'x,s\n1.0,"a,b"\n,c\n'
    lone = pd.DataFrame({"s": ["", "a"]})
    assert to_csv_text(lone) == lone.to_csv(index=False) == 's\n""\na\n'


def test_fast_csv_of_one_value_columns_equals_pandas():
    """A float column holding one value throughout is formatted once: the same text as pandas for each value
    (negative zero is not zero: compared bit for bit), and a column that differs in one row anywhere is not
    taken for constant."""
    from kvsim.csvfast import to_csv_text
    n = 37
    for v in [0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e-310, 0.1, 123456.789, 1e22, 5e-324]:
        col = np.full(n, v)
        frame = pd.DataFrame({"c": col, "i": np.arange(n)})
        assert to_csv_text(frame) == frame.to_csv(index=False)
        for at in (0, n // 2, n - 1):
            for other in (0.0, -0.0, float("nan"), 2.5):
                mixed = col.copy()
                mixed[at] = other
                frame = pd.DataFrame({"c": mixed, "i": np.arange(n)})
                assert to_csv_text(frame) == frame.to_csv(index=False), (v, at, other)
    one = pd.DataFrame({"c": [-0.0], "i": [1]})
    assert to_csv_text(one) == one.to_csv(index=False)


@pytest.mark.parametrize("mode", ["paged", "beam4", "swap"])
def test_chunks_hold_at_most_rows_plus_one_segment(mode):
    eng = SimEngine(setup_run(scenario(mode)))
    eng.run()
    firsts, ends = eng.log.segments.spans()
    longest = int((ends - firsts).max()) if len(firsts) else 0
    sizes = [len(c) for c in eng.log.chunks(rows=50, columns=("iter",))]
    assert sum(sizes) == len(eng.log) and len(sizes) > 3
    assert max(sizes) <= 50 + longest
    if not len(firsts):                       # stepped only (beam search): exactly rows at a time
        assert set(sizes[:-1]) == {50}


def test_itl_histogram_dense_and_sorted_counts_agree():
    """The ITL histogram counts a chunk densely when its bins span little, else by sorting: both give the same
    bins and counts, chunk after chunk, for gaps of one scale and of many (zeros, microseconds, seconds)."""
    from kvsim.itl_stream import _Histogram
    rng = np.random.default_rng(5)
    chunks = [(rng.exponential(0.02, 500), rng.integers(1, 9, 500)),
              (np.concatenate([np.zeros(7), 10.0 ** rng.uniform(-7, 2, 300)]), rng.integers(1, 4, 307)),
              (rng.exponential(0.03, 400), np.ones(400, np.int64))]
    dense, sorted_ = _Histogram(), _Histogram()
    sorted_.DENSE = 1
    for v, c in chunks:
        dense.add(v, c)
        sorted_.add(v, c)
        assert np.array_equal(dense.bins, sorted_.bins) and np.array_equal(dense.counts, sorted_.counts)
    assert int(dense.counts.sum()) == sum(int(c.sum()) for _, c in chunks)
    assert np.all(np.diff(dense.bins) > 0) and np.all(dense.counts > 0)


def test_fast_csv_reusing_an_earlier_float_columns_fields_equals_pandas():
    """A float column mostly equal to an earlier one in the same row or the row after (segments.csv's end_s and
    the next record's start_s) reuses its fields: the same text as pandas, also where a row differs only by the
    sign of zero, NaN sits on either side, or nothing matches."""
    from kvsim.csvfast import to_csv_text
    rng = np.random.default_rng(1)
    start = np.cumsum(rng.random(400)) * 10.0 ** rng.integers(-5, 8)
    end = np.append(start[1:], start[-1] + 1.0)
    end[[3, 50, 51, 399]] = rng.random(4)               # a few records not followed by their end
    start[7], end[6] = 0.0, -0.0                        # equal as floats, not bit for bit
    start[9], end[8] = float("nan"), float("nan")
    start[20] = float("nan")
    for a, b in ((start, end), (start, start.copy()), (end, start), (start, rng.random(400))):
        frame = pd.DataFrame({"start_s": a, "i": np.arange(400), "end_s": b, "swap_s": np.zeros(400)})
        assert to_csv_text(frame) == frame.to_csv(index=False)
    for n in (1, 2):
        frame = pd.DataFrame({"start_s": start[:n], "end_s": end[:n]})
        assert to_csv_text(frame) == frame.to_csv(index=False)
