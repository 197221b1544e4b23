"""CostModel: how long one engine iteration (a StepPlan) takes, in seconds.

Two implementations are planned: the analytical roofline
(:mod:`kvsim.cost.roofline`, any GPU from the catalogue, no GPU needed) and a
calibrated one interpolating measured profiles.

Contract every implementation must keep (the simulator relies on it):

* ``step_time(plan)`` prices everything in the plan; an empty plan costs 0.
* A *decode-only* plan (no prefill, no copy-on-write, no swaps) is priced from
  ``(n, sum(ctx), max(ctx))`` of ``ctx = plan.decode_context_tokens`` only, and
  ``step_time(plan) == decode_step_times(n, np.array([sum(ctx)]), np.array([max(ctx)]))[0]``
  bit for bit (a model may ignore the longest context). The simulator
  fast-forwards runs of decode steps with the vectorised form; stepping one by
  one must give identical floats.
"""
from __future__ import annotations

import abc

import numpy as np

from kvsim.core.plan import StepPlan


def is_decode_only(plan: StepPlan) -> bool:
    """True when the plan only decodes: no prefill, no block copies, no swaps (and some decode)."""
    return bool(plan.decode_context_tokens) and not (
        plan.prefill_new_tokens or plan.copy_pairs or plan.swap_in or plan.swap_out)


class CostModel(abc.ABC):
    """Prices StepPlans and KV transfers. Stateless: the same input always gives the same float."""

    @abc.abstractmethod
    def step_time(self, plan: StepPlan) -> float:
        """Seconds the iteration described by ``plan`` takes (0.0 for an empty plan).

        Invariant: for a decode-only plan this equals
        ``decode_step_times(n, np.array([sum(ctx)]), np.array([max(ctx)]))[0]`` exactly
        (``ctx = plan.decode_context_tokens``, ``n = len(ctx)``).
        """

    @abc.abstractmethod
    def decode_step_times(self, num_seqs: int, ctx_token_sums: np.ndarray, ctx_max: np.ndarray | None = None
                          ) -> np.ndarray:
        """Step times (float64 array, same shape as ``ctx_token_sums``) of decode-only plans.

        Each entry prices a plan with ``num_seqs`` decoding sequences whose context
        lengths sum to that entry (and whose longest is the same entry of ``ctx_max``;
        ``None`` means every context is equal). ``num_seqs == 0`` gives zeros.
        """

    def decode_run_times(self, num_seqs: int, ctx_sum: int, ctx_max: int, steps: int) -> list[float]:
        """Step times of ``steps`` decode steps in a row as a list: step ``j`` has ``num_seqs`` sequences whose
        contexts sum to ``ctx_sum + j * num_seqs``, the longest ``ctx_max + j``. Equal bit for bit to
        :meth:`decode_step_times` on those arrays (this default makes that call; a model may loop in Python,
        cheaper for the few steps of most fast-forwarded segments)."""
        j = np.arange(steps, dtype=np.float64)
        return self.decode_step_times(num_seqs, ctx_sum + num_seqs * j, ctx_max + j).tolist()

    def decode_step_times_rows(self, num_seqs: np.ndarray, ctx_token_sums: np.ndarray,
                               ctx_max: np.ndarray) -> np.ndarray:
        """:meth:`decode_step_times` for rows of differing batch sizes: entry ``i`` equals
        ``decode_step_times(num_seqs[i], sums[i:i+1], ctx_max[i:i+1])[0]`` bit for bit (the formulas are
        elementwise). This default prices each batch size's rows with one call."""
        num_seqs = np.asarray(num_seqs)
        sums = np.asarray(ctx_token_sums, dtype=np.float64)
        top = np.asarray(ctx_max, dtype=np.float64)
        out = np.empty(sums.shape, dtype=np.float64)
        for n in np.unique(num_seqs).tolist():
            rows = num_seqs == n
            out[rows] = self.decode_step_times(int(n), sums[rows], top[rows])
        return out

    @abc.abstractmethod
    def swap_time(self, num_blocks: int, block_bytes: int) -> float:
        """Seconds to move ``num_blocks`` KV blocks of ``block_bytes`` (per GPU) over the host link, one way."""

    @abc.abstractmethod
    def copy_time(self, num_blocks: int, block_bytes: int) -> float:
        """Seconds to copy ``num_blocks`` blocks on the GPU (copy-on-write: read + write each block)."""

    wake_latency_s: float = 0.0
    """Seconds from a request's arrival at an idle engine to the scheduling of its step (the engine's wake from
    its sleep; the simulator waits this long before it schedules, so requests arriving meanwhile join that
    step). 0 unless a profile measured it."""

    def wake_time(self, plan: StepPlan) -> float:
        """Extra seconds of ``plan`` when it is the first step after the engine sat idle (nothing to run):
        the GPU's clocks have dropped and ramp up during it. 0 unless a profile measured it."""
        return 0.0
