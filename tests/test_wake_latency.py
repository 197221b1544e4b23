"""An idle engine's wake (``wake_overhead.latency_s``): the simulator schedules a request that reaches an idle
engine only after the profile's measured arrival-to-schedule time, so requests arriving meanwhile share its
step, as the engine's serving loop takes every request due when it wakes from its sleep."""
from __future__ import annotations

import json

import pytest

import kvsim
from kvsim.errors import KvsimError
from tests.profile_factory import synthetic_profile

# two requests 0.1 ms apart at 1 s, one alone at 5 s, then two 0.4 ms apart at 9 s: the engine is idle before each
TRACE = [(1.0, 40, 6), (1.0001, 60, 6), (5.0, 50, 6), (9.0, 30, 6), (9.0004, 70, 6)]


def _run(tmp_path, latency, fast_forward=True):
    data = synthetic_profile(steps=True)
    if latency is not None:
        data["wake_overhead"] = {"tokens": [16, 512], "time_s": [0.0, 0.0], "latency_s": latency}
    prof = tmp_path / f"p{latency}.json"
    prof.write_text(json.dumps(data))
    trace = tmp_path / "trace.csv"
    trace.write_text("arrival_s,prompt_len,output_len\n" + "".join(f"{a},{p},{o}\n" for a, p, o in TRACE))
    sc = kvsim.load_scenario({"model": "opt-13b", "gpu": "h100-80gb",
                              "workload": {"dataset": "trace", "path": str(trace), "num_requests": None},
                              "cost": {"model": "calibrated", "profile": str(prof)}})
    return kvsim.simulate(sc, fast_forward=fast_forward).requests.sort_values("request_id").reset_index(drop=True)


def test_arrivals_during_the_wake_share_the_first_step(tmp_path):
    lat = 0.25e-3
    plain, woke = _run(tmp_path, None), _run(tmp_path, lat)
    assert plain.equals(_run(tmp_path, 0.0))                 # a measured 0 is the old behaviour
    # without the wake the second request of each pair misses its partner's step; with it, the first pair
    # shares one step scheduled at the first arrival + the wake, while 0.4 ms apart is too far
    assert plain.first_scheduled_s[1] > plain.first_scheduled_s[0] == 1.0
    assert woke.first_scheduled_s[0] == woke.first_scheduled_s[1] == pytest.approx(1.0 + lat)
    assert woke.first_token_s[0] == woke.first_token_s[1]
    assert woke.first_scheduled_s[3] == pytest.approx(9.0 + lat) and woke.first_scheduled_s[4] > 9.0004
    # a lone request: everything after its arrival moves by exactly the wake
    for col in ("first_scheduled_s", "first_token_s", "finish_s"):
        assert woke[col][2] - plain[col][2] == pytest.approx(lat, abs=1e-12)
    assert woke.equals(_run(tmp_path, lat, fast_forward=False))


def test_a_busy_engine_does_not_wait(tmp_path):
    """Only a wake from idle waits: the second request of the 9 s pair arrives while the first one's step runs
    and is scheduled when that step ends, which the wake moved by its latency once, not twice."""
    lat = 0.25e-3
    plain, woke = _run(tmp_path, None), _run(tmp_path, lat)
    assert plain.first_scheduled_s[4] == plain.first_token_s[3] > 9.0004      # (queued behind the step in flight)
    assert woke.first_scheduled_s[4] - plain.first_scheduled_s[4] == pytest.approx(lat, abs=1e-12)


@pytest.mark.parametrize("bad", [-1e-3, 2.0, "0.1", True, None])
def test_a_bad_latency_names_its_field(tmp_path, bad):
    data = dict(synthetic_profile(), wake_overhead={"tokens": [16], "time_s": [0.0], "latency_s": bad})
    from kvsim.cost.profile import Profile
    with pytest.raises(KvsimError, match="wake_overhead.*latency_s"):
        Profile(data)


def test_the_latency_is_read_only_where_measured():
    from kvsim.cost.profile import Profile
    assert Profile(synthetic_profile()).wake_latency == 0.0
    assert Profile(dict(synthetic_profile(), wake_overhead={"tokens": [16], "time_s": [0.0]})).wake_latency == 0.0
    got = Profile(dict(synthetic_profile(), wake_overhead={"tokens": [16], "time_s": [0.0], "latency_s": 3e-4}))
    assert got.wake_latency == 3e-4


def test_validate_notes_a_run_whose_idle_wakes_were_far_from_the_profiles():
    import pandas as pd
    from kvsim.card_speed import WAKE_NOTE_MIN, wake_note
    # four requests each reaching an idle engine, woken 0.3 ms after arriving; one queued behind another (not idle)
    reqs = pd.DataFrame({"arrival_s": [0.0, 1.0, 1.0, 2.0, 3.0],
                         "first_scheduled_s": [0.0003, 1.0003, 1.02, 2.0003, 3.0003],
                         "finish_s": [0.5, 1.5, 1.6, 2.5, 3.5]})
    note = wake_note("s", reqs, 0.05e-3)
    assert note is not None and "median 0.300 ms" in note and "4 requests" in note and "0.050 ms" in note
    assert "did not measure" in wake_note("s", reqs, None)
    assert wake_note("s", reqs, 0.25e-3) is None                  # within 0.1 ms of the profile's
    assert wake_note("s", reqs.iloc[:WAKE_NOTE_MIN], 0.0) is None  # too few idle arrivals to say


def test_the_engine_sleeps_to_just_before_an_arrival_then_polls(monkeypatch):
    """The serving loop's idle wait (kvsim.engine.serve_loop.sleep_until): one sleep to ``spin`` before the
    arrival, then polling the clock, never returning before the arrival."""
    import kvsim.engine.serve_loop as S
    now = [10.0]
    slept = []

    def clock():
        now[0] += 1e-5          # each read of the clock moves it 10 us
        return now[0]

    def sleep(s):
        slept.append(s)
        now[0] += s

    monkeypatch.setattr(S.time, "sleep", sleep)
    S.sleep_until(clock, 10.5, spin=1e-3)
    assert slept == [pytest.approx(0.5 - 1e-3 - 1e-5)]
    assert 10.5 <= now[0] < 10.5 + 2e-5
    slept.clear()
    S.sleep_until(clock, now[0] + 5e-4, spin=1e-3)        # nearer than the spin: polled only
    assert slept == []
    t = now[0]
    S.sleep_until(clock, t - 1.0)                           # already past: returns at once
    assert slept == [] and now[0] == pytest.approx(t + 1e-5)
