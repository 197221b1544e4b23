"""``engine.policy: v0 | v1`` at the input contract: listed by ``kvsim fields``, one-line errors (exit 2)
naming the field for bad values and for what V1 does not have, and a V1 run through ``kvsim run``."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from kvsim.config import load_scenario
from kvsim.errors import KvsimError
from tests.test_bad_input import Q, SMALL, _write, assert_error, cli

V1 = ["--set", "engine.policy=v1"]


def test_fields_lists_the_policy_with_help(capsys):
    rc, out, _ = cli(capsys, "fields", "policy")
    assert rc == 0
    assert "engine.policy  (str, default 'v0')" in out
    assert "v0 (the paper's vLLM" in out and "v1 (vLLM V1: recompute-only" in out


@pytest.mark.parametrize("sets,field", [
    (["engine.policy=v2"], "engine.policy"),
    (["engine.policy=V1"], "engine.policy"),
    (["engine.policy=1"], "engine.policy"),
    (["engine.policy=v1", "engine.preemption_mode=swap"], "engine.preemption_mode"),
    (["engine.policy=v1", "workload.beam_width=4"], "workload.beam_width"),
    (["engine.policy=v1", "engine.allocator=orca_oracle"], "engine.allocator"),
    (["engine.policy=v1", "engine.scheduler=static"], "engine.scheduler"),
    (["engine.policy=v1", "engine.max_num_batched_tokens=64", "engine.max_num_seqs=128"],
     "engine.max_num_batched_tokens"),
])
def test_bad_policy_settings_exit_2_naming_the_field(capsys, tmp_path, sets, field):
    args = [a for s in sets for a in ("--set", s)]
    err = assert_error(capsys, field, "run", Q, *SMALL, *args, "--out", tmp_path / "o")
    assert not (tmp_path / "o").exists()
    with pytest.raises(KvsimError) as e:
        load_scenario(Q, sets)
    assert e.value.field == field and e.value.message in err


def test_v1_refuses_beams_from_a_trace(capsys, tmp_path):
    rows = ["arrival_s,prompt_len,output_len,beam_width", "0.0,20,5,1", "0.5,30,6,3"]
    path = _write(tmp_path, "t.csv", ("\n".join(rows) + "\n").encode())
    err = assert_error(capsys, "workload.beam_width", "run", Q, *V1, "--set", "workload.dataset=trace",
                       "--set", f"workload.path={path}", "--set", "workload.num_requests=null",
                       "--out", tmp_path / "o")
    assert "request 1" in err and "policy v1" in err


def test_v1_runs_from_the_cli_with_children_and_recompute_only(capsys, tmp_path):
    rc, out, err = cli(capsys, "run", Q, *V1, "--set", "workload.num_requests=120", "--set", "workload.n=3",
                       "--set", "engine.enable_prefix_caching=true", "--set", "workload.rate_req_s=4",
                       "--out", tmp_path / "o")
    assert rc == 0, err
    assert "v1 scheduler (recompute-only, chunked prefill)" in out
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    summary = s.get("summary", s)
    assert summary["requests_finished"] == summary["requests_total"] == 120
    assert summary["preemptions"] == summary["preemptions_recompute"] > 0
    assert summary["prefix_cache_hit_frac"] > 0                # children find the prompt in the cache
    reqs = pd.read_csv(tmp_path / "o" / "requests.csv")
    assert len(reqs) == 120 and (reqs.n == 3).all()            # one row per request, not per child
    assert (reqs.swaps == 0).all() and (reqs.cached_tokens > 0).mean() > 0.9
