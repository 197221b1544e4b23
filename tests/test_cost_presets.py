"""Cost presets: values traced to the cited measurements, applied through overrides, default unchanged."""
from __future__ import annotations

from pathlib import Path

import pytest

import kvsim
from kvsim.build import setup_run
from kvsim.core.plan import StepPlan
from kvsim.cost.presets import (PR820_REQ_S_LOOP, PR820_REQ_S_VECTORISED, PRESETS, VIDUR_A100_MS, get_preset,
                                line_fit, sampler_loop_per_seq_s, vidur_step_overheads_s)
from kvsim.cost.roofline import RooflineParams
from kvsim.errors import KvsimError

SC = Path(__file__).resolve().parents[1] / "scenarios" / "paper" / "fig12_opt13b_sharegpt_paged.yaml"


def test_line_fit_recovers_a_line():
    b, m = line_fit({x: 1.5 + 0.25 * x for x in (2, 5, 9, 20)})
    assert b == pytest.approx(1.5) and m == pytest.approx(0.25)
    with pytest.raises(ValueError):
        line_fit({1: 2.0})


def test_paper_preset_comes_from_the_cited_measurements():
    step, per_seq = vidur_step_overheads_s()
    # the Vidur medians rise with batch: a positive per-sequence cost and a ~1 ms fixed part
    assert 0.5e-3 < step < 2e-3 and 0.05e-3 < per_seq < 0.2e-3
    sums = {b: sum(v) for b, v in VIDUR_A100_MS.items()}
    for b, ms in sums.items():            # the line stays within 0.3 ms of every measured point
        assert abs((step + per_seq * b) * 1e3 - ms) < 0.3
    loop = sampler_loop_per_seq_s()
    assert loop < (1 / PR820_REQ_S_LOOP - 1 / PR820_REQ_S_VECTORISED)      # a share of the per-request saving
    p = PRESETS["paper-a100-2023"]
    assert p.roofline["step_overhead_s"] == pytest.approx(step, abs=1e-6)
    assert p.roofline["per_seq_overhead_s"] == pytest.approx(per_seq + loop, abs=1e-6)
    assert any("Vidur" in s for s in p.sources) and any("#820" in s for s in p.sources)


def test_default_roofline_is_unchanged_and_the_preset_only_adds_host_overhead():
    d = RooflineParams()
    assert (d.step_overhead_s, d.per_seq_overhead_s) == (0.003, 1e-5)
    p = get_preset("paper-a100-2023")
    base = setup_run(kvsim.load_scenario(SC))
    pre = setup_run(kvsim.load_scenario(SC, p.overrides()))
    plan = StepPlan(decode_group_ids=list(range(20)), decode_context_tokens=[300] * 20)
    dt = pre.cost.step_time(plan) - base.cost.step_time(plan)
    expect = (p.roofline["step_overhead_s"] - d.step_overhead_s
              + 20 * (p.roofline["per_seq_overhead_s"] - d.per_seq_overhead_s))
    assert dt == pytest.approx(expect, rel=1e-9, abs=1e-12)


def test_unknown_preset_is_an_error_and_none_means_the_roofline():
    assert get_preset(None) is None and get_preset("none") is None
    with pytest.raises(KvsimError, match="paper-a100-2023"):
        get_preset("a100-1999")


def test_kvsim_paper_refuses_an_unknown_preset_before_any_work(tmp_path):
    import subprocess
    import sys
    out = tmp_path / "paper"
    r = subprocess.run([sys.executable, "-m", "kvsim.cli", "paper", "--preset", "a100-1999", "--out", str(out)],
                       capture_output=True, text=True, cwd=SC.parents[2], timeout=120)
    assert r.returncode == 2 and "--preset" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not out.exists()
