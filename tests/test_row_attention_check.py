"""benchmarks/engine/row_attention_check.py: its pricing of a padded decode step at the real rows (a check script's
model, not the cost model's) leaves graph-sized steps alone, moves padded ones, and is undone on leaving."""
from __future__ import annotations

import numpy as np

from tests._scripts import ROOT, load_script


def test_own_rows_moves_only_padded_steps_and_is_undone():
    m = load_script("benchmarks/engine/row_attention_check.py")
    cost_of = load_script("benchmarks/engine/extra_scaling_check.py").cost_of
    cost = cost_of(ROOT / "scenarios" / "validation" / "v02_opt13b_sharegpt_paged_med.yaml",
                   str(ROOT / "calibrate" / "profiles" / "H100" / "opt-13b-async-1207d.json"))
    sums = np.array([16 * 300.0]), np.array([9 * 300.0])
    before = [cost.decode_step_times(16, sums[0], np.array([300.0]))[0],
              cost.decode_step_times(9, sums[1], np.array([300.0]))[0]]
    with m.own_rows():
        cost._dec_cache.clear()
        inside = [cost.decode_step_times(16, sums[0], np.array([300.0]))[0],
                  cost.decode_step_times(9, sums[1], np.array([300.0]))[0]]
    cost._dec_cache.clear()
    after = [cost.decode_step_times(16, sums[0], np.array([300.0]))[0],
             cost.decode_step_times(9, sums[1], np.array([300.0]))[0]]
    assert inside[0] == before[0]                    # 16 rows replay the 16-row graph: nothing padded
    assert abs(inside[1] - before[1]) > 1e-5         # 9 rows in the 16-row graph: priced at their own rows
    assert after == before
