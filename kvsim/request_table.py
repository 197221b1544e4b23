"""The per-request records as columns of plain numbers, filled as requests end.

A million-request simulation would otherwise hold a million finished
``SequenceGroup`` objects (with their sequences) until the end, then a million
row tuples to build the frame from. :class:`RequestTable` keeps each request's
``REQUEST_COLUMNS`` values in one stdlib ``array`` per column (a few bytes a
value), so the simulator can record finished and rejected groups as they end
and let the groups go (:meth:`RequestTable.take_done`). :meth:`frame` builds the
same DataFrame, dtypes and values, as building it from row tuples did (ids in
order; unset times are NaN).
"""
from __future__ import annotations

from array import array

import numpy as np
import pandas as pd

REQUEST_COLUMNS = (
    "request_id", "status", "arrival_s", "first_scheduled_s", "first_token_s", "finish_s",
    "prompt_len", "output_len", "n", "beam_width", "prefix_id", "prefix_len",
    "preemptions", "swaps", "recomputes", "cached_tokens", "blocks_at_finish", "reject_reason",
)
_FLOATS = ("arrival_s", "first_scheduled_s", "first_token_s", "finish_s")
_STRINGS = ("status", "reject_reason")
_NAN = float("nan")


def _f(x) -> float:
    return _NAN if x is None else x


def group_row(g) -> tuple:
    """A group's (or a :class:`~kvsim.core.fanout.FanOut`'s) values, in ``REQUEST_COLUMNS`` order."""
    s = g.spec
    return (s.request_id, g.status.value, s.arrival_s, _f(g.first_scheduled_s), _f(g.first_token_s),
            _f(g.finish_s), s.prompt_len, s.output_len, s.n, s.beam_width, s.prefix_id, s.prefix_len,
            g.num_preemptions, g.num_swaps, g.num_recomputes, g.cached_tokens, g.blocks_at_finish,
            g.reject_reason or "")


class RequestTable:
    """Request records, one column each (see the module doc)."""

    def __init__(self):
        self._cols = {c: [] if c in _STRINGS else array("d" if c in _FLOATS else "q") for c in REQUEST_COLUMNS}
        self._taken = [0, 0]          # finished / rejected groups already recorded by take_done

    def __len__(self) -> int:
        return len(self._cols["request_id"])

    @property
    def taken(self) -> int:
        """Finished plus rejected groups recorded by :meth:`take_done` so far."""
        return self._taken[0] + self._taken[1]

    def add(self, groups) -> None:
        rows = [group_row(g) for g in groups]
        if rows:                                  # a column at a time: one extend each, not a value each
            for c, values in zip(REQUEST_COLUMNS, zip(*rows)):
                self._cols[c].extend(values)

    def take_done(self, sched) -> None:
        """Record the scheduler's newly finished and rejected groups and drop them from its ``groups`` map
        (their places in ``finished`` / ``rejected`` keep counting, as ``None``)."""
        for k, done in enumerate((sched.finished, sched.rejected)):
            new = done[self._taken[k]:]
            if not new:
                continue
            self.add(new)
            for i in range(self._taken[k], len(done)):
                sched.groups.pop(done[i].group_id, None)
                done[i] = None
            self._taken[k] = len(done)

    def frame(self, rest=()) -> pd.DataFrame:
        """The records of every request: those added plus the groups ``rest``, by request id (the table is
        emptied: its columns move into the frame)."""
        self.add(rest)
        if not len(self):
            return pd.DataFrame([], columns=list(REQUEST_COLUMNS)).astype({c: float for c in _FLOATS[1:]})
        ids = np.frombuffer(self._cols["request_id"], dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        del ids
        data = {}
        for c in REQUEST_COLUMNS:                 # a column at a time, each let go once copied: one extra column
            v = self._cols[c]
            if c in _STRINGS:
                data[c] = [v[i] for i in order.tolist()]
            else:
                data[c] = np.frombuffer(v, dtype=np.float64 if c in _FLOATS else np.int64)[order]
            self._cols[c] = [] if c in _STRINGS else array(v.typecode)
            del v
        return pd.DataFrame(data, copy=False)     # no copy into consolidated blocks
