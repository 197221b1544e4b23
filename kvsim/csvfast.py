"""CSV text of a frame of numbers and plain strings: the bytes ``DataFrame.to_csv(index=False)`` writes, faster.

pandas writes a float64 or int64 column by turning each value into its
``str`` (numpy's shortest round-trip repr for floats, the same text as
Python's ``repr``; NaN as an empty field) and handing rows to the ``csv``
module, which quotes only fields holding a comma, quote or line break.
Writing a run's tens of millions of iteration rows that way costs more than
the simulation; here each column is turned into Python strings with ``repr`` /
``str`` (small non-negative ints by table lookup; a float column holding one
value throughout, such as most runs' ``swap_s``, formatted once) and rows
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


def _column(v: np.ndarray) -> list | None:
    """The column's fields as pandas writes them, or None when it might quote one."""
    if v.dtype == np.int64:
        return _ints(v)
    if v.dtype == np.float64:
        bits = v.view(np.int64)
        if len(v) > 1 and (bits == bits[0]).all():           # one value throughout (bit for bit: -0.0 is not 0.0)
            x = float(v[0])
            return ["" if x != x else repr(x)] * len(v)
        out = list(map(repr, v.tolist()))
        for i in np.flatnonzero(np.isnan(v)).tolist():
            out[i] = ""
        return out
    if v.dtype == object or v.dtype.kind in "OUT":
        vals = v.tolist()
        return vals if all(map(_plain, set(vals))) else None
    return None


def to_csv_text(frame: pd.DataFrame, header: bool = True) -> str:
    """``frame.to_csv(index=False, header=header)``'s text (lines end in ``\\n``)."""
    cols = None
    if frame.shape[1] > 1 and all(map(_plain, frame.columns)) and frame.columns.is_unique:
        cols = [_column(frame[c].to_numpy()) for c in frame.columns]
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
