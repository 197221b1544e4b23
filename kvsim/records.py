"""The record schema shared by the simulator and the real engine.

One row per request and one row per iteration; both are plain column lists
while a run is in progress and become pandas DataFrames at the end.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from kvsim.core.sequence import SequenceGroup

ITERATION_COLUMNS = (
    "iter", "start_s", "duration_s", "swap_s",
    "prefill_groups", "prefill_tokens", "decode_seqs", "batched_requests", "batched_tokens",
    "running", "waiting", "swapped", "preempted", "swap_out_blocks", "swap_in_blocks", "cow_copies",
    "blocks_in_use", "mem_used", "mem_internal", "mem_reserved", "mem_external", "mem_free", "mem_logical",
)

REQUEST_COLUMNS = (
    "request_id", "status", "arrival_s", "first_scheduled_s", "first_token_s", "finish_s",
    "prompt_len", "output_len", "n", "beam_width", "prefix_id", "prefix_len",
    "preemptions", "swaps", "recomputes", "cached_tokens", "blocks_at_finish", "reject_reason",
)


class IterationLog:
    """Column-wise iteration records (appending to lists is cheap; numpy arrays come at the end)."""

    def __init__(self):
        self.cols: dict[str, list] = {c: [] for c in ITERATION_COLUMNS}

    def append(self, **row) -> None:
        cols = self.cols
        for c in ITERATION_COLUMNS:
            cols[c].append(row[c])

    def extend(self, block: dict[str, np.ndarray]) -> None:
        """Append many rows at once (fast-forwarded steps); every column must be given."""
        cols = self.cols
        for c in ITERATION_COLUMNS:
            cols[c].extend(np.asarray(block[c]).tolist())

    def __len__(self) -> int:
        return len(self.cols["iter"])

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({c: self.cols[c] for c in ITERATION_COLUMNS})


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
