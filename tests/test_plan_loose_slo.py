"""A rate search under SLOs so loose that an overloaded system meets them stops doubling once the offered rate is
past capacity (it served no more at twice the rate) and says so, instead of simulating ever larger queues."""
from __future__ import annotations

from pathlib import Path

import pytest

from kvsim.plan.search import bracket_rate, find_max_rate, rate_key, saturated

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "scenarios" / "examples" / "quickstart.yaml")


def test_saturated_needs_both_a_short_fall_and_no_growth():
    assert saturated(1.9, 1.95, 8.0)                  # served a quarter of the offer, no more than at 4 req/s
    assert not saturated(1.9, 3.5, 8.0)               # below the offer but still growing with it: not yet
    assert not saturated(3.9, 4.1, 4.4)               # flat, but serves 93% of what is offered
    assert not saturated(None, 1.0, 8.0) and not saturated(1.0, None, 8.0)


@pytest.mark.parametrize("capacity", [3.0, 50.0])
def test_bracket_stops_past_capacity_only_when_the_slo_never_fails(capacity):
    """A system serving min(rate, capacity) whose SLO never fails: doubling stops right past capacity; a
    system that keeps up (capacity far above) is doubled through unchanged."""
    probed = []

    def passes(r):
        probed.append(r)
        return True
    lo, hi = bracket_rate(passes, 1.0, 0.02, 16, served=lambda r: min(rate_key(r), capacity))
    assert hi is None
    assert lo == max(probed) and lo <= 4 * max(capacity, 1.0) and len(probed) <= 8
    lo2, hi2 = bracket_rate(lambda r: True, 1.0, 0.02, 5, served=lambda r: r)       # always keeps up
    assert (lo2, hi2) == (32.0, None)


def test_loose_slo_search_stops_with_a_past_capacity_note():
    res = find_max_rate(QUICK, {"normalized_latency_s": 1000.0}, requests=300, min_duration_s=None)
    assert res.fail_rate is None and len(res.probes) <= 6
    assert "past capacity" in res.note and "stopped doubling" in res.note
    served = res.summary["throughput_req_s"]
    assert served < 0.75 * res.max_rate


def test_the_note_finds_the_rate_doubled_from_whatever_the_start():
    """Rates are rounded to 10 digits, so half a doubled rate is often not the rate probed before it: the
    past-capacity note must still be given from an unround start rate (it was not, in a first version)."""
    res = find_max_rate(QUICK, {"normalized_latency_s": 1000.0}, requests=300, min_duration_s=None,
                        start_rate=1.3333333337)
    assert res.fail_rate is None and "past capacity" in res.note


def test_a_tight_slo_search_is_unchanged():
    """Where the SLO fails above capacity, the search brackets it as before (no early stop, no note)."""
    res = find_max_rate(QUICK, {"normalized_latency_s": 0.05}, requests=300, min_duration_s=None)
    assert res.fail_rate is not None and res.max_rate is not None and not res.note
