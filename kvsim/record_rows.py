"""segments.csv's records straight from the log's own records, without building each iteration's row.

:func:`kvsim.iterrecords.records_of` defines a record: a stepped iteration is
one record (``steps`` 1), a fast-forwarded segment another, holding its first
iteration's number and start, its last iteration's end and, from ``swap_s``
on, its last iteration's columns. Building every iteration of a long run to
keep one row per segment costs more than the records need, so here each
record is computed from what the log keeps:

* a stepped record is the packed row itself (``end_s = start_s + duration_s``);
* a segment's ``start_s`` is its ``t0`` and its ``end_s`` the clock after its
  last step, kept when the segment was added (``SegmentTable.add``'s ``t1``:
  the running sum SimPy's clock takes, so the same float as the last step's
  start plus its duration);
* its last step's memory is :class:`~kvsim.core.decode_tracker.SegmentMemory`'s
  closed form at step ``k - 1``: the blocks taken are ``k // len(pattern)``
  whole patterns plus the first ``k % len(pattern)`` values (prefix sums over
  the flat pattern column), the internal-fragmentation events all fall inside
  the segment (their sum), raw segments expand their own rows;
* ``waiting`` is the segment's plus the arrivals queued during its run that
  are still queued at its last iteration (a difference array over the waits).

The same bytes as expanding the rows (``tests/test_iteration_records.py``).
Used where every segment has its end clock and no rows were given as whole
columns (``IterationLog.extend``); otherwise the rows are expanded as before.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from kvsim.core.kv import MEMORY_COLUMNS
from kvsim.iterlog import _FLOAT_IDX, _INT_IDX, ITERATION_COLUMNS
from kvsim.segments import _INT

SEGMENTS_PER_CHUNK = 1 << 14       # records per frame: at most this many segments ...
STEPPED_PER_CHUNK = 1 << 14        # ... and this many stepped iterations


def usable(log) -> bool:
    """Whether the log's records can be built here (else expand the rows)."""
    return not log._blocks and log.segments.has_ends()


def _prefix(a: np.ndarray) -> np.ndarray:
    out = np.zeros(len(a) + 1, dtype=np.int64)
    np.cumsum(a, out=out[1:])
    return out


def _waits(table) -> tuple[np.ndarray, np.ndarray]:
    """(sorted iteration positions, running sum of the groups queued from there on) of the arrivals queued
    during runs: the queue they add at iteration ``i`` is ``sums[searchsorted(pos, i, 'right') - 1]``."""
    if not table._waits:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    w = np.array(table._waits, dtype=np.int64).reshape(-1, 3)
    pos = np.concatenate([w[:, 0], w[:, 2]])
    val = np.concatenate([w[:, 1], -w[:, 1]])
    order = np.argsort(pos, kind="stable")
    return pos[order], np.cumsum(val[order])


def _segment_records(table, lo: int, hi: int, waits) -> dict[str, np.ndarray]:
    """The records of segments ``lo .. hi-1`` (columns by name; the zero ones left out)."""
    block = table._block(lo, hi)
    f = {name: block[:, i] for i, name in enumerate(_INT)}
    k, seqs = f["steps"], f["seqs"]
    t0, t1 = table._t0.read(lo, hi), table._t1.read(lo, hi)
    # blocks taken through the last step: whole patterns plus the start of one
    plen = f["pat_len"]
    pat, base = table._flat(table._pattern, f["pat_at"], plen)
    pp = _prefix(pat)
    at = np.where(plen > 0, f["pat_at"] - base, 0)
    safe = np.maximum(plen, 1)
    whole = pp[np.minimum(at + plen, len(pat))] - pp[at]
    cum = np.where(plen > 0, (k // safe) * whole + (pp[np.minimum(at + k % safe, len(pat))] - pp[at]), 0)
    ev_len = f["ev_len"]
    vals, vbase = table._flat(table._ev_val, f["ev_at"], ev_len)
    ea = np.where(ev_len > 0, f["ev_at"] - vbase, 0)
    vp = _prefix(vals)
    ev = np.where(ev_len > 0, vp[np.minimum(ea + ev_len, len(vals))] - vp[ea], 0)
    slots = f["block_slots"] * cum
    alloc = f["alloc"] + slots
    used = f["used"] + seqs * k
    internal = np.minimum(f["internal"] + ev, alloc - used)
    out = {"iter": f["iter"], "steps": k, "fast_forwarded": np.ones(hi - lo, dtype=np.int64),
           "start_s": t0, "end_s": t1, "decode_seqs": seqs, "batched_requests": f["groups"],
           "batched_tokens": seqs, "running": f["groups"], "swapped": f["swapped"],
           "blocks_in_use": f["blocks"] + cum, "mem_used": used, "mem_internal": internal,
           "mem_reserved": alloc - used - internal, "mem_external": f["external"], "mem_free": f["free"] - slots,
           "mem_logical": f["logical"] + slots}
    raw = np.nonzero(f["raw"] >= 0)[0]
    if len(raw):
        for c in ("blocks_in_use",) + MEMORY_COLUMNS:
            out[c] = out[c].copy()
        for s in raw.tolist():
            n = int(k[s])
            blocks, mem = table._raw[f["raw"][s]].expand(n, int(seqs[s]))
            out["blocks_in_use"][s] = blocks[n - 1]
            for c, v in zip(MEMORY_COLUMNS, mem.values()):
                out[c][s] = v[n - 1]
    waiting = f["waiting"].copy()
    pos, sums = waits
    if len(pos):
        i = np.searchsorted(pos, f["iter"] + k - 1, side="right")
        waiting += np.where(i > 0, sums[np.maximum(i - 1, 0)], 0)
    out["waiting"] = waiting
    return out


def _stepped_records(log, a: int, b: int) -> dict[str, np.ndarray]:
    """The records of packed stepped rows ``a .. b-1`` (each its own record)."""
    ni, nf = len(_INT_IDX), len(_FLOAT_IDX)
    ints = log._ints.read(a * ni, b * ni).reshape(b - a, ni)
    floats = log._floats.read(a * nf, b * nf).reshape(b - a, nf)
    out = {ITERATION_COLUMNS[i]: ints[:, j] for j, i in enumerate(_INT_IDX)}
    out.update({ITERATION_COLUMNS[i]: floats[:, j] for j, i in enumerate(_FLOAT_IDX)})
    out["steps"] = np.ones(b - a, dtype=np.int64)
    out["fast_forwarded"] = np.zeros(b - a, dtype=np.int64)
    out["end_s"] = out["start_s"] + out["duration_s"]
    return out


def _merge(seg: dict, step: dict, columns) -> pd.DataFrame:
    """Both kinds of record in iteration order, as a frame of ``columns``."""
    n_seg, n_step = len(seg["iter"]), len(step["iter"])
    order = np.argsort(np.concatenate([seg["iter"], step["iter"]]), kind="stable")
    data = {}
    for c in columns:
        float_col = c.endswith("_s")
        dtype = np.float64 if float_col else np.int64
        a = seg.get(c)
        b = step.get(c)
        both = np.empty(n_seg + n_step, dtype=dtype)
        both[:n_seg] = 0 if a is None else a
        both[n_seg:] = 0 if b is None else b
        data[c] = both[order]
    return pd.DataFrame(data, copy=False)


def record_frames(log, columns):
    """The log's records (``columns``: iterrecords' ``RECORD_COLUMNS``) in consecutive frames."""
    log._pack()
    table = log.segments
    firsts = table.firsts()
    iters = log._iters.read(0, len(log._iters))
    waits = _waits(table)
    n_seg, n_step = len(firsts), len(iters)
    s = a = 0
    while s < n_seg or a < n_step:
        hi = min(int(firsts[s + SEGMENTS_PER_CHUNK]) if s + SEGMENTS_PER_CHUNK < n_seg else len(log),
                 int(iters[a + STEPPED_PER_CHUNK]) if a + STEPPED_PER_CHUNK < n_step else len(log))
        s_hi = int(np.searchsorted(firsts, hi, side="left"))
        b = int(np.searchsorted(iters, hi, side="left"))
        seg = _segment_records(table, s, s_hi, waits) if s_hi > s else {"iter": np.zeros(0, np.int64)}
        yield _merge(seg, _stepped_records(log, a, b), columns)
        s, a = s_hi, b
