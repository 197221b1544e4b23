"""V0 vs V1 in ``kvsim paper``: both policies per workload, v1 never swaps, beam refused in one line,
and the block-size report's v1 column (small real runs, plus synthetic curves for the readings)."""
from __future__ import annotations

import pandas as pd
import pytest

from kvsim.errors import KvsimError
from kvsim.paper import _sc
from kvsim.report import paper_v1
from kvsim.report.blocksize import analyse
from kvsim.sweeps import sweep
from tests._cli import cli

RATE, POL = "workload.rate_req_s", "engine.policy"


@pytest.fixture(scope="module")
def small():
    """The paper's v0 vs v1 experiments at two rates and 60 requests per point (a few seconds)."""
    run = lambda name, grid, extra=(): sweep(_sc(name), grid, list(extra) + ["workload.num_requests=60"],  # noqa: E731
                                             jobs=2)
    rates = [2.0, 8.0]
    v0 = run("fig12_opt13b_sharegpt_paged", {RATE: rates})
    mp = pytest.MonkeyPatch()
    mp.setattr(paper_v1, "PARALLEL_RATES_QUICK", [6, 60])
    try:
        res = paper_v1.experiments(run, True, v0, rates)
    finally:
        mp.undo()
    return res, paper_v1.measure(res, 0.1)


def test_every_workload_has_both_policies(small):
    res, m = small
    assert set(m["parallel"]) == set(paper_v1.WIDTHS)
    for n, c in m["parallel"].items():
        assert set(c) == set(paper_v1.POLICIES), n
    assert set(m["sharegpt"]) == {"v0", "v1"}
    text = "\n".join(paper_v1.summary_lines(m))
    for n in paper_v1.WIDTHS:
        assert f"| parallel sampling n={n} |" in text
    assert "| ShareGPT-like, n=1 |" in text


def test_v1_rows_never_swap_and_v1_fans_out(small):
    res, _ = small
    par = res["v1_parallel"]
    v1 = par[par[POL] != "v0"]
    assert len(v1) and (v1.preemptions_swap == 0).all()
    assert (res["v1_sharegpt"].query(f"`{POL}` == 'v1'").preemptions_swap == 0).all()
    # without the prefix cache v1's children share no blocks; v0's group forks its prompt
    assert (par[par[POL] == "v1"].sharing_saved_frac == 0).all()
    assert (par[par[POL] == "v0"].sharing_saved_frac > 0).all()


def test_beam_is_refused_not_invented(small):
    _, m = small
    assert m["beam"].startswith("workload.beam_width:") and "\n" not in m["beam"]
    text = "\n".join(paper_v1.summary_lines(m))
    assert "Beam search" in text and m["beam"] in text


def test_readings_follow_synthetic_knees():
    # latency 0.03 until the knee k, then +1 per req/s: 0.1 s/token is crossed at k + 0.07
    rows = [{POL: p, "workload.n": 2, RATE: r, "normalized_latency_s": 0.03 + max(0, r - k) * 1.0,
             "requests_total": 100, "preemptions": 0, "preemptions_swap": 0, "preemptions_recompute": 0,
             "sharing_saved_frac": 0.0, "prefix_cache_hit_frac": 0.0, "avg_batched_requests": 10.0,
             "throughput_tok_s": 1.0} for p, k in (("v0", 4.0), ("v1", 6.0), ("v1 + prefix cache", 6.0))
            for r in (2, 4, 6, 8, 10)]
    par = pd.DataFrame(rows)
    share = par[par[POL] != "v1 + prefix cache"].drop(columns="workload.n")
    m = paper_v1.measure({"v1_parallel": par, "v1_sharegpt": share,
                          "v1_beam": pd.DataFrame([{POL: "v1", "error": "x: refused"}])}, 0.1)
    c = m["parallel"][2]
    assert (c["v0"]["rate"], c["v1"]["rate"]) == (pytest.approx(4.07), pytest.approx(6.07))
    assert f"{6.07 / 4.07:.2f}x" in "\n".join(paper_v1.summary_lines(m))


def test_block_size_report_gains_a_v1_column():
    a = analyse(_sc("fig18b_block_size_sharegpt"), {"normalized_latency_s": 0.1}, block_sizes=[64],
                requests=120, jobs=2, compare_v1=True)
    t = a.table
    assert {"max_rate_v1", "preemptions_per_req_v1", "batched_v1"} <= set(t.columns)
    assert (t.swaps_per_req_v1.fillna(0) == 0).all()
    assert "v1 sustains" in a.v1_reason or "v1 meets the SLOs at no block size" in a.v1_reason
    assert "swap" in a.modes                     # the v0 choice keeps both of its modes


def test_compare_v1_from_a_v1_scenario_is_one_line(capsys, tmp_path):
    with pytest.raises(KvsimError, match="--compare-v1"):
        analyse(_sc("fig18b_block_size_sharegpt"), {"normalized_latency_s": 0.1}, block_sizes=[16],
                overrides=["engine.policy=v1"], compare_v1=True)
    rc, _, err = cli(capsys, "report", "block-size", _sc("fig18b_block_size_sharegpt"), "--set", "engine.policy=v1",
                     "--block-sizes", "16", "--compare-v1", "--out", tmp_path / "r", "--quiet")
    assert rc == 2 and err.startswith("error: --compare-v1") and err.count("\n") == 1
