"""Orca's shortcuts equal the computations they replace.

* ``ContiguousTracker`` keeps a decode run's internal and reserved slots as running sums (where
  ``ContiguousKV.caps_fixed`` allows); the same runs with the sums taken afresh every segment, and with the
  protocol's bulk-decode arrays (``decode_memory``, which reads ``memory_split``), give the same records.
* ``ContiguousKV.can_admit`` of a one-sequence group compares its blocks with the largest hole; placing its
  chunk and freeing it again (the general path) gives the same answers, on both address spaces.
"""
from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from kvsim.build import setup_run
from kvsim.config import load_scenario
from kvsim.core.block_manager import AllocStatus
from kvsim.core.kv_contiguous import ContiguousKV
from kvsim.core.request import RequestSpec
from kvsim.core.sequence import SequenceGroup
from kvsim.sim import SimEngine, simulate

BASE = {
    "model": "opt-13b", "gpu": "a100-40gb",
    "engine": {"allocator": "orca_oracle", "block_size": 16, "scheduler": "vllm", "swap_space_gib": 4,
               "gpu_memory_utilization": 0.7},
    "workload": {"dataset": "sharegpt", "rate_req_s": 2.0, "num_requests": 150, "n": 1},
    "seed": 0,
}


CASES = {      # load_scenario applies the dotted overrides to a copy of BASE
    "oracle_vllm": load_scenario(BASE),
    "oracle_chunked": load_scenario(BASE, {"engine.scheduler": "chunked"}),
    "max_buddy_busy": load_scenario(BASE, {"engine.allocator": "orca_max", "engine.placement": "buddy",
                                           "workload.rate_req_s": 30.0}),
    "pow2_n3": load_scenario(BASE, {"engine.allocator": "orca_pow2", "engine.num_gpu_blocks": 900,
                                    "engine.num_cpu_blocks": 3000, "workload.n": 3, "workload.rate_req_s": 4.0,
                                    "workload.num_requests": 100}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_kept_sums_equal_sums_afresh_and_protocol_arrays(name, monkeypatch):
    sc = CASES[name]
    fixed = []
    caps_fixed = ContiguousKV.caps_fixed

    def counted(self, groups):
        fixed.append(caps_fixed(self, groups))
        return fixed[-1]

    monkeypatch.setattr(ContiguousKV, "caps_fixed", counted)
    kept_eng = SimEngine(setup_run(sc))
    kept = kept_eng.run()
    assert kept_eng.ff_steps > 0 and fixed and all(fixed)      # the running sums really ran
    monkeypatch.setattr(ContiguousKV, "caps_fixed", lambda self, groups: False)
    afresh = simulate(sc)
    monkeypatch.delattr(ContiguousKV, "decode_tracker")
    raw_eng = SimEngine(setup_run(sc))
    raw = raw_eng.run()
    assert raw_eng.log.segments._raw                       # the protocol path really ran
    for other in (afresh, raw):
        pd.testing.assert_frame_equal(kept.iterations, other.iterations, check_exact=True)
        pd.testing.assert_frame_equal(kept.requests, other.requests, check_exact=True)
        assert kept.summary == other.summary


def _placed(kv: ContiguousKV, group: SequenceGroup) -> AllocStatus:
    """can_admit's general path: place each chunk, then free them all."""
    if kv.never_fits(group):
        return AllocStatus.NEVER
    taken = [kv.space.alloc(kv._blocks(kv.reservation(group))) for _ in group.seqs]
    for off in taken:
        if off is not None:
            kv.space.free(off)
    return AllocStatus.OK if None not in taken else AllocStatus.LATER


@pytest.mark.parametrize("placement", ["first_fit", "buddy"])
@pytest.mark.parametrize("policy", ["oracle", "pow2", "max"])
def test_one_chunk_admission_equals_placing_it(placement, policy):
    rng = np.random.default_rng(7)
    kv = ContiguousKV(4096, policy, max_seq_len=300, placement=placement, block_size=16)
    live: list[SequenceGroup] = []
    seq_id = 0
    for rid in range(600):
        spec = RequestSpec(request_id=rid, arrival_s=0.0, prompt_len=int(rng.integers(1, 200)),
                           output_len=int(rng.integers(1, 100)))
        g = SequenceGroup(spec, seq_id)
        seq_id += 1
        want = _placed(kv, g)
        assert kv.can_admit(g) == want
        if want == AllocStatus.OK and rng.random() < 0.7:
            kv.admit(g)
            live.append(g)
        if live and (want != AllocStatus.OK or rng.random() < 0.4):
            kv.free_group(live.pop(int(rng.integers(len(live)))))
        kv.check_invariants()
