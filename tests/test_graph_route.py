"""Prefill/mixed graph routing: sizes a larger captured graph replays faster are skipped, by the engine and by the
simulator pricing it (kvsim.graph_sizes.skipped_sizes / route_sizes, runtime.cuda_graph_prefill_route / _skip)."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

import kvsim
from kvsim.core.plan import StepPlan
from kvsim.cost.calibrated import CalibratedCostModel, Profile
from kvsim.errors import KvsimError
from kvsim.graph_sizes import ROUTE_MARGIN, padded, prefill_token_sizes, route_sizes, skipped_sizes
from tests.profile_factory import synthetic_profile


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(1.0, 100.0), min_size=1, max_size=30))
def test_a_routed_step_runs_faster_than_the_size_it_skips(times):
    """Every skipped size pads to a size not skipped that replays faster, and the largest size is never skipped."""
    sizes = [16 * (i + 1) for i in range(len(times))]
    skip = skipped_sizes(sizes, times)
    assert sizes[-1] not in skip
    kept = route_sizes(sizes, skip)
    t = dict(zip(sizes, times))
    for s in sizes:
        target = padded(s, kept)
        assert target >= s and target not in skip
        if s in skip:
            assert t[target] < t[s]
        else:
            assert target == s
            assert all(t[u] >= (1 - ROUTE_MARGIN) * t[s] for u in sizes if u > s)


def test_route_sizes_leaves_no_graphs_and_no_skips_alone():
    assert route_sizes(None, [448]) is None
    assert route_sizes([16, 32], []) == [16, 32]
    assert route_sizes([16, 32, 48], [32, 999]) == [16, 48]
    # the H100's Llama-3-8B prefill graphs (calibrate/profiles/H100/llama-3-8b-1206.json): 448 tokens 16.96 ms,
    # 480 12.78; 832 23.90, 896 23.25, 960 22.79 (832 is 4.6% slower than 960: below the margin, kept)
    assert skipped_sizes([416, 448, 480, 832, 896, 960], [12.5, 16.96, 12.78, 23.90, 23.25, 22.79]) == [448]


def _model(prof, **kw) -> CalibratedCostModel:
    return CalibratedCostModel(Profile(prof), model_name="OPT-13B", dtype="fp16", block_size_tokens=16, **kw)


def _routed_profile(skip):
    data = synthetic_profile(steps=True)
    data["meta"]["cuda_graphs"] = True
    data["prefill_step"]["16"].update(timing="between_decode_steps", graph_route=True, graph_skip=skip)
    return data


def test_simulator_pads_past_the_sizes_the_profile_routed_past():
    ladder = prefill_token_sizes(2048)
    at = lambda t: StepPlan(prefill_group_ids=[0], prefill_new_tokens=[t], prefill_cached_tokens=[0])
    routed = _model(_routed_profile([448]), prefill_graph_tokens=ladder)
    plain = _model(_routed_profile([]), prefill_graph_tokens=ladder)
    # 430 tokens: the 448-token graph unrouted, the 480-token one routed (the synthetic grid grows with tokens)
    assert plain.step_time(at(430)) == pytest.approx(plain.step_time(at(448)), rel=1e-12)
    assert routed.step_time(at(430)) == pytest.approx(plain.step_time(at(480)), rel=1e-12)
    assert routed.step_time(at(430)) > plain.step_time(at(430))
    # a replay of a run that did not route (prefill_graph_route false) ignores the profile's route ...
    off = _model(_routed_profile([448]), prefill_graph_tokens=ladder, prefill_graph_route=False)
    assert off.step_time(at(430)) == plain.step_time(at(430))
    # ... and a run's own skips count either way
    given_skip = _model(_routed_profile([]), prefill_graph_tokens=ladder, prefill_graph_route=False,
                        prefill_graph_skip=[448])
    assert given_skip.step_time(at(430)) == routed.step_time(at(430))


@pytest.mark.parametrize("bad", ["448", [448.5], [0], [True]])
def test_a_profile_with_a_malformed_graph_skip_is_refused_in_one_line(bad):
    with pytest.raises(KvsimError, match=r"prefill_step\.16\.graph_skip"):
        _model(_routed_profile(bad))


def test_scenario_route_settings_reach_the_cost_model(tmp_path):
    from kvsim.build import make_cost
    from kvsim.catalogue import get_gpu, get_model
    path = tmp_path / "p.json"
    path.write_text(json.dumps(_routed_profile([448])))
    sets = ["cost.model=calibrated", f"cost.profile={path}", "model=opt-13b"]
    at = lambda t: StepPlan(prefill_group_ids=[0], prefill_new_tokens=[t], prefill_cached_tokens=[0])

    def cost(*more):
        sc = kvsim.load_scenario("scenarios/examples/quickstart.yaml", sets + list(more))
        return make_cost(sc, get_model(sc.model), get_gpu(sc.gpu))
    routed, unrouted = cost(), cost("runtime.cuda_graph_prefill_route=false")
    assert routed.step_time(at(430)) == pytest.approx(unrouted.step_time(at(480)), rel=1e-12)
    assert unrouted.step_time(at(430)) == pytest.approx(unrouted.step_time(at(448)), rel=1e-12)
    assert cost("runtime.cuda_graph_prefill_route=false", "runtime.cuda_graph_prefill_skip=[448]").step_time(at(430)) \
        == routed.step_time(at(430))
    for bad in ("runtime.cuda_graph_prefill_skip=[0]", "runtime.cuda_graph_prefill_skip=448x",
                "runtime.cuda_graph_prefill_route=maybe"):
        with pytest.raises(KvsimError, match=bad.split("=")[0].replace(".", r"\.")):
            kvsim.load_scenario("scenarios/examples/quickstart.yaml", [bad])


def test_replay_prices_a_saved_run_at_the_sizes_it_skipped():
    from kvsim.validate import replay_sets
    run = {"engine": {"cuda_graph_prefill_tokens": prefill_token_sizes(2048, "v2"), "cuda_graph_prefill_skip": [448]}}
    assert replay_sets(run)[:3] == ["runtime.cuda_graph_prefill_ladder=v2", "runtime.cuda_graph_prefill_route=false",
                                    "runtime.cuda_graph_prefill_skip=[448]"]
    sc = kvsim.load_scenario("scenarios/examples/quickstart.yaml", replay_sets(run))
    assert sc.runtime.cuda_graph_prefill_skip == [448] and sc.runtime.cuda_graph_prefill_route is False
    # a run from before routing skipped nothing, and is priced so even with a routed profile
    assert replay_sets({})[:2] == ["runtime.cuda_graph_prefill_route=false", "runtime.cuda_graph_prefill_skip=[]"]
    with pytest.raises(KvsimError, match="cuda_graph_prefill_skip"):
        replay_sets({"engine": {"cuda_graph_prefill_skip": ["448"]}})


def test_live_validation_routes_as_its_profile_did():
    from kvsim.validate import profile_sets
    assert "runtime.cuda_graph_prefill_route=false" in profile_sets({})          # profiles from before routing
    assert "runtime.cuda_graph_prefill_route=true" in profile_sets({"prefill_route": True})


def test_merging_a_routed_profile_into_an_unrouted_one_is_refused():
    from kvsim.calibrate.merge import merge_profiles
    a, b = synthetic_profile(steps=True), synthetic_profile(steps=True, block_sizes=(32,))
    b["meta"]["prefill_route"] = True
    with pytest.raises(KvsimError, match="prefill_route"):
        merge_profiles(a, b)
    a["meta"]["prefill_route"] = True
    assert sorted(merge_profiles(a, b)["prefill_step"]) == ["16", "32"]


# ---------------------------------------------------------------- the engine's decision (kvsim.engine.graph_route)
LADDER = [384, 416, 448, 480, 512, 832, 896, 960, 1024]
TRUE_MS = dict(zip(LADDER, [11.2, 13.1, 17.5, 13.3, 13.1, 24.3, 23.4, 23.2, 23.9]))   # unrouted H100 grid, 2026-12-06


def _counting_timer(truth, bias=lambda k, size: 1.0):
    calls = []

    def timer(size):
        calls.append(size)
        return truth[size] * bias(len(calls), size) / 1e3
    return timer, calls


def test_route_skips_only_what_a_larger_graph_confirms():
    from kvsim.engine.graph_route import route
    timer, calls = _counting_timer(TRUE_MS)
    skipped, times = route(LADDER, timer)
    assert skipped == [448] and times == pytest.approx([TRUE_MS[s] / 1e3 for s in LADDER])
    assert calls.count(448) == 2 + 3 and calls.count(480) == 2 + 3       # two passes, then three alternations


def test_clocks_settling_during_the_first_pass_do_not_skip_a_size():
    """The first eight readings 10% slow: one ascending pass reads 960 (25.5 ms) beaten by 1,024 (23.9 ms)."""
    from kvsim.engine.graph_route import route
    slow_start = lambda k, size: 1.10 if k <= 8 else 1.0            # noqa: E731
    one_pass = [TRUE_MS[s] * slow_start(k, s) for k, s in enumerate(LADDER, 1)]
    assert 960 in skipped_sizes(LADDER, one_pass)
    assert route(LADDER, _counting_timer(TRUE_MS, slow_start)[0])[0] == [448]


def test_one_slow_reading_is_not_confirmed():
    from kvsim.engine.graph_route import route
    timer, _ = _counting_timer(TRUE_MS, lambda k, size: 1.15 if size == 960 and k <= 2 * len(LADDER) else 1.0)
    assert route(LADDER, timer)[0] == [448]


def test_route_never_targets_a_size_skipped_anyway():
    from kvsim.engine.graph_route import route
    timer, calls = _counting_timer(TRUE_MS)
    assert route(LADDER, timer, fixed=[480])[0] == [448]       # 448 confirmed against 512 (13.1 ms), not 480
    assert 480 not in calls[2 * len(LADDER):]
    assert route(LADDER, _counting_timer(TRUE_MS)[0], fixed=[448])[0] == []


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(1.0, 100.0), min_size=1, max_size=24))
def test_every_routed_size_runs_as_a_faster_graph(ms):
    from kvsim.engine.graph_route import route
    sizes = [16 * (i + 1) for i in range(len(ms))]
    truth = dict(zip(sizes, ms))
    skipped, _ = route(sizes, _counting_timer(truth)[0])
    kept = route_sizes(sizes, skipped)
    for s in skipped:
        assert truth[padded(s, kept)] < (1 - ROUTE_MARGIN) * truth[s]
