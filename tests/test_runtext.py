"""The summary table a run prints: its time row names the clock the run used."""
from __future__ import annotations

from kvsim.runtext import format_summary

S = {"num_iterations": 12, "sim_duration_s": 3.25, "throughput_req_s": 1.0}


def test_simulator_says_simulated_time_and_engine_says_wall_time():
    sim = format_summary(S)
    eng = format_summary(S, clock="wall")
    assert "iterations, simulated time" in sim and "12, 3.2 s" in sim
    assert "iterations, wall time" in eng and "simulated" not in eng
    assert "n/a" in format_summary({})                       # missing values print n/a, never raise
