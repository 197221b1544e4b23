"""The records shared by the simulator and the real engine: schema and builders.

One row per request and one row per iteration; both become pandas DataFrames
at the end (iterations are kept by :class:`kvsim.iterlog.IterationLog` while a
run is in progress, fast-forwarded decode runs as one record each). Both
runners build rows with the same functions: :func:`step_state` (an iteration's
state columns, from its plan and the scheduler), :func:`request_frame` and
:func:`run_summary`.
"""
from __future__ import annotations

import pandas as pd

from kvsim.core.kv import MemorySplit
from kvsim.core.plan import StepPlan
from kvsim.core.scheduler import Scheduler
from kvsim.iterlog import ITERATION_COLUMNS, IterationLog  # noqa: F401  (IterationLog: re-exported)
from kvsim.metrics import summarize
from kvsim.request_table import REQUEST_COLUMNS, RequestTable  # noqa: F401  (REQUEST_COLUMNS: re-exported)

TIMING_COLUMNS = ITERATION_COLUMNS[:4]
STATE_COLUMNS = ITERATION_COLUMNS[4:]       # what step_state returns, in this order



def step_state(plan: StepPlan, sched: Scheduler, split: MemorySplit | None = None) -> tuple:
    """An iteration's ``STATE_COLUMNS``, read after ``schedule`` returned ``plan`` (for ``append_step``); ``split``:
    the KV manager's ``memory_split(sched.running)`` where the caller has it already."""
    kv = sched.kv
    n_prefill = len(plan.prefill_group_ids)
    prefill_tokens = plan.num_prefill_tokens
    decode_seqs = len(plan.decode_context_tokens)
    return (n_prefill, prefill_tokens, decode_seqs, n_prefill + len(plan.decode_group_ids),
            prefill_tokens + decode_seqs, len(sched.running), len(sched.waiting), len(sched.swapped),
            len(plan.preempted), len(plan.swap_out), len(plan.swap_in), len(plan.copy_pairs),
            kv.blocks_in_use()) + (kv.memory_split(sched.running) if split is None else split).values()


def run_summary(setup, reqs: pd.DataFrame, its: pd.DataFrame, end_s: float, kv) -> dict:
    """The run's summary (:func:`kvsim.metrics.summarize`) with the KV manager's capacity and prefix-cache stats."""
    return summarize(setup, reqs, its, end_s, kv.capacity_slots, kv.prefix_cache_stats())


def request_frame(groups, table: RequestTable | None = None) -> pd.DataFrame:
    """One row per request, by id: the groups given plus those already recorded in ``table``."""
    return (table or RequestTable()).frame(groups)
