"""The replicated plan's verdict is one verdict on every surface (issue #13): an interval within --tol whose
runs seldom come near the p99 bound above the recommendation is NOT stable, and the terminal, plan.json,
plan.csv and report.html all say so and what would make it stable, never "stable" beside the caution."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import kvsim.plan.confident as confident
from kvsim.plan.search import run_at
from tests._cli import cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
Q = str(ROOT / "scenarios" / "examples" / "quickstart.yaml")
BOUND, CAP = 10.0, 2.0


@pytest.fixture(scope="module")
def base_summary():
    """One real (tiny) run's summary: the fields the plan's table and report read besides the window."""
    from kvsim.config import read_yaml
    return run_at(read_yaml(Q), [], 1.0, requests=40, min_duration_s=None)


def fake_runner(base, burst_frac: float):
    """TTFTs in place of the simulator's: a ``burst_frac`` share of seeds has requests above BOUND (more at
    higher rates), the others stay at BOUND / 4, below the near-miss threshold B/2: few runs show the tail
    (seeds 30-39, as in ``test_plan_confident``: 3 bursty with ``burst_frac`` 0.3)."""
    def run(data, overrides, rate, cache=None, *, requests=None, min_duration_s=None, goodput=None, steady=None):
        seed = int([o for o in overrides if o.startswith("seed=")][-1][5:])       # the last: the run's own
        rng = np.random.default_rng(seed)
        share = min(0.05 * min(rate / CAP, 2.0) ** 8, 1.0) if rng.uniform() < burst_frac else 0.0
        ttft = np.where(rng.uniform(size=requests) < share, 2 * BOUND, BOUND / 4)
        return {**base, "requests_finished": requests, "requests_unfinished": 0, "requests_total": requests,
                "steady": {"ttft_s": ttft, "n": requests}}
    return run


@pytest.mark.parametrize("burst_frac, stable", [(0.3, False), (1.0, True)])
def test_verdict_agrees_with_the_caution_on_every_surface(tmp_path, capsys, monkeypatch, base_summary,
                                                           burst_frac, stable):
    monkeypatch.setattr(confident, "run_at", fake_runner(base_summary, burst_frac))
    out_dir = tmp_path / "p"
    rc, out, err = cli(capsys, "plan", Q, "--slo", f"ttft_p99_s={BOUND:g}", "--seeds", "10", "--requests", "200",
                       "--max-requests", "800", "--tol", "0.9", "--jobs", "1", "--set", "seed=30", "--quiet",
                       "--out", out_dir)
    assert rc == 0, err
    doc = json.loads((out_dir / "plan.json").read_text())
    row = doc["recommended"]
    csv = pd.read_csv(out_dir / "plan.csv").iloc[0]
    html = (out_dir / "report.html").read_text(encoding="utf-8")
    assert row["stable"] is stable and bool(csv.stable) is stable, (row["note"], out)
    assert row["fail_rate_req_s"] / row["max_rate_req_s"] - 1 <= 0.9            # the width is within --tol
    if stable:
        for text in (out, row["note"], html.replace("Stable: t", "stable: t")):          # the report capitalises
            assert "stable: the interval is" in text and "too few" not in text and "NOT stable" not in text
    else:
        assert row["requests_per_run"] == 800                                      # it doubled to the limit
        for text in (out, row["note"], html):
            assert "NOT stable: the interval is" in text and "within --tol 0.9, but at" in text
            assert "too few for an honest upper end" in text and "raise --max-requests to at least 1600" in text
            assert text.count("stable: the interval") == text.count("NOT stable: the interval")
