"""The iteration log: one record per stepped iteration, one per fast-forwarded decode run.

Stepped iterations arrive as rows (tuples in ``ITERATION_COLUMNS`` order) and
are packed into numpy blocks as they accumulate. A fast-forwarded decode run
is kept as one :class:`DecodeRunRecord`: its segments' step times and memory
arrays plus the few values that are constant along a segment; its
per-iteration rows are only built when the frame is asked for
(:meth:`IterationLog.frame`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from kvsim.core.kv import MEMORY_COLUMNS, MemorySplit

ITERATION_COLUMNS = (
    "iter", "start_s", "duration_s", "swap_s",
    "prefill_groups", "prefill_tokens", "decode_seqs", "batched_requests", "batched_tokens",
    "running", "waiting", "swapped", "preempted", "swap_out_blocks", "swap_in_blocks", "cow_copies",
    "blocks_in_use", "mem_used", "mem_internal", "mem_reserved", "mem_external", "mem_free", "mem_logical",
)
_FLOAT = tuple(c.endswith("_s") for c in ITERATION_COLUMNS)
_FLOAT_IDX = [i for i, f in enumerate(_FLOAT) if f]
_INT_IDX = [i for i, f in enumerate(_FLOAT) if not f]


class DecodeRunRecord:
    """A fast-forwarded decode run: its segments (stretches between finishes) and the arrivals it queued."""

    def __init__(self, waiting: int, swapped: int):
        self.waiting0 = waiting                  # queue length at the run's first step
        self.swapped = swapped                   # swapped-out groups (constant through a run)
        self._segs: list[tuple] = []             # (starts, durations, seqs, groups, blocks_in_use, memory split)
        self._waits: list[tuple[int, int]] = []  # (run step, groups queued from it on)
        self._n = 0

    def add(self, starts: np.ndarray, dts: np.ndarray, num_seqs: int, num_groups: int,
            blocks: np.ndarray, mem: MemorySplit) -> None:
        self._segs.append((starts, dts, num_seqs, num_groups, blocks, mem))
        self._n += len(starts)

    def waiting_from(self, step: int, added: int) -> None:
        """``added`` more groups wait from run step ``step`` on."""
        if added:
            self._waits.append((step, added))

    def __len__(self) -> int:
        return self._n

    def starts(self) -> np.ndarray:
        return np.concatenate([s[0] for s in self._segs])

    def durations(self) -> np.ndarray:
        return np.concatenate([s[1] for s in self._segs])

    def columns(self, first_iter: int) -> dict[str, np.ndarray]:
        """The run's rows as ``ITERATION_COLUMNS`` arrays."""
        k = self._n
        lens = [len(s[0]) for s in self._segs]
        seqs = np.repeat([s[2] for s in self._segs], lens)
        groups = np.repeat([s[3] for s in self._segs], lens)
        waiting = np.full(k, self.waiting0, dtype=np.int64)
        for j, added in self._waits:
            waiting[j:] += added
        zeros = np.zeros(k, dtype=np.int64)
        mem = {c: np.concatenate([s[5].columns()[c] for s in self._segs]) for c in MEMORY_COLUMNS}
        return dict(iter=np.arange(first_iter, first_iter + k), start_s=self.starts(),
                    duration_s=self.durations() + 0.0, swap_s=np.zeros(k), prefill_groups=zeros,
                    prefill_tokens=zeros, decode_seqs=seqs, batched_requests=groups, batched_tokens=seqs,
                    running=groups, waiting=waiting, swapped=zeros + self.swapped, preempted=zeros,
                    swap_out_blocks=zeros, swap_in_blocks=zeros, cow_copies=zeros,
                    blocks_in_use=np.concatenate([s[4] for s in self._segs]), **mem)


class _Block:
    """Rows given as whole columns (:meth:`IterationLog.extend`)."""

    def __init__(self, block: dict):
        self.block = {c: np.asarray(block[c]) for c in ITERATION_COLUMNS}

    def __len__(self) -> int:
        return len(self.block["iter"])

    def columns(self, first_iter: int) -> dict[str, np.ndarray]:
        return self.block


class IterationLog:
    """Iteration records: stepped rows packed in blocks, fast-forwarded runs kept as run records."""

    PACK = 4096

    def __init__(self):
        self._rows: list[tuple] = []
        self._packed: list[tuple[np.ndarray, np.ndarray]] = []   # (int64 rows x int columns, float64 ...)
        self._runs: list[tuple[int, object]] = []                # (first iteration, record)
        self._n = 0

    def append_step(self, start_s: float, duration_s: float, swap_s: float, state: tuple) -> None:
        """Append the next iteration: its timing and its ``step_state``."""
        self._rows.append((self._n, start_s, duration_s, swap_s) + state)
        self._n += 1
        if len(self._rows) >= self.PACK:
            self._pack()

    def _pack(self) -> None:
        if self._rows:
            cols = list(zip(*self._rows))
            ints = np.array([cols[i] for i in _INT_IDX], dtype=np.int64)
            floats = np.array([cols[i] for i in _FLOAT_IDX], dtype=np.float64)
            self._packed.append((ints, floats))
            self._rows = []

    def add_run(self, record) -> None:
        """Append a fast-forwarded run's iterations (a record with ``len`` and ``columns(first_iter)``)."""
        self._runs.append((self._n, record))
        self._n += len(record)

    def extend(self, block: dict[str, np.ndarray]) -> None:
        """Append many rows at once; every column must be given."""
        self.add_run(_Block(block))

    def __len__(self) -> int:
        return self._n

    def frame(self) -> pd.DataFrame:
        self._pack()
        n = self._n
        if not n:
            return pd.DataFrame({c: np.array([], dtype=np.int64 if c != "start_s" else float)
                                 for c in ITERATION_COLUMNS})
        data = {c: np.empty(n, dtype=np.float64 if f else np.int64) for c, f in zip(ITERATION_COLUMNS, _FLOAT)}
        if self._packed:
            ints = np.concatenate([p[0] for p in self._packed], axis=1)
            floats = np.concatenate([p[1] for p in self._packed], axis=1)
            at = ints[0]                                  # the stepped rows' iteration numbers
            for row, i in enumerate(_INT_IDX):
                data[ITERATION_COLUMNS[i]][at] = ints[row]
            for row, i in enumerate(_FLOAT_IDX):
                data[ITERATION_COLUMNS[i]][at] = floats[row]
        for first, rec in self._runs:
            cols = rec.columns(first)
            for c in ITERATION_COLUMNS:
                data[c][first:first + len(rec)] = cols[c]
        return pd.DataFrame(data)
