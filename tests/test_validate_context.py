"""kvsim.validate_context: a set's decode-only steps by batch and by the context each request held, the median
over scenarios of the simulator's error in each cell."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kvsim.validate_context import MIN_CELL_STEPS, markdown, scenario_cells, set_table


def _its(rows: int, kv: float, dur: float, steps: int) -> pd.DataFrame:
    """Decode-only records: ``steps`` steps of ``rows`` rows, each request holding ``kv`` tokens, ``dur`` s each."""
    return pd.DataFrame({"duration_s": np.full(steps, dur), "prefill_tokens": 0, "decode_seqs": rows,
                         "swap_in_blocks": 0, "swap_out_blocks": 0, "cow_copies": 0,
                         "running": rows, "mem_used": rows * kv})


def test_cells_bin_by_rows_and_context_and_the_set_takes_the_median_over_scenarios():
    n = MIN_CELL_STEPS
    cells = []
    for name, err in (("a", -0.02), ("b", -0.04), ("c", 0.10)):
        eng = pd.concat([_its(4, 100, 0.010, n), _its(4, 700, 0.012, n), _its(16, 300, 0.020, n)])
        sim = pd.concat([_its(4, 100, 0.010 * (1 + err), n), _its(4, 700, 0.012, n),
                         _its(16, 300, 0.020, n - 1 if name == "c" else n)])      # c: too few steps at 16 rows
        cells.append(scenario_cells(name, sim, eng))
    a = cells[0].set_index(["rows", "kv"])
    assert set(a.index) == {("3-4", "≤128"), ("3-4", "513-1024"), ("9-16", "257-512")}
    assert a.loc[("3-4", "≤128"), "mean_predicted_s"] == pytest.approx(0.0098)
    t = set_table(cells).set_index(["rows", "kv"])
    assert t.loc[("3-4", "≤128"), "median_rel_error"] == pytest.approx(-0.02)       # of -2%, -4%, +10%
    assert t.loc[("3-4", "≤128"), "scenarios"] == 3 and t.loc[("3-4", "≤128"), "steps_measured"] == 3 * n
    assert t.loc[("3-4", "513-1024"), "median_rel_error"] == pytest.approx(0.0)
    assert t.loc[("9-16", "257-512"), "scenarios"] == 2                                # c left out there
    assert list(t.reset_index().rows) == ["3-4", "3-4", "9-16"]                         # rows bins in order
    md = markdown(set_table(cells))
    assert "| 3-4 | -2.0% (3) | – | +0.0% (3) |" in md and "| 9-16 | – | +0.0% (2) | – |" in md


def test_steps_of_other_kinds_or_without_a_running_request_are_not_counted():
    n = MIN_CELL_STEPS
    eng = pd.concat([_its(4, 100, 0.01, n), _its(4, 100, 0.5, 3).assign(prefill_tokens=64),
                     _its(4, 100, 0.5, 3).assign(cow_copies=1), _its(4, 100, 0.5, 3).assign(running=0)])
    c = scenario_cells("s", _its(4, 100, 0.01, n), eng)
    assert len(c) == 1 and c.steps_measured.iloc[0] == n and c.mean_measured_s.iloc[0] == pytest.approx(0.01)
    assert set_table([]).empty and "No cell" in markdown(set_table([]))
