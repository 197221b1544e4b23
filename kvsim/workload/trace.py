"""Request-trace reader: CSV or JSON lines with per-request arrival time and lengths.

Format by file extension: ``.csv`` (header row, comma separated) or ``.jsonl`` /
``.json`` (JSON lines: one object per non-blank line). Columns:

* required: ``arrival_s`` (seconds, >= 0), ``prompt_len`` (>= 1, includes the
  prefix), ``output_len`` (>= 1)
* optional: ``n`` (>= 1), ``beam_width`` (>= 1; > 1 needs n = 1), ``prefix_id``
  (>= 0, or -1 for none), ``prefix_len`` (>= 0, < prompt_len, > 0 needs a
  prefix_id >= 0; where prefix_len is 0 the prefix_id is set to -1). Other
  columns are ignored.

Rows need not be sorted: they are returned sorted by arrival (stable, so ties
keep file order). Every error is one line naming the file, the line number and
the column: ``workload.path: trace.csv:7: column 'prompt_len': ...``.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from dataclasses import dataclass, fields

import numpy as np

from kvsim import limits as L
from kvsim.errors import KvsimError

REQUIRED = ("arrival_s", "prompt_len", "output_len")
OPTIONAL = ("n", "beam_width", "prefix_id", "prefix_len")
FIELD = "workload.path"


@dataclass
class Trace:
    """Parsed trace, sorted by ``arrival_s``. Optional columns absent from the file are None."""

    arrival_s: np.ndarray
    prompt_len: np.ndarray
    output_len: np.ndarray
    n: np.ndarray | None = None
    beam_width: np.ndarray | None = None
    prefix_id: np.ndarray | None = None
    prefix_len: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.arrival_s)


def _err(path: str, line: int, col: str | None, msg: str) -> KvsimError:
    where = f"{path}:{line}: column '{col}': " if col else f"{path}:{line}: "
    return KvsimError(FIELD, where + msg)


def _number(path: str, line: int, col: str, raw, integer: bool):
    """Parse one cell; integers may be written as 12 or 12.0."""
    if isinstance(raw, bool) or raw is None:
        raise _err(path, line, col, f"{raw!r} is not a number")
    try:
        x = float(raw)
    except OverflowError:               # an integer beyond any float
        raise _err(path, line, col, f"{str(raw)[:20]}... is too large") from None
    except (TypeError, ValueError):
        raise _err(path, line, col, f"{raw!r} is not a number") from None
    if not math.isfinite(x):
        raise _err(path, line, col, f"{raw!r} is not a finite number")
    if abs(x) > (L.MAX_SECONDS if col == "arrival_s" else L.MAX_TOKENS):
        limit = f"{L.MAX_SECONDS:g} s" if col == "arrival_s" else f"{L.MAX_TOKENS}"
        raise _err(path, line, col, f"{raw!r} is too large; allowed: at most {limit}")
    if integer:
        if not x.is_integer():
            raise _err(path, line, col, f"{raw!r} is not an integer")
        return int(x)
    return x


def _rows(path: str):
    """Yield (line_number, mapping) for each data row."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".csv", ".jsonl", ".json"):
        raise KvsimError(FIELD, f"{path}: unknown trace extension {ext!r}; allowed: .csv, .jsonl, .json (JSON lines)")
    try:
        if os.path.isdir(path):
            raise KvsimError(FIELD, f"{path}: is a directory; allowed: a trace file")
        f = open(path, encoding="utf-8-sig", newline="")
    except OSError as e:
        raise KvsimError(FIELD, f"{path}: cannot read trace ({e.strerror or e})") from None
    with f:
        try:
            if ext == ".csv":
                reader = csv.DictReader(f, skipinitialspace=True)
                if reader.fieldnames is None:
                    raise _err(path, 1, None, "empty file; allowed: a header row with " + ", ".join(REQUIRED))
                reader.fieldnames = [c.strip() for c in reader.fieldnames]
                dup = sorted({c for c in reader.fieldnames if c and reader.fieldnames.count(c) > 1})
                if dup:
                    raise _err(path, 1, dup[0], "appears twice in the header; allowed: each column once")
                for row in reader:
                    if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                        continue
                    yield reader.line_num, {k: v for k, v in row.items() if k is not None and v is not None}
            else:
                for i, text in enumerate(f, start=1):
                    if not text.strip():
                        continue
                    try:
                        obj = json.loads(text)
                    except json.JSONDecodeError as e:
                        raise _err(path, i, None, f"not valid JSON ({e.msg})") from None
                    if not isinstance(obj, dict):
                        raise _err(path, i, None, "not a JSON object; allowed: {\"arrival_s\": ..., ...}")
                    yield i, obj
        except UnicodeDecodeError as e:
            raise KvsimError(FIELD, f"{path}: cannot read trace (not UTF-8 text: {e.reason})") from None
        except (csv.Error, OSError) as e:
            raise KvsimError(FIELD, f"{path}: cannot read trace ({e})") from None


_LAST: dict = {}     # the last trace read: (real path, sha1 of its bytes) -> Trace (callers get copies)


def read_trace(path: str) -> Trace:
    """Read and check a trace file; see the module docstring for the format and checks. A run reads its trace
    more than once (the run header counts its rows): the last file parsed is kept, keyed by its contents, and
    each caller gets its own copy of the arrays."""
    key = None
    try:
        with open(path, "rb") as f:
            digest = hashlib.sha1()
            while chunk := f.read(1 << 20):     # (a chunk at a time: a trace may be large)
                digest.update(chunk)
            key = (os.path.realpath(path), digest.hexdigest())
    except OSError:
        pass                                    # (_read_trace says what is wrong with the path)
    trace = _LAST.get(key) if key is not None else None
    if trace is None:
        trace = _read_trace(path)
        if key is not None:
            _LAST.clear()
            _LAST[key] = trace
    return Trace(**{f.name: (None if (v := getattr(trace, f.name)) is None else v.copy()) for f in fields(Trace)})


def _read_csv_fast(path: str) -> Trace | None:
    """A valid CSV trace read column-wise (pandas, floats parsed as Python's ``float`` does); None for anything
    else — another format, or a file with any cell or row :func:`_read_trace_rows` would refuse, skip or read as
    absent — which the row-by-row reader then reads (and words the error of). The same arrays as that reader."""
    if os.path.splitext(path)[1].lower() != ".csv" or os.path.isdir(path):
        return None
    try:
        import pandas as pd
        with open(path, encoding="utf-8-sig", newline="") as f:
            header = next(csv.reader(f, skipinitialspace=True), None)
        if not header:
            return None
        names = [c.strip() for c in header]
        if len(set(names)) < len(names) or not set(REQUIRED) <= set(names) or names != header:
            return None
        want = [c for c in REQUIRED + OPTIONAL if c in names]
        # floats as Python's float() reads them: pandas 3's default parser does (checked on 200,000 random
        # strings); older pandas needs round_trip
        exact = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}
        df = pd.read_csv(path, encoding="utf-8-sig", skipinitialspace=True, usecols=want, on_bad_lines="error",
                         skip_blank_lines=True, **exact)
    except (OSError, UnicodeDecodeError, ValueError, csv.Error, StopIteration, pd.errors.ParserError):
        return None
    count = len(df)
    # numbers only: a column pandas read as text or booleans ("True" is not a number to the row reader)
    if not 0 < count <= L.MAX_REQUESTS or any(df[c].dtype.kind not in "iuf" for c in want):
        return None
    v = {c: df[c].to_numpy(dtype=np.float64) for c in want}
    if not all(np.isfinite(x).all() for x in v.values()):
        return None                     # empty cells, inf, nan: the row reader's business
    if not (v["arrival_s"] >= 0).all() or (v["arrival_s"] > L.MAX_SECONDS).any():
        return None
    ints = {c: x for c, x in v.items() if c != "arrival_s"}
    if any((np.abs(x) > L.MAX_TOKENS).any() or (np.floor(x) != x).any() for x in ints.values()):
        return None
    i = {c: x.astype(np.int64) for c, x in ints.items()}
    ones, none = np.ones(count, dtype=np.int64), np.full(count, -1, dtype=np.int64)
    n, beam = i.get("n", ones), i.get("beam_width", ones)
    plen, pid = i.get("prefix_len", np.zeros(count, dtype=np.int64)), i.get("prefix_id", none)
    if (i["prompt_len"] < 1).any() or (i["output_len"] < 1).any() or ((n < 1) | (n > L.MAX_SAMPLES)).any() \
            or ((beam < 1) | (beam > L.MAX_SAMPLES)).any() or ((beam > 1) & (n != 1)).any() or (plen < 0).any() \
            or (plen >= i["prompt_len"]).any() or (pid < -1).any() or ((plen > 0) & (pid < 0)).any():
        return None
    if "prefix_id" in i:
        i["prefix_id"] = np.where(plen == 0, -1, pid)        # no prefix tokens means no shared prefix
    order = np.argsort(v["arrival_s"], kind="stable")
    return Trace(arrival_s=v["arrival_s"][order], prompt_len=i["prompt_len"][order], output_len=i["output_len"][order],
                 **{c: (i[c][order] if c in i else None) for c in OPTIONAL})


def _read_trace(path: str) -> Trace:
    fast = _read_csv_fast(path)
    return fast if fast is not None else _read_trace_rows(path)


def _read_trace_rows(path: str) -> Trace:
    cols: dict[str, list] = {c: [] for c in REQUIRED + OPTIONAL}
    seen_optional: set[str] = set()
    count = 0
    for line, row in _rows(path):
        vals = {}
        for c in REQUIRED:
            if c not in row or (isinstance(row[c], str) and not row[c].strip()):
                raise _err(path, line, c, "missing; required columns: " + ", ".join(REQUIRED))
            vals[c] = _number(path, line, c, row[c], integer=(c != "arrival_s"))
        for c in OPTIONAL:
            if c in row and not (isinstance(row[c], str) and not row[c].strip()):
                vals[c] = _number(path, line, c, row[c], integer=True)
                seen_optional.add(c)
        if vals["arrival_s"] < 0:
            raise _err(path, line, "arrival_s", f"{vals['arrival_s']} is negative; allowed: >= 0")
        for c in ("prompt_len", "output_len"):
            if vals[c] < 1:
                raise _err(path, line, c, f"{vals[c]} is not allowed; allowed: integer >= 1")
        for c in ("n", "beam_width"):
            if not 1 <= vals.get(c, 1) <= L.MAX_SAMPLES:
                raise _err(path, line, c, f"{vals[c]} is not allowed; allowed: integer in [1, {L.MAX_SAMPLES}]")
        if vals.get("beam_width", 1) > 1 and vals.get("n", 1) != 1:
            raise _err(path, line, "n", f"{vals['n']} with beam_width {vals['beam_width']}; allowed: n = 1 for beam search")
        plen, pid = vals.get("prefix_len", 0), vals.get("prefix_id", -1)
        if plen < 0:
            raise _err(path, line, "prefix_len", f"{plen} is negative; allowed: 0 <= prefix_len < prompt_len")
        if plen >= vals["prompt_len"]:
            raise _err(path, line, "prefix_len", f"{plen} is not less than prompt_len {vals['prompt_len']}; "
                       "allowed: 0 <= prefix_len < prompt_len")
        if pid < -1:
            raise _err(path, line, "prefix_id", f"{pid} is not allowed; allowed: -1 (none) or >= 0")
        if plen > 0 and pid < 0:
            raise _err(path, line, "prefix_id", f"missing or -1 while prefix_len is {plen}; allowed: >= 0")
        if plen == 0:
            vals["prefix_id"] = -1  # no prefix tokens means no shared prefix
        for c in REQUIRED:
            cols[c].append(vals[c])
        for c, default in (("n", 1), ("beam_width", 1), ("prefix_id", -1), ("prefix_len", 0)):
            cols[c].append(vals.get(c, default))
        count += 1
        if count > L.MAX_REQUESTS:
            raise _err(path, line, None, f"more than {L.MAX_REQUESTS} rows; allowed: at most {L.MAX_REQUESTS}")
    if count == 0:
        raise KvsimError(FIELD, f"{path}: trace has no requests; allowed: at least one data row")
    arrival = np.asarray(cols["arrival_s"], dtype=np.float64)
    order = np.argsort(arrival, kind="stable")

    def arr(c: str) -> np.ndarray:
        return np.asarray(cols[c], dtype=np.int64)[order]

    return Trace(
        arrival_s=arrival[order],
        prompt_len=arr("prompt_len"),
        output_len=arr("output_len"),
        **{c: (arr(c) if c in seen_optional else None) for c in OPTIONAL},
    )
