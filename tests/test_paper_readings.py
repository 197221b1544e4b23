"""Reading the paper's numbers off swept curves: equal-latency rates, ratios, full-cache memory split."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from kvsim.report.paper_readings import (Reading, full_cache_split, rate_at_latency, ratio, ratios_at_latency,
                                         value_at_rate)


def test_rate_is_interpolated_linearly_at_the_first_crossing():
    r = rate_at_latency([1, 2, 3, 4], [0.02, 0.05, 0.15, 1.0], 0.1)
    assert r.bound == "=" and r.value == pytest.approx(2.5)
    # unsorted input, same curve
    assert rate_at_latency([3, 1, 4, 2], [0.15, 0.02, 1.0, 0.05], 0.1).value == pytest.approx(2.5)
    # a dip back under the threshold after the knee does not count: the latency must *stay* under
    assert rate_at_latency([1, 2, 3], [0.05, 0.3, 0.08], 0.1).value == pytest.approx(1 + 0.05 / 0.25)


def test_rates_outside_the_sweep_are_bounds():
    assert rate_at_latency([1, 2], [0.01, 0.02], 0.1) == Reading(2.0, ">=")
    assert rate_at_latency([1, 2], [0.5, 0.9], 0.1) == Reading(1.0, "<")
    # no finished request (NaN) at the next rate: only a lower bound at the last good one
    assert rate_at_latency([1, 2, 3], [0.02, 0.05, float("nan")], 0.1) == Reading(2.0, ">=")
    assert str(Reading(2.0, ">=")) == ">=2.00" and str(Reading(float("nan"), "?")) == "n/a"


def test_ratio_bounds_follow_the_readings():
    assert ratio(Reading(3.0), Reading(1.5)) == Reading(2.0, "=")
    assert ratio(Reading(3.0, ">="), Reading(1.5)).bound == ">="
    assert ratio(Reading(3.0), Reading(1.5, "<")).bound == ">="
    assert ratio(Reading(3.0, "<"), Reading(1.5)).bound == "<="
    assert ratio(Reading(3.0), Reading(1.5, ">=")).bound == "<="
    assert ratio(Reading(3.0, ">="), Reading(1.5, ">=")).bound == "?"
    assert ratio(Reading(3.0), Reading(0.0)).bound == "?"


def test_ratios_at_equal_latency_on_synthetic_curves():
    rates = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    rows = []
    for sysname, knee in (("paged", 2.5), ("orca_oracle", 1.0), ("static", 0.0)):
        for r in rates:   # latency 0.05 s/token below the knee, rising linearly by 0.1 per 0.5 req/s past it
            rows.append({"engine.allocator": sysname, "workload.rate_req_s": r,
                         "normalized_latency_s": 0.05 + max(0.0, r - knee) * 0.2})
    df = pd.DataFrame(rows)
    rates_at, ratios = ratios_at_latency(df, 0.1)
    # paged crosses 0.1 at 2.75, between 2.5 (0.05) and 3.0 (0.15); Oracle at 1.25, between 1.0 and 1.5
    assert rates_at["paged"] == Reading(pytest.approx(2.75), "=")
    assert rates_at["orca_oracle"] == Reading(pytest.approx(1.25), "=")
    assert ratios["orca_oracle"] == Reading(pytest.approx(2.2), "=")
    # static is over the threshold at the lowest rate swept: its rate is an upper bound, the ratio a lower one
    assert rates_at["static"].bound == "<" and ratios["static"].bound == ">="
    assert "paged" not in ratios


def test_value_at_rate_interpolates_and_refuses_to_extrapolate():
    assert value_at_rate([1, 3], [10, 30], 2) == pytest.approx(20)
    assert value_at_rate([3, 1], [30, 10], 1) == pytest.approx(10)
    assert math.isnan(value_at_rate([1, 3], [10, 30], 4))


def _its(rows):
    cols = ("mem_used", "mem_internal", "mem_reserved", "mem_external", "mem_free", "duration_s")
    return pd.DataFrame([dict(zip(cols, r)) for r in rows])


def test_full_cache_split_keeps_only_full_iterations():
    its = _its([
        (900, 40, 40, 10, 10, 1.0),      # full (1% free)
        (700, 100, 150, 20, 30, 3.0),    # full (3% free)
        (100, 0, 0, 0, 900, 100.0),      # mostly idle: must not dilute the split
        (450, 0, 0, 0, 550, 50.0),
    ])
    s = full_cache_split(its, free_below_frac=0.05)
    assert s["iterations"] == 2
    assert s["mem_used_frac"] == pytest.approx((900 * 1 + 700 * 3) / 4000)
    assert s["mem_free_frac"] == pytest.approx((10 * 1 + 30 * 3) / 4000)
    assert s["time_frac"] == pytest.approx(4 / 154)
    assert sum(s[f"{p}_frac"] for p in ("mem_used", "mem_internal", "mem_reserved", "mem_external",
                                        "mem_free")) == pytest.approx(1.0)


def test_a_hole_smaller_than_one_reservation_counts_as_full():
    its = _its([(230, 470, 160, 17, 123, 1.0), (100, 0, 0, 0, 900, 1.0)])
    assert full_cache_split(its, 0.05)["iterations"] == 0
    s = full_cache_split(its, 0.05, reservation_slots=200)
    assert s["iterations"] == 1 and s["mem_used_frac"] == pytest.approx(0.23)
    empty = full_cache_split(its.iloc[:0], 0.05)
    assert empty["iterations"] == 0 and np.isnan(empty["mem_used_frac"])


def test_fig2_point_samples_a_real_run_while_full():
    """At a saturating rate paged memory is almost all token states once full; Orca-Max's is not."""
    from kvsim.paper import fig2_point
    base = ["workload.num_requests=80", "workload.rate_req_s=2.5"]
    paged = fig2_point(("fig12_opt13b_sharegpt_paged", base, "paged", 0.05))
    orca_max = fig2_point(("fig12_opt13b_sharegpt_orca_max", base, "orca_max", 0.05))
    assert paged["iterations"] > 0 and orca_max["iterations"] > 0
    assert paged["mem_used_frac"] > 0.9 > paged["run_mem_used_frac"]
    assert orca_max["mem_used_frac"] < 0.5 and orca_max["mem_internal_frac"] > 0.2
