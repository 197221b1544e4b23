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

from kvsim.core.plan import StepPlan
from kvsim.core.scheduler import Scheduler
from kvsim.core.sequence import SequenceGroup
from kvsim.iterlog import ITERATION_COLUMNS, IterationLog  # noqa: F401  (IterationLog: re-exported)
from kvsim.metrics import summarize

TIMING_COLUMNS = ITERATION_COLUMNS[:4]
STATE_COLUMNS = ITERATION_COLUMNS[4:]       # what step_state returns, in this order

REQUEST_COLUMNS = (
    "request_id", "status", "arrival_s", "first_scheduled_s", "first_token_s", "finish_s",
    "prompt_len", "output_len", "n", "beam_width", "prefix_id", "prefix_len",
    "preemptions", "swaps", "recomputes", "cached_tokens", "blocks_at_finish", "reject_reason",
)


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
