"""Segment-level iteration records: rows rebuilt on demand equal the rows stepping writes.

* rows of many segments at once (vectorised) equal each segment's own ``SegmentMemory.expand`` and its own
  pricing, and the clock is the same running sum;
* ``decode_step_times_rows`` (one batch size per row) equals ``decode_step_times`` row by row, bit for bit,
  for the roofline and the calibrated models;
* the log written chunk by chunk gives the same CSV bytes as the whole frame, for any chunk size;
* a run's memory for iteration records grows with its segments, not its iterations.
"""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

import kvsim
import kvsim.build
import kvsim.sim
from kvsim.catalogue import get_gpu, get_model
from kvsim.core.decode_tracker import SegmentMemory
from kvsim.cost import RooflineCostModel
from kvsim.cost.calibrated import CalibratedCostModel, Profile
from kvsim.segments import SegmentTable
from tests.profile_factory import synthetic_profile

ROOFLINE = RooflineCostModel(get_model("OPT-13B"), get_gpu("A100-40GB"))


def _calibrated(steps):
    return CalibratedCostModel(Profile(synthetic_profile(steps=steps)), model_name="OPT-13B", dtype="fp16",
                               block_size_tokens=16)


def _calibrated_serving():
    """Whole-step grids plus decode_serving (kvsim.calibrate.serving_fit): the spread term at every row count."""
    prof = dict(synthetic_profile(steps=True), decode_serving={"16": {"num_seqs": [4, 32], "extra_s": [2e-4, -1e-4],
                                                                      "spread_frac": [0.9, 0.4]}})
    return CalibratedCostModel(Profile(prof), model_name="OPT-13B", dtype="fp16", block_size_tokens=16)


@pytest.mark.parametrize("cost", [ROOFLINE, _calibrated(False), _calibrated(True), _calibrated_serving()],
                         ids=["roofline", "calibrated", "calibrated_steps", "calibrated_serving"])
def test_rows_pricing_equals_one_batch_size_at_a_time(cost):
    rng = np.random.default_rng(0)
    n = rng.integers(1, 300, 500)
    sums = n * rng.integers(10, 3000, 500) + rng.integers(0, 100, 500)
    top = sums / n + rng.integers(0, 500, 500)
    rows = cost.decode_step_times_rows(n, sums.astype(float), top.astype(float))
    one = [cost.decode_step_times(int(a), np.array([float(b)]), np.array([float(c)]))[0]
           for a, b, c in zip(n, sums, top)]
    assert rows.tolist() == one


def _random_table(rng, cost, segments=60):
    table = SegmentTable(cost)
    it, t = 0, 12.5
    jump = True
    expected = []
    for s in range(segments):
        k = int(rng.integers(1, 40))
        nseq = int(rng.integers(1, 50))
        bs = 16
        pattern = tuple(int(x) for x in rng.integers(0, 4, min(k, bs)))
        events = tuple(sorted((int(j), int(rng.integers(1, 15))) for j in rng.choice(k, min(k, 3), replace=False)))
        blocks = int(rng.integers(0, 500))
        used = blocks * bs - int(rng.integers(0, 200))
        mem = SegmentMemory(blocks, blocks * bs, used, int(rng.integers(0, 30)), 0, 100000 - blocks * bs,
                            blocks * bs + 7, bs, pattern, events)
        ctx = int(rng.integers(nseq, 2000 * nseq))
        top = ctx // nseq + int(rng.integers(0, 100))
        run_start = s == 0 or jump
        table.add(it, t, k, nseq, nseq // 2 + 1, ctx, top, 0, 3, run_start, mem)
        grow = np.arange(k, dtype=np.float64)
        dts = cost.decode_step_times(nseq, ctx + nseq * grow, top + grow)
        clock = np.cumsum(np.concatenate(([t], dts)))
        b, m = mem.expand(k, nseq)
        expected.append((clock[:-1], dts, b, m))
        jump = rng.random() < 0.3                 # the next segment starts a later run (or goes on with this one)
        t = float(clock[-1]) + (0.25 if jump else 0.0)
        it += k + (int(rng.integers(1, 3)) if jump else 0)             # stepped iterations in between runs
    return table, expected


@pytest.mark.parametrize("seed", range(5))
def test_many_segments_at_once_equal_each_segment_alone(seed):
    rng = np.random.default_rng(seed)
    table, expected = _random_table(rng, ROOFLINE)
    lo = 0
    for hi in sorted(set(rng.integers(1, len(table), 4).tolist())) + [len(table)]:   # any chunking
        cols = table.columns(lo, hi)
        r = 0
        for starts, dts, blocks, mem in expected[lo:hi]:
            k = len(dts)
            assert cols["start_s"][r:r + k].tolist() == starts.tolist()
            assert cols["duration_s"][r:r + k].tolist() == dts.tolist()
            assert cols["blocks_in_use"][r:r + k].tolist() == blocks.tolist()
            for c, v in zip(("mem_used", "mem_internal", "mem_reserved", "mem_external", "mem_free", "mem_logical"),
                            mem.values()):
                assert cols[c][r:r + k].tolist() == np.asarray(v).tolist(), c
            r += k
        lo = hi


@pytest.mark.parametrize("rows", [1, 50, 3000])
def test_chunked_csv_equals_whole_frame(rows):
    sc = kvsim.load_scenario({"model": "opt-13b", "gpu": "a100-40gb",
                              "engine": {"num_gpu_blocks": 700, "num_cpu_blocks": 3000},
                              "workload": {"rate_req_s": 3.0, "num_requests": 80, "n": 2}, "seed": 1})
    res = kvsim.simulate(sc)
    whole = io.StringIO()
    res.log.frame().to_csv(whole, index=False)
    parts = io.StringIO()
    for i, chunk in enumerate(res.log.chunks(rows)):
        chunk.to_csv(parts, index=False, header=i == 0)
    assert parts.getvalue() == whole.getvalue()
    pd.testing.assert_frame_equal(res.iterations, kvsim.simulate(sc, fast_forward=False).iterations)


def test_record_memory_grows_with_segments_not_iterations():
    sc = kvsim.load_scenario({"model": "opt-13b", "gpu": "a100-40gb",
                              "workload": {"rate_req_s": 1.0, "num_requests": 300}, "seed": 0})
    eng = kvsim.sim.SimEngine(kvsim.build.setup_run(sc))
    eng.run()
    seg = eng.log.segments
    assert seg.rows > 10 * len(seg)                 # segments hold many iterations each
    held = sum(a.itemsize * len(a) for a in (seg._rows, seg._t0, seg._pattern, seg._ev_step, seg._ev_val))
    assert held < 400 * len(seg)                    # a few hundred bytes a segment, whatever its length


@pytest.mark.parametrize("pack", [1, 7, 4096])
def test_buffered_segments_equal_whatever_the_pack_size(pack):
    """Segments are buffered as Python values and packed every ``PACK`` of them and before a read: the columns
    are the same for any pack size, read before, between and after packs."""
    ref, _ = _random_table(np.random.default_rng(3), ROOFLINE, segments=90)
    got = SegmentTable(ROOFLINE)
    got.PACK = pack
    rows = ref._block(0, len(ref))                  # (the reference table packed everything on this read)
    t0 = ref._t0.read(0, len(ref))
    for i, row in enumerate(rows.tolist()):
        (it, k, nseq, groups, ctx, top, swapped, waiting, run_start, blocks, alloc, used, internal, external,
         free, logical, bs, pat_at, pat_len, ev_at, ev_len, _) = row
        mem = SegmentMemory(blocks, alloc, used, internal, external, free, logical, bs,
                            tuple(ref._pattern.read(pat_at, pat_at + pat_len).tolist()),
                            tuple(zip(ref._ev_step.read(ev_at, ev_at + ev_len).tolist(),
                                      ref._ev_val.read(ev_at, ev_at + ev_len).tolist())))
        got.add(it, float(t0[i]), k, nseq, groups, ctx, top, swapped, waiting, bool(run_start), mem)
        if i % 31 == 30:                             # a read in the middle packs what is buffered
            part = got.columns(0, len(got))
            want = ref.columns(0, len(got))
            assert all(np.array_equal(part[c], want[c]) for c in want)
    assert len(got) == len(ref) and got.rows == ref.rows
    assert np.array_equal(got._block(0, len(got)), rows)
    a, b = got.columns(), ref.columns()
    assert a.keys() == b.keys() and all(np.array_equal(a[c], b[c]) for c in a)
    assert [x.tolist() for x in got.spans()] == [x.tolist() for x in ref.spans()]
