"""kvsim.validate_spread: a per-request metric's error beside the interval its requests' own spread gives it."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kvsim import validate_spread as SP


def _reqs(n=40, seed=1, ttft_scale=1.0, jitter=0.0, out=None):
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(0.5, n))
    ttft = rng.uniform(0.01, 0.03, n) * ttft_scale + jitter * rng.standard_normal(n)
    out_len = rng.integers(2, 200, n) if out is None else np.asarray(out)
    first = arrival + ttft
    finish = first + 0.012 * (out_len - 1)
    return pd.DataFrame({"request_id": np.arange(n), "status": "finished", "arrival_s": arrival,
                         "first_token_s": first, "finish_s": finish, "output_len": out_len})


def _by_metric(rows):
    return {r["metric"]: r for r in rows}


def test_identical_runs_have_no_error_and_an_interval_at_zero():
    e = _reqs()
    rows = _by_metric(SP.scenario_rows("s", e.copy(), e))
    assert set(rows) == set(SP.METRICS)
    for r in rows.values():
        assert r["error"] == pytest.approx(0.0, abs=1e-12) and r["lo"] == pytest.approx(0.0, abs=1e-12)
        assert r["hi"] == pytest.approx(0.0, abs=1e-12) and r["holds_zero"] and r["requests"] == 40


def test_a_systematic_error_lies_outside_its_interval():
    e = _reqs(n=60)
    s = e.copy()
    s["first_token_s"] = s.arrival_s + 1.10 * (e.first_token_s - e.arrival_s)     # every TTFT 10% longer
    s["finish_s"] = e.finish_s + (s.first_token_s - e.first_token_s)
    r = _by_metric(SP.scenario_rows("s", s, e))["ttft_p50_s"]
    assert r["error"] == pytest.approx(0.10, rel=1e-9)
    assert r["lo"] > 0.05 and not r["holds_zero"]


def test_per_request_noise_over_few_requests_holds_zero():
    """Each predicted TTFT off by a zero-mean amount comparable to the TTFTs themselves (the phase of arrivals
    against step boundaries), 15 requests: the median's error is inside a wide interval."""
    e = _reqs(n=15, seed=3)
    s = e.copy()
    shift = np.random.default_rng(9).uniform(-0.008, 0.008, 15)
    s["first_token_s"] = e.first_token_s + shift
    s["finish_s"] = e.finish_s + shift
    r = _by_metric(SP.scenario_rows("s", s, e))["ttft_p50_s"]
    assert r["holds_zero"] and r["hi"] - r["lo"] > 0.10


def test_pairs_only_requests_finished_on_both_sides_and_tpot_only_past_one_token():
    e = _reqs(n=10, out=[1, 5, 5, 5, 5, 5, 5, 5, 5, 5])
    s = e.copy()
    s.loc[3, "status"] = "rejected"                 # finished in the engine only
    rows = _by_metric(SP.scenario_rows("s", s, e.drop(index=7)))   # request 7 missing from the engine's
    assert rows["ttft_p50_s"]["requests"] == 8
    assert rows["tpot_p50_s"]["requests"] == 7     # request 0 drew one token: no TPOT
    assert SP.scenario_rows("s", s.iloc[:1], e.iloc[:1]) == []      # one pair: no interval


def test_the_draws_are_seeded():
    e = _reqs(n=30, seed=5)
    s = e.copy()
    s["first_token_s"] = e.first_token_s + np.random.default_rng(2).uniform(-0.005, 0.005, 30)
    assert SP.scenario_rows("s", s, e) == SP.scenario_rows("s", s, e)
    assert SP.scenario_rows("s", s, e) != SP.scenario_rows("s", s, e, seed=1)


def test_markdown_lists_rows_and_counts_errors_outside():
    e = _reqs()
    s = e.copy()
    s["first_token_s"] = s.arrival_s + 1.2 * (e.first_token_s - e.arrival_s)
    table = pd.DataFrame(SP.scenario_rows("v01", s, e), columns=list(SP.COLUMNS))
    md = SP.markdown(table)
    assert "| v01 | TTFT p50 (s) | 40 | +20.0% |" in md
    assert f"{int((~table.holds_zero).sum())} of {len(table)} errors lie outside" in md
    assert "No scenario" in SP.markdown(pd.DataFrame(columns=list(SP.COLUMNS)))


def test_the_readmes_figures_are_the_committed_sets_pooled():
    """The README's request-spread sentence is benchmarks/request_spread.py's reading of the committed sets."""
    import importlib.util
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("request_spread", root / "benchmarks" / "request_spread.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    t = mod.pooled(root / "validation")
    text = " ".join((root / "README.md").read_text().split())
    ttft, mean = t.loc["ttft_p50_s"], t.loc["normalized_latency_s"]
    assert (f"errors (median {ttft.median_abs_error:.1%}) sit in intervals a median {ttft.median_width:.1%} wide and "
            f"{int(ttft.hold_zero)} of {int(ttft.errors)} hold 0") in text
    assert (f"mean normalized latency's (median {mean.median_abs_error:.1%}) sit in intervals "
            f"{mean.median_width:.1%} wide and {int(mean.hold_zero)} of {int(mean.errors)} hold 0") in text


def test_a_measured_statistic_of_zero_gives_no_row():
    e = _reqs(n=10)
    e["first_token_s"] = e.arrival_s                 # every measured TTFT 0: no relative error
    s = e.copy()
    s["first_token_s"] = s.arrival_s + 0.01
    metrics = {r["metric"] for r in SP.scenario_rows("s", s, e)}
    assert "ttft_p50_s" not in metrics and "ttft_p99_s" not in metrics and "normalized_latency_s" in metrics


def test_kvsim_validate_prints_how_many_errors_the_requests_spread_holds(tmp_path, capsys):
    """``kvsim validate --replay`` on a committed run: one line counting the per-request errors within their
    requests' spread, read from the request-spread file it wrote."""
    import shutil
    from pathlib import Path

    from kvsim.cli import main
    root = Path(__file__).resolve().parents[1]
    name = "v01_opt13b_sharegpt_paged_low"
    shutil.copytree(root / "validation" / "H100-async-opt-1207f" / name / "engine", tmp_path / name / "engine")
    rc = main(["validate", str(root / "scenarios" / "validation" / f"{name}.yaml"), "--profile",
               str(root / "calibrate" / "profiles" / "H100" / "opt-13b-async-1207f.json"), "--out", str(tmp_path),
               "--replay"])
    out = capsys.readouterr().out
    table = pd.read_csv(tmp_path / "request-spread-replay.csv")
    ttft = table[table.metric == "ttft_p50_s"]
    assert rc in (0, None) and len(table) == len(SP.METRICS)
    assert (f"requests' spread: {int(table.holds_zero.sum())} of {len(table)} per-request errors" in out
            and f"(TTFT p50: {int(ttft.holds_zero.sum())} of 1;" in out)
