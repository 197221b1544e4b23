"""``blocks_in_use`` counts GPU blocks for every allocator; old Orca records (token slots) convert on read."""
from __future__ import annotations

import pandas as pd

import kvsim
from kvsim.validate import in_block_units


def _run(allocator: str):
    sc = kvsim.load_scenario("scenarios/examples/quickstart.yaml", [f"engine.allocator={allocator}",
                                                           "workload.num_requests=120", "workload.rate_req_s=20"])
    return kvsim.simulate(sc)


def test_contiguous_peak_is_in_blocks_and_fits_the_pool():
    for alloc in ("orca_oracle", "orca_pow2", "orca_max", "paged"):
        res = _run(alloc)
        blocks = res.setup.budget.num_gpu_blocks
        peak = res.summary["peak_blocks_in_use"]
        assert 0 < peak <= blocks, (alloc, peak, blocks)
        assert (res.requests.blocks_at_finish.dropna() <= blocks).all()


def _doc(alloc: str, unit: str | None, peak: int) -> dict:
    kv = {"num_gpu_blocks": 100} | ({"blocks_in_use_unit": unit} if unit else {})
    return {"kv": kv, "scenario": {"engine": {"allocator": alloc, "block_size": 16}},
            "summary": {"peak_blocks_in_use": peak}}


def test_old_orca_records_are_converted_new_and_paged_ones_are_not():
    its = pd.DataFrame({"blocks_in_use": [160, 320]})
    reqs = pd.DataFrame({"blocks_at_finish": [32, 48]})
    doc, r, i = in_block_units(_doc("orca_oracle", None, 320), reqs, its)
    assert doc["summary"]["peak_blocks_in_use"] == 20 and i.blocks_in_use.tolist() == [10, 20]
    assert r.blocks_at_finish.tolist() == [2, 3]
    for alloc, unit in (("orca_oracle", "blocks"), ("paged", None)):
        doc, r, i = in_block_units(_doc(alloc, unit, 320), reqs, its)
        assert doc["summary"]["peak_blocks_in_use"] == 320 and i.blocks_in_use.tolist() == [160, 320]
