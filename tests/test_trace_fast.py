"""The column-wise CSV trace reader (``_read_csv_fast``) gives exactly the row reader's arrays on valid traces, and
declines (None) every file the row reader refuses, so the errors stay the row reader's one-line messages."""
from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvsim.errors import KvsimError
from kvsim.workload import trace as T

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _same(a: T.Trace, b: T.Trace) -> bool:
    for f in fields(T.Trace):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if (x is None) != (y is None) or (x is not None and (x.dtype != y.dtype or not np.array_equal(x, y))):
            return False
    return True


def _fmt_int(draw, v: int) -> str:
    return draw(st.sampled_from([str(v), f"{v}.0", f"{float(v):e}", f" {v}", f'"{v}"']))


@st.composite
def valid_csv(draw):
    rows = draw(st.integers(1, 40))
    opt = draw(st.lists(st.sampled_from(T.OPTIONAL), unique=True, max_size=4))
    extra = draw(st.booleans())
    cols = list(T.REQUIRED) + opt + (["note"] if extra else [])
    cols = draw(st.permutations(cols))
    lines = [", ".join(cols) if draw(st.booleans()) else ",".join(cols)]
    for _ in range(rows):
        prompt = draw(st.integers(1, 5000))
        beam = draw(st.sampled_from([1, 1, 2, 4])) if "beam_width" in opt else 1
        vals = {"arrival_s": repr(draw(st.sampled_from([0.0, 0.5, 1.0, 1e-3]) | st.floats(0, 1e6, allow_nan=False))),
                "prompt_len": _fmt_int(draw, prompt), "output_len": _fmt_int(draw, draw(st.integers(1, 4000))),
                "n": _fmt_int(draw, 1 if beam > 1 else draw(st.integers(1, 8))),
                "beam_width": _fmt_int(draw, beam), "note": draw(st.sampled_from(["x", "", "a b"]))}
        plen = draw(st.integers(0, prompt - 1)) if "prefix_len" in opt else 0
        pid = draw(st.integers(0, 9)) if plen > 0 or draw(st.booleans()) else -1
        if "prefix_id" not in opt and plen > 0:
            plen = 0
        vals["prefix_len"], vals["prefix_id"] = _fmt_int(draw, plen), _fmt_int(draw, pid)
        lines.append(",".join(vals[c] for c in cols))
    bom = "\ufeff" if draw(st.booleans()) else ""
    return bom + "\n".join(lines) + ("\n" if draw(st.booleans()) else "")


@settings(max_examples=150, **SETTINGS)
@given(text=valid_csv())
def test_column_reader_equals_row_reader_on_valid_traces(tmp_path, text):
    p = tmp_path / "t.csv"
    p.write_text(text, encoding="utf-8")
    fast = T._read_csv_fast(str(p))
    assert fast is not None
    assert _same(fast, T._read_trace_rows(str(p)))


BAD = ["arrival_s,prompt_len,output_len\n-1,5,5\n", "arrival_s,prompt_len,output_len\n0,0,5\n",
       "arrival_s,prompt_len,output_len\n0,5.5,5\n", "arrival_s,prompt_len,output_len\n0,5,\n",
       "arrival_s,prompt_len,output_len\n0,5,5\n,,\n",
       "arrival_s,prompt_len,prompt_len,output_len\n0,5,5,5\n", "arrival_s,prompt_len\n0,5\n",
       "arrival_s,prompt_len,output_len\ninf,5,5\n", "arrival_s,prompt_len,output_len\n0,abc,5\n",
       "arrival_s,prompt_len,output_len,n,beam_width\n0,5,5,2,2\n",
       "arrival_s,prompt_len,output_len,prefix_len\n0,5,5,2\n", "arrival_s,prompt_len,output_len,prefix_len,prefix_id\n0,5,5,5,1\n",
       "arrival_s,prompt_len,output_len,n\n0,5,5,\n0,5,5,2\n", "arrival_s,prompt_len,output_len\n", "",
       "arrival_s,prompt_len,output_len\n0,99999999999,5\n", "arrival_s,prompt_len,output_len\n0,True,5\n",
       "arrival_s,prompt_len,output_len\n0,True,5\n1,False,5\n", "arrival_s,prompt_len,output_len\n0,NA,5\n",
       "arrival_s,prompt_len,output_len\n0,0x10,5\n"]


def test_extra_cells_are_read_as_the_row_reader_reads_them(tmp_path):
    """A row with more cells than the header: the row reader ignores the extra ones; so does the column reader."""
    p = tmp_path / "t.csv"
    p.write_text("arrival_s,prompt_len,output_len\n0,5,5,9\n1,6,7\n", encoding="utf-8")
    fast = T._read_csv_fast(str(p))
    assert fast is None or _same(fast, T._read_trace_rows(str(p)))


@pytest.mark.parametrize("text", BAD)
def test_column_reader_declines_what_the_row_reader_refuses_or_reads_otherwise(tmp_path, text):
    """A file the row reader refuses gets its one-line error (the column reader declines it); a file it reads
    differently (a blank-valued row skipped, an optional column half empty) is read by the row reader."""
    p = tmp_path / "t.csv"
    p.write_text(text, encoding="utf-8")
    assert T._read_csv_fast(str(p)) is None
    try:
        want = T._read_trace_rows(str(p))
    except KvsimError as e:
        with pytest.raises(KvsimError) as got:
            T._read_trace(str(p))
        assert got.value.field == e.field and str(got.value) == str(e) and "\n" not in str(e)
    else:
        assert _same(T._read_trace(str(p)), want)
