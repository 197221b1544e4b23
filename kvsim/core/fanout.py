"""Parallel sampling as vLLM V1 runs it: a request with ``n > 1`` becomes ``n`` child requests.

Each child is an ordinary one-sequence :class:`~kvsim.core.sequence.SequenceGroup`
(a :class:`ChildGroup`) with the parent's prompt (its spec is the parent's with
``n = 1``, so its prompt tokens and block hashes are the parent's). Children
are queued, scheduled, preempted and freed independently; they share prompt KV
only through the prefix cache, never by fork or copy-on-write.

The records keep one row per request: :class:`FanOut` reads a parent's
children as one request (first token when the first child produced one,
finished when the last child finished, counters summed).
"""
from __future__ import annotations

import dataclasses

from kvsim.core.request import RequestSpec
from kvsim.core.sequence import GroupStatus, SequenceGroup


class ChildGroup(SequenceGroup):
    """Child ``index`` of a fanned-out request; ``group_id`` is its own (the scheduler's plans use it)."""

    __slots__ = ("child_id", "index", "request_id")

    def __init__(self, spec: RequestSpec, seq_id: int, child_id: int, index: int, request_id: int):
        super().__init__(spec, seq_id)
        self.child_id = child_id
        self.index = index
        self.request_id = request_id

    @property
    def group_id(self) -> int:
        return self.child_id


class FanOut:
    """A request's children read as the request's one record row (``kvsim.records.request_frame``)."""

    def __init__(self, spec: RequestSpec, children: list[ChildGroup]):
        self.spec = spec
        self.children = children

    @property
    def group_id(self) -> int:
        return self.spec.request_id

    @property
    def status(self) -> GroupStatus:
        st = [c.status for c in self.children]
        if GroupStatus.REJECTED in st:
            return GroupStatus.REJECTED
        if all(s is GroupStatus.FINISHED for s in st):
            return GroupStatus.FINISHED
        if GroupStatus.RUNNING in st:
            return GroupStatus.RUNNING
        return GroupStatus.WAITING

    @property
    def reject_reason(self) -> str | None:
        return next((c.reject_reason for c in self.children if c.reject_reason), None)

    def _first(self, attr: str) -> float | None:
        vals = [getattr(c, attr) for c in self.children if getattr(c, attr) is not None]
        return min(vals) if vals else None

    @property
    def first_scheduled_s(self) -> float | None:
        return self._first("first_scheduled_s")

    @property
    def first_token_s(self) -> float | None:
        return self._first("first_token_s")

    @property
    def finish_s(self) -> float | None:
        if self.status is not GroupStatus.FINISHED:
            return None
        return max(c.finish_s for c in self.children)

    def _sum(self, attr: str) -> int:
        return sum(getattr(c, attr) for c in self.children)

    @property
    def num_preemptions(self) -> int:
        return self._sum("num_preemptions")

    @property
    def num_swaps(self) -> int:
        return self._sum("num_swaps")

    @property
    def num_recomputes(self) -> int:
        return self._sum("num_recomputes")

    @property
    def cached_tokens(self) -> int:
        """Prompt tokens the children found in the prefix cache at their last admissions."""
        return self._sum("cached_tokens")

    @property
    def blocks_at_finish(self) -> int:
        return self._sum("blocks_at_finish")


def sample_index(group: SequenceGroup) -> int:
    """Which of its request's samples a group runs (0 for a request that was not fanned out)."""
    return group.index if isinstance(group, ChildGroup) else 0


def fan_out(spec: RequestSpec, first_seq_id: int, child_ids: list[int]) -> FanOut:
    """The ``spec.n`` children of a request, sequence ids from ``first_seq_id``, group ids ``child_ids``."""
    child_spec = dataclasses.replace(spec, n=1)
    children = [ChildGroup(child_spec, first_seq_id + i, cid, i, spec.request_id)
                for i, cid in enumerate(child_ids)]
    return FanOut(spec, children)
