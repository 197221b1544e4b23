"""``kvsim paper --profile``: the cost setting (PaperCost), Fig. 15's prompt-share check, and their summary rows."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from kvsim.config import load_scenario
from kvsim.errors import KvsimError
from kvsim.report.paper_cost import PaperCost
from kvsim.report.paper_fig15 import fig15_table, implied_share, parallel_saving, prompt_share, workload_share
from kvsim.report.paper_measure import measured
from kvsim.report.paper_summary import summary_markdown
from kvsim.sim import simulate
from tests._cli import cli
from tests.test_paper_summary import _res

ROOT = Path(__file__).resolve().parents[1]
H200 = ROOT / "calibrate" / "profiles" / "H200"


def test_a_profile_prices_only_its_own_block_sizes_and_rates_scale():
    c = PaperCost(profile=str(H200 / "opt-13b-1203.json"), rate_scale=5)
    assert c.block_sizes == [16, 32, 64]
    assert c.sizes([1, 4, 16, 64, 256]) == [16, 64]
    assert c.rates([0.05, 2.0]) == [0.25, 10.0] and c.rates(40) == 200
    ov = c.overrides()
    assert "cost.model=calibrated" in ov and any(o.startswith("cost.profile=") for o in ov)
    assert "NVIDIA H200" in c.describe() and "x5" in c.describe()
    assert PaperCost().sizes([1, 256]) == [1, 256] and PaperCost().overrides() == []


@pytest.mark.parametrize("kw,field", [
    ({"profile": str(H200 / "llama-3-8b.json")}, "--profile"),       # another model
    ({"profile": "no/such/profile.json"}, "--profile"),
    ({"profile": str(ROOT / "README.md")}, "--profile"),              # not JSON
    ({"rate_scale": 0}, "--rate-scale"),
    ({"preset": "paper-a100-2023", "profile": str(H200 / "opt-13b-1203.json")}, "--preset"),
])
def test_an_unusable_cost_setting_names_its_field(kw, field):
    with pytest.raises(KvsimError) as e:
        PaperCost(**kw)
    assert e.value.field == field and "\n" not in str(e.value)


def test_cli_refuses_a_profile_of_another_model_on_one_line(capsys, tmp_path):
    rc, out, err = cli(capsys, "paper", "--quick", "--profile", H200 / "llama-3-8b.json", "--out", tmp_path / "p")
    assert rc == 2 and err.strip().count("\n") == 0 and "--profile" in err and "Llama-3-8B" in err
    assert not (tmp_path / "p" / "SUMMARY.md").exists()


def test_prompt_share_counts_only_whole_prompt_blocks():
    assert prompt_share([15], [10], 16) == 0.0                       # no full block: nothing to share
    # prompt 32 (two blocks), one output token: the step holds the two shared blocks only
    assert prompt_share([32], [1], 16) == pytest.approx(1.0)
    # prompt 16, two output tokens: steps hold 16 and 17 slots, i.e. one and two blocks (16 shared each time)
    assert prompt_share([16], [2], 16) == pytest.approx(32 / 48)
    # longer outputs dilute the share; a larger block shares less of the same prompt
    assert prompt_share([40], [100], 16) < prompt_share([40], [10], 16)
    assert prompt_share([50], [10], 32) < prompt_share([50], [10], 16)
    with pytest.raises(ValueError):
        prompt_share([1, 2], [1], 16)


def test_parallel_saving_grows_with_n_below_the_share_and_inverts():
    s = [parallel_saving(0.2, n) for n in (1, 2, 4, 6)]
    assert s[0] == 0 and all(b > a for a, b in zip(s, s[1:])) and s[-1] < 0.2
    assert implied_share(parallel_saving(0.17, 4), 4) == pytest.approx(0.17)


def test_simulated_parallel_saving_follows_the_prompt_share():
    """The allocator's copy-on-write sharing, simulated, against the length-only prediction (module doc)."""
    from kvsim.sweeps import sweep
    sc = ROOT / "scenarios" / "paper" / "fig14_parallel_sampling_paged.yaml"
    ov = ["workload.rate_req_s=40", "workload.num_requests=120"]
    df = sweep(sc, {"workload.n": [2, 4]}, ov, jobs=1, progress=False).set_index("workload.n")
    t = fig15_table([2, 4], workload_share(sc, ov), df.sharing_saved_frac)
    assert 0 < t.share.iloc[0] < 1
    for r in t.itertuples():
        assert r.simulated == pytest.approx(r.predicted, rel=0.25)


def test_fixed_length_parallel_saving_matches_the_block_count():
    """Fixed lengths, unloaded: the simulated saving is the block-rounded prediction (a token count, 17.6% at
    n=2, would miss it by 2 pts: the saving is counted in allocated block slots)."""
    sc = ROOT / "scenarios" / "paper" / "fig14_parallel_sampling_paged.yaml"
    for n in (2, 4):
        ov = ["workload.dataset=fixed", "workload.prompt_len=16", "workload.output_len=58", f"workload.n={n}",
              "workload.rate_req_s=2", "workload.num_requests=40"]
        s = simulate(load_scenario(sc, ov)).summary
        assert s["sharing_saved_frac"] == pytest.approx(parallel_saving(prompt_share([16], [58], 16), n), abs=0.005)


def _with_fig15(res: dict) -> dict:
    res = dict(res)
    share = {"share": 0.18, "block_size": 16, "mean_prompt": 19.5, "mean_output": 60.0,
             "prompt_ge_block_frac": 0.55, "requests": 100}
    res["fig15_prompt_share"] = fig15_table([2, 4, 6], share, pd.Series({2: 0.1, 4: 0.14, 6: 0.15}))
    res["fig15_beam_keep"] = pd.DataFrame([{"engine.beam_keep_prob": p, "workload.beam_width": 6,
                                            "sharing_saved_frac": 0.4 + 0.3 * p} for p in (0.25, 0.5, 0.75)])
    res.pop("fig19")
    res.pop("fig16")
    return res


def test_summary_explains_fig15_from_the_readings_and_skips_fig19():
    m = measured(_with_fig15(_res()), rate_scale=5)
    assert m["fig13"]["sharegpt"]["rate"] == 10.0 and m["fig13"]["alpaca"]["rate"] == 150.0
    md = summary_markdown(m, quick=True, wall_s=1.0, cost=PaperCost(rate_scale=5))
    row = next(line for line in md.splitlines() if "parallel sampling n=2..6" in line)
    assert "18.0%" in row and "n=2: 9.0% vs 10.0%" in row and "12.2% (n=2)" in row
    assert "fig15_sensitivity.md" in row and "the run's 100 requests" in row and "drawing 55% prompts" in row
    row = next(line for line in md.splitlines() if "beam search width 2..6" in line)
    assert "0.25: 47.5%" in row and "beam_keep_prob" in row and "15.0 pts" in row
    assert "fig15_sensitivity.md" in row and "distinct histories" in row
    row = next(line for line in md.splitlines() if line.startswith("| Fig. 19"))
    assert "skipped" in row
    assert "at 10 req/s" in md and "x5" in md
    row = next(line for line in md.splitlines() if line.startswith("| Fig. 16"))
    assert "skipped" in row


def test_a_profile_prices_its_own_model_only():
    c = PaperCost(profile=str(H200 / "opt-13b-1203.json"))
    paper = ROOT / "scenarios" / "paper"
    assert c.prices(paper / "fig14_beam_search_paged.yaml")
    assert not c.prices(paper / "fig16_prefix_1shot.yaml")            # LLaMA-13B
    assert PaperCost().prices(paper / "fig16_prefix_1shot.yaml")
