"""What the beam fit's shared-read saving would take off a scenario's decode steps if every group's shared blocks
were priced the way beams' are (a check, CPU only).

The calibrated cost model prices a beam step's reads of blocks its beams share at a saving: ``shared_saving`` times
the decode grid's attention time of those reads (:mod:`kvsim.calibrate.beam_fit`). Parallel sampling (n > 1)
shares its prompt's blocks the same way, and is priced without it. This steps the scenario through the simulator
(fast-forward off), and for each decode-only step sums ``KVManager.shared_blocks`` over its decoding groups and
the grid's attention time of those reads (``shared_attention``); it prints their means and what the profile's
``shared_saving`` would take off the mean step. Run on v09 (2026-12-07, ``validation/H100-async-opt-1207c``, git
history at b1d3dba) it said 0.014 ms of a 11.6 ms step: not the 3% that v09's decode steps are priced slow.

usage: python benchmarks/engine/shared_reads_check.py SCENARIO.yaml PROFILE.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kvsim.build import setup_run  # noqa: E402
from kvsim.cost.base import is_decode_only  # noqa: E402
from kvsim.sim import SimEngine  # noqa: E402
from kvsim.validate import calibrated_scenario  # noqa: E402


def main(scenario: str, profile: str) -> None:
    eng = SimEngine(setup_run(calibrated_scenario(scenario, profile)), fast_forward=False)
    cost, sched = eng.cost, eng.sched
    beam = json.loads(Path(profile).read_text())["decode_serving"][str(cost.bs)].get("beam") or {}
    saving = float(beam.get("shared_saving", 0.0))
    priced = cost.step_time
    seen = []                               # (step time, shared reads' grid attention, shared blocks, rows)

    def step_time(plan):
        t = priced(plan)
        ctx = plan.decode_context_tokens
        if ctx and is_decode_only(plan):
            shared = sum(sched.kv.shared_blocks(sched.groups[g]) for g in plan.decode_group_ids)
            a = 0.0
            if shared:
                a = float(cost.shared_attention(len(ctx), np.array([float(sum(ctx))]), np.array([float(max(ctx))]),
                                                np.array([float(shared * cost.bs)]))[0])
            seen.append((t, a, shared, len(ctx)))
        return t

    cost.step_time = step_time
    eng.run()
    if not seen:
        raise SystemExit("error: the scenario took no decode-only step")
    a = np.array(seen)
    step, attn = a[:, 0].mean(), a[:, 1].mean()
    print(f"{Path(scenario).stem}: {len(a)} decode-only steps, mean {step * 1e3:.3f} ms, {a[:, 3].mean():.1f} rows; "
          f"shared blocks {a[:, 2].mean():.1f} a step, their grid attention {attn * 1e3:.3f} ms; x shared_saving "
          f"{saving:.2f} = {saving * attn * 1e3:.3f} ms ({saving * attn / step * 100:.2f}% of the mean step)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__.strip().splitlines()[-1])
    main(*sys.argv[1:])
