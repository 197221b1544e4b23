"""``kvsim paper``'s readings and SUMMARY.md on synthetic sweep results (no simulation)."""
from __future__ import annotations

import pandas as pd
import pytest

from kvsim.report.paper_measure import measured
from kvsim.report.paper_summary import difference, summary_markdown

RATE, SYS = "workload.rate_req_s", "engine.allocator"
KNEES = {"paged": 2.0, "orca_oracle": 1.0, "orca_pow2": 0.8, "orca_max": 0.4, "static (FT-like)": 0.1}
BATCH = {"paged": 30.0, "orca_oracle": 12.0, "orca_pow2": 10.0, "orca_max": 6.0, "static (FT-like)": 5.0}


def _curves(rates, knees, batch):
    # latency 0.03 s/token until the knee, then +0.14 per 0.1 of rate; batch grows with the rate up to a cap
    return pd.DataFrame([{SYS: s, RATE: r, "normalized_latency_s": 0.03 + max(0.0, r - k) * 1.4,
                          "avg_batched_requests": min(batch[s], 15 * r)}
                         for s, k in knees.items() for r in rates])


def _res() -> dict:
    split = {"paged": (0.97, 0.0, 0.01, 0.0, 0.02), "orca_oracle": (0.5, 0.01, 0.4, 0.06, 0.03),
             "orca_pow2": (0.42, 0.23, 0.3, 0.03, 0.02), "orca_max": (0.23, 0.47, 0.16, 0.01, 0.13)}
    fig2 = pd.DataFrame([{SYS: a, "mem_used_frac": u, "mem_internal_frag_frac": i, "mem_reserved_frac": r,
                          "mem_external_frag_frac": e, "mem_free_frac": f, "iterations": 100, "time_frac": 0.8,
                          "run_mem_used_frac": u * 0.6, RATE: 2.5, "free_below_frac": 0.05}
                         for a, (u, i, r, e, f) in split.items()])
    par = pd.DataFrame([{"workload.n": n, SYS: a, "throughput_tok_s": 100 * (1 + 0.1 * n * (a == "paged")),
                         "sharing_saved_frac": 0.02 * n} for n in (2, 4, 6) for a in ("paged", "orca_oracle")])
    beam = par.rename(columns={"workload.n": "workload.beam_width"}).assign(sharing_saved_frac=lambda d: 0.1 * d[
        "workload.beam_width"])
    f16 = pd.DataFrame([{"shots": s, "engine.enable_prefix_caching": c, RATE: 40, "throughput_tok_s": 200 if c else 100}
                        for s in ("1shot", "5shot") for c in (True, False)])
    f19 = pd.DataFrame([{"engine.block_size": b, "mode": m, "normalized_latency_s": (3.0 / b if m == "swap" else 1.0)}
                        for b in (1, 4, 16) for m in ("swap", "recompute")])
    return {"fig12_sharegpt": _curves([0.05, 0.1, 0.5, 1.0, 1.5, 2.0, 2.5], KNEES, BATCH),
            "fig12_alpaca": _curves([10, 20, 30, 40], {k: 10 * v for k, v in list(KNEES.items())[:4]}, BATCH),
            "fig2": fig2, "fig14_parallel": par, "fig14_beam": beam, "fig16": f16,
            "fig17": _curves([0.3, 0.6, 0.9, 1.2], {"paged": 0.9, "orca_oracle": 0.6}, BATCH),
            "fig18b_choice": pd.DataFrame([{"dataset": "sharegpt", "block_size": 64},
                                           {"dataset": "alpaca", "block_size": 64}]),
            "fig19": f19}


def test_difference_reports_distance_to_the_papers_range():
    assert difference(2.5, 2.0, 4.0) == "inside"
    assert difference(1.5, 1.7, 2.7) == "-0.20 below the range"
    assert difference(25.0, None, 22.0) == "+3.00 above the range"
    assert difference(0.127, 0.061, 0.098, pct=True) == "+2.9 pts above the range"
    assert difference(3.0, 2.0, 4.0, bound=">=") == "inside (a bound)"
    assert difference(float("nan"), 2.0, 4.0) == "n/a"


def test_readings_follow_the_synthetic_curves():
    m = measured(_res())
    s = m["fig12"]["sharegpt"]
    # latency 0.03 + 1.4 x (rate - knee) reaches 0.1 s/token 0.05 req/s past the knee
    assert s["rates"]["paged"]["value"] == pytest.approx(2.05)
    assert s["ratios"]["orca_oracle"]["value"] == pytest.approx(2.05 / 1.05)
    # static: from 0.03 at 0.1 to 0.59 at 0.5 req/s, 0.1 s/token is crossed at 0.15
    assert s["ratios"]["static (FT-like)"]["value"] == pytest.approx(2.05 / 0.15)
    assert m["fig13"]["sharegpt"]["ratios"]["orca_oracle"] == pytest.approx(30 / 12)
    assert "static (FT-like)" not in m["fig13"]["sharegpt"]["ratios"]
    # batches grow as 15 x rate up to their caps: the ratio peaks once paged reaches its cap (30 at 2 req/s)
    assert m["fig13"]["sharegpt"]["peak"]["orca_max"] == {"ratio": pytest.approx(5.0), "rate": 2.0, "rates": 7}
    assert m["fig13"]["sharegpt"]["peak"]["orca_oracle"]["ratio"] == pytest.approx(2.5)
    assert m["fig2"]["split"]["paged"]["used"] == pytest.approx(0.97)
    assert m["fig18a"]["card"] == "NVIDIA H200"


def test_summary_sets_each_number_beside_the_papers_with_the_difference():
    md = summary_markdown(measured(_res()), quick=True, wall_s=1.0, preset="paper-a100-2023")
    assert "0.1 s/token" in md and "paper-a100-2023" in md and "Vidur" in md
    row = next(line for line in md.splitlines() if "paged / Orca (Oracle) request rate" in line)
    assert "1.95x" in row and "1.7-2.7x" in row and "inside" in row
    row = next(line for line in md.splitlines() if "paged / Orca (Max) batched requests at 2 req/s" in line)
    assert "5.00x" in row and "+1.00 above the range" in row and "token states" in row
    assert "over the sweep's 7 rates the ratio peaks at 5.00x (2 req/s)" in row and "fig12_13_rates.md reads the ratio" in row and "3.75x" not in row
    row = next(line for line in md.splitlines() if line.startswith("| Fig. 18b"))
    assert "sharegpt inside" in row and "alpaca outside" in row
    assert "NVIDIA H200" in md
