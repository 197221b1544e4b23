"""CSV text of a frame of numbers and plain strings: the bytes ``DataFrame.to_csv(index=False)`` writes, faster.

pandas writes a float64 or int64 column by turning each value into its
``str`` (numpy's shortest round-trip repr for floats, the same text as
Python's ``repr``; NaN as an empty field) and handing rows to the ``csv``
module, which quotes only fields holding a comma, quote or line break.
Writing a run's tens of millions of iteration rows that way costs more than
the simulation; here each column is turned into Python strings with ``repr`` /
``str`` (small non-negative ints by table lookup; a float column holding one
value throughout, such as most runs' ``swap_s``, formatted once; a float column
whose values mostly equal an earlier one's in the same row or the row after,
such as ``segments.csv``'s ``end_s`` and ``start_s``, reusing those fields) and rows
joined with commas, which gives the same text when every column is int64,
float64 or strings that need no quoting (and there are at least two columns: a
lone empty field would be quoted). Any other frame goes to ``to_csv`` unchanged. Tested against
``to_csv`` on run records and on edge values (tiny, huge, negative zero, NaN,
infinities, subnormals, exponent boundaries).
"""
from __future__ import annotations

import numpy as np
import pandas as pd


_SMALL: list = []          # str(i) for i in 0 .. 2**16 - 1, as an object array (built on first use)


def _ints(v: np.ndarray) -> list:
    """``[str(x) for x in v]``; small non-negative values (most columns) by table lookup."""
    if len(v) and v.min() >= 0 and v.max() < 1 << 16:
        if not _SMALL:
            _SMALL.append(np.array([str(i) for i in range(1 << 16)], dtype=object))
        return _SMALL[0][v].tolist()
    return list(map(str, v.tolist()))


def _plain(x) -> bool:
    return isinstance(x, str) and not any(ch in x for ch in ',"\n\r')


def _floats(v: np.ndarray, done: list) -> list:
    """A float64 column's fields: ``repr`` of each value, NaN empty; a value equal bit for bit to the one a
    column in ``done`` (``(bits, fields)`` of the float columns formatted before) holds in the same row or the
    row after (``segments.csv``'s start of a record is the end of the one before) reuses that field, where most
    values do."""
    bits = v.view(np.int64)
    n = len(v)
    if n > 1 and (bits == bits[0]).all():                    # one value throughout (bit for bit: -0.0 is not 0.0)
        x = float(v[0])
        return ["" if x != x else repr(x)] * n
    for pb, pf in done:
        if n > 1 and pb[0] != pb[-1]:                        # (a one-value column shares no run of values)
            for shift in (0, 1):
                same = bits[:n - shift] == pb[shift:]
                if 2 * int(np.count_nonzero(same)) > n:
                    out = pf[shift:] + [None] * shift
                    vals = v.tolist()
                    for i in np.flatnonzero(~same).tolist() + list(range(n - shift, n)):
                        x = vals[i]
                        out[i] = "" if x != x else repr(x)
                    return out
    out = list(map(repr, v.tolist()))
    for i in np.flatnonzero(np.isnan(v)).tolist():
        out[i] = ""
    return out


def _column(v: np.ndarray, done: list) -> list | None:
    """The column's fields as pandas writes them, or None when it might quote one; ``done``: the float columns
    formatted so far, as ``(bits, fields)`` (:func:`_floats` may reuse their fields; this one is added)."""
    if v.dtype == np.int64:
        return _ints(v)
    if v.dtype == np.float64:
        out = _floats(v, done)
        done.append((v.view(np.int64), out))
        return out
    if v.dtype == object or v.dtype.kind in "OUT":
        vals = v.tolist()
        return vals if all(map(_plain, set(vals))) else None
    return None


def to_csv_text(frame: pd.DataFrame, header: bool = True) -> str:
    """``frame.to_csv(index=False, header=header)``'s text (lines end in ``\\n``)."""
    cols = None
    if frame.shape[1] > 1 and all(map(_plain, frame.columns)) and frame.columns.is_unique:
        done = []
        cols = [_column(frame[c].to_numpy(), done) for c in frame.columns]
    if cols is None or any(c is None for c in cols):
        return frame.to_csv(index=False, header=header, lineterminator="\n")
    body = "\n".join(map(",".join, zip(*cols)))
    head = ",".join(frame.columns) + "\n" if header else ""
    return head + body + ("\n" if len(frame) else "")


PIECE = 8192          # rows turned into strings at a time (a few MB of str objects)


def write_csv(frame: pd.DataFrame, f, header: bool = True) -> None:
    """Write :func:`to_csv_text` to the open text file ``f``, ``PIECE`` rows at a time."""
    if len(frame) <= PIECE:
        f.write(to_csv_text(frame, header))
        return
    for i in range(0, len(frame), PIECE):
        f.write(to_csv_text(frame.iloc[i:i + PIECE], header and i == 0))
