"""The records shared by the simulator and the real engine: schema and builders.

One row per request and one row per iteration; both are plain column lists
while a run is in progress and become pandas DataFrames at the end. Both
runners build rows with the same functions: :func:`step_state` (an iteration's
state columns, from its plan and the scheduler), :func:`decode_run_rows` (a
fast-forwarded decode run), :func:`request_frame` and :func:`run_summary`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from kvsim.core.kv import MemorySplit
from kvsim.core.plan import StepPlan
from kvsim.core.scheduler import Scheduler
from kvsim.core.sequence import SequenceGroup
from kvsim.metrics import summarize

ITERATION_COLUMNS = (
    "iter", "start_s", "duration_s", "swap_s",
    "prefill_groups", "prefill_tokens", "decode_seqs", "batched_requests", "batched_tokens",
    "running", "waiting", "swapped", "preempted", "swap_out_blocks", "swap_in_blocks", "cow_copies",
    "blocks_in_use", "mem_used", "mem_internal", "mem_reserved", "mem_external", "mem_free", "mem_logical",
)

TIMING_COLUMNS = ITERATION_COLUMNS[:4]
STATE_COLUMNS = ITERATION_COLUMNS[4:]       # what step_state returns, in this order

REQUEST_COLUMNS = (
    "request_id", "status", "arrival_s", "first_scheduled_s", "first_token_s", "finish_s",
    "prompt_len", "output_len", "n", "beam_width", "prefix_id", "prefix_len",
    "preemptions", "swaps", "recomputes", "cached_tokens", "blocks_at_finish", "reject_reason",
)


class IterationLog:
    """Iteration records: single rows buffered as tuples, blocks of rows kept as numpy columns."""

    def __init__(self):
        self._rows: list[tuple] = []
        self._chunks: list[dict[str, np.ndarray]] = []
        self._n = 0

    def append(self, **row) -> None:
        self._rows.append(tuple(row[c] for c in ITERATION_COLUMNS))
        self._n += 1

    def append_step(self, start_s: float, duration_s: float, swap_s: float, state: tuple) -> None:
        """Append the next iteration: its timing and its ``step_state``."""
        self._rows.append((self._n, start_s, duration_s, swap_s) + state)
        self._n += 1

    def _flush(self) -> None:
        if self._rows:
            cols = list(zip(*self._rows))
            self._chunks.append({c: np.asarray(v) for c, v in zip(ITERATION_COLUMNS, cols)})
            self._rows = []

    def extend(self, block: dict[str, np.ndarray]) -> None:
        """Append many rows at once (fast-forwarded steps); every column must be given."""
        self._flush()
        self._chunks.append({c: np.asarray(block[c]) for c in ITERATION_COLUMNS})
        self._n += len(block["iter"])

    def __len__(self) -> int:
        return self._n

    def frame(self) -> pd.DataFrame:
        self._flush()
        if not self._chunks:
            return pd.DataFrame({c: np.array([], dtype=np.int64 if c != "start_s" else float)
                                 for c in ITERATION_COLUMNS})
        data = {}
        for c in ITERATION_COLUMNS:
            arr = np.concatenate([ch[c] for ch in self._chunks])
            data[c] = arr.astype(np.float64) if c.endswith("_s") else arr.astype(np.int64)
        return pd.DataFrame(data)


def step_state(plan: StepPlan, sched: Scheduler) -> tuple:
    """An iteration's ``STATE_COLUMNS``, read after ``schedule`` returned ``plan`` (for ``append_step``)."""
    kv = sched.kv
    n_prefill = len(plan.prefill_group_ids)
    prefill_tokens = plan.num_prefill_tokens
    decode_seqs = len(plan.decode_context_tokens)
    return (n_prefill, prefill_tokens, decode_seqs, n_prefill + len(plan.decode_group_ids),
            prefill_tokens + decode_seqs, len(sched.running), len(sched.waiting), len(sched.swapped),
            len(plan.preempted), len(plan.swap_out), len(plan.swap_in), len(plan.copy_pairs),
            kv.blocks_in_use()) + kv.memory_split(sched.running).values()


def decode_run_rows(first_iter: int, starts: np.ndarray, dts: np.ndarray, num_seqs: int, running: int,
                    waiting: np.ndarray, blocks_in_use: np.ndarray, mem: MemorySplit) -> dict[str, np.ndarray]:
    """The rows of ``len(starts)`` decode-only iterations (for :meth:`IterationLog.extend`)."""
    k = len(starts)
    zeros = np.zeros(k, dtype=np.int64)
    return dict(iter=np.arange(first_iter, first_iter + k), start_s=starts, duration_s=dts + 0.0,
                swap_s=np.zeros(k), prefill_groups=zeros, prefill_tokens=zeros,
                decode_seqs=zeros + num_seqs, batched_requests=zeros + running,
                batched_tokens=zeros + num_seqs, running=zeros + running, waiting=waiting,
                swapped=zeros, preempted=zeros, swap_out_blocks=zeros, swap_in_blocks=zeros,
                cow_copies=zeros, blocks_in_use=blocks_in_use, **mem.columns())


def run_summary(setup, reqs: pd.DataFrame, its: pd.DataFrame, end_s: float, kv) -> dict:
    """The run's summary (:func:`kvsim.metrics.summarize`) with the KV manager's capacity and prefix-cache stats."""
    return summarize(setup, reqs, its, end_s, kv.capacity_slots, kv.prefix_cache_stats())


def request_frame(groups: list[SequenceGroup]) -> pd.DataFrame:
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
