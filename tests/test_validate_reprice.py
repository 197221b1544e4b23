"""kvsim.validate_reprice: the engine's own decode steps, rebuilt from its requests and priced one by one; per
(rows, context a row) cell the pooled priced mean over the measured mean."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kvsim.validate_reprice import (EXACT_CTX, markdown, priced_steps, rows_markdown, scenario_cells,
                                    scenario_line, scenario_rows, set_table)


class _Cost:
    """A decode price that is easy to check: 1 ms a row plus 1 us a context token."""

    def decode_step_times(self, n, sums, top):
        return 0.001 * n + 1e-6 * np.asarray(sums, float)


def _run(slow: float = 1.1, steps: int = 60):
    """An engine run: one prefill step of two prompts (100 and 200 tokens), then decode steps every 10 ms; the
    200-token request finishes at 0.3 s. Decode steps of two rows take ``slow`` x their price, of one row 1x."""
    reqs = pd.DataFrame({"prompt_len": [100, 200], "first_token_s": [0.01, 0.01], "finish_s": [10.0, 0.3]})
    rows = [{"start_s": 0.0, "prefill_tokens": 300, "decode_seqs": 0, "mem_used": 300, "host_ahead": 0}]
    for i in range(steps):
        t = 0.02 + 0.01 * i
        live = reqs[(reqs.first_token_s <= t) & (reqs.finish_s > t)]
        ctx = live.prompt_len + 1 + i
        n = len(live)
        price = 0.001 * n + 1e-6 * float(ctx.sum())
        rows.append({"start_s": t, "prefill_tokens": 0, "decode_seqs": n, "mem_used": float(ctx.sum()),
                     "host_ahead": 1, "duration_s": price * (slow if n == 2 else 1.0)})
    its = pd.DataFrame(rows).fillna({"duration_s": 0.02})
    return its, reqs


def test_each_step_is_priced_at_its_own_rows_and_contexts():
    its, reqs = _run()
    s = priced_steps(_Cost(), its, reqs)
    assert len(s) == 60 and sorted(set(s.n)) == [1, 2]
    two = s[s.n == 2]
    assert len(two) == 28                                   # steps starting before 0.3 s
    assert np.allclose(two.priced_s / two.measured_s, 1 / 1.1)
    assert two.ctx_per_row.iloc[0] == pytest.approx((101 + 201) / 2)
    assert np.allclose(s[s.n == 1].priced_s, s[s.n == 1].measured_s) and s.usual.all()


def test_steps_not_prepared_ahead_mismatched_or_one_off_are_left_out_or_counted_apart():
    its, reqs = _run()
    its.loc[5, "host_ahead"] = 0                           # the engine did not prepare it ahead
    its.loc[6, "mem_used"] += 16                           # its records disagree with the rebuilt contexts
    its.loc[50, "duration_s"] *= 10                        # a one-off (a compile)
    s = priced_steps(_Cost(), its, reqs)
    assert len(s) == 58 and int((~s.usual).sum()) == 1
    c = scenario_cells("a", s)
    assert int(c[c.rows == "1"].outliers.sum()) == 1 and int(c.outliers.sum()) == 1 and int(c.steps.sum()) == 57
    assert priced_steps(object(), its, reqs).empty         # a cost model without a decode price
    assert priced_steps(_Cost(), its.iloc[:0], reqs).empty


def test_the_set_pools_steps_over_scenarios_weighted_by_steps():
    a = scenario_cells("a", priced_steps(_Cost(), *_run(slow=1.1)))
    b = scenario_cells("b", priced_steps(_Cost(), *_run(slow=1.0, steps=40)))
    t = set_table([a, b]).set_index(["rows", "ctx"])
    cell = t.loc[("2", "129-256")]
    x = pd.concat([a, b])
    x = x[(x.rows == "2") & (x.ctx == "129-256")]
    want = float((x.steps * x.mean_priced_s).sum() / (x.steps * x.mean_measured_s).sum() - 1)
    assert cell.scenarios == 2 and cell.steps == int(x.steps.sum()) and cell.rel_error == pytest.approx(want)
    assert -0.091 < cell.rel_error < 0                      # between scenario a's -9.1% and b's 0
    assert list(dict.fromkeys(t.reset_index().rows)) == ["1", "2"]
    md = markdown(set_table([a, b]))
    assert "## Engine decode steps priced one by one" in md and f"| 2 | {cell.rel_error:+.1%} (" in md
    assert set_table([]).empty and "No step could be priced" in markdown(set_table([]))


def test_a_scenarios_line_gives_its_priced_and_measured_means():
    s = priced_steps(_Cost(), *_run(slow=1.0))
    line = scenario_line(s)
    assert "60 steps, 0 one-offs left out" in line and "+0.0%" in line
    s = priced_steps(_Cost(), *_run(slow=1.25))
    two = s[s.n == 2]
    want = (s.priced_s.mean() / s.measured_s.mean() - 1)
    assert f"{want:+.1%}" in scenario_line(s) and want < 0 and len(two)
    assert scenario_line(s.iloc[:0]).startswith("No decode-only step")


def test_short_steps_by_exact_rows_pool_over_scenarios_with_their_graph_batch():
    """Steps at up to EXACT_CTX tokens a row, by their exact row count: per scenario, then pooled step-weighted, each
    row count beside the CUDA-graph batch it replays; longer steps and one-offs are not in it."""
    a = priced_steps(_Cost(), *_run(slow=1.1, steps=200))   # 2-row steps priced 1/1.1; 1-row ones past 256 tokens
    b = priced_steps(_Cost(), *_run(slow=1.0, steps=40))
    ra, rb = scenario_rows("a", a), scenario_rows("b", b)
    short = a[a.usual & (a.ctx_per_row <= EXACT_CTX)]
    assert list(ra.n) == [1, 2] and int(ra.steps.sum()) == len(short) < len(a)     # steps past 256 tokens left out
    two = pd.concat([ra, rb])
    two = two[two.n == 2]
    want = float((two.steps * two.mean_priced_s).sum() / (two.steps * two.mean_measured_s).sum() - 1)
    md = rows_markdown([ra, rb])
    line = next(x for x in md.splitlines() if x.startswith("| 2 |"))
    assert line.startswith(f"| 2 | 2 | {int(two.steps.sum())} |") and line.endswith(f"| {want:+.1%} |")
    assert -0.091 < want < 0
    assert "No such step." in rows_markdown([scenario_rows("c", a.iloc[:0])])
