"""benchmarks/engine/prefill_tiles.py's choice of a launch from a sweep (--pick), on the CPU."""
from __future__ import annotations

import json

import pytest

from tests._scripts import load_script


def test_pick_takes_the_least_geometric_mean_over_every_shape(tmp_path):
    P = load_script("benchmarks/engine/prefill_tiles.py")

    def res(m, n, w, s, d, ms):
        return {"block_m": m, "block_n": n, "num_warps": w, "num_stages": s, "diag_split": d, "persistent": False,
                "ms": ms}
    shapes = [{"results": [res(64, 64, 4, 2, False, 2.0), res(128, 64, 8, 3, True, 1.0), res(128, 32, 8, 2, False, 0.5),
                           {**res(64, 128, 4, 4, False, 0.1), "persistent": True}]},
              {"results": [res(64, 64, 4, 2, False, 4.0), res(128, 64, 8, 3, True, 1.0),
                           {"block_m": 128, "block_n": 32, "num_warps": 8, "num_stages": 2, "diag_split": False,
                            "persistent": False, "error": "OutOfResources"}]}]
    f = tmp_path / "prefill_tiles.json"

    def picked():
        f.write_text(json.dumps({"shapes": shapes}))
        return P.pick(str(f))
    # the 128/32 launch is fastest where it ran but failed at one shape; the persistent row is not a candidate
    assert picked() == "pm128n64w8s3+diag"
    shapes[0]["results"][1]["ms"] = 3.0          # products of the times: 3 x 1 = 3 against the default's 2 x 4 = 8
    assert picked() == "pm128n64w8s3+diag"
    shapes[1]["results"][1]["ms"] = 3.0          # 3 x 3 = 9 > 8: the default
    assert picked() == "pm64n64w4s2"


@pytest.mark.parametrize("bad", ["1,x", ""])
def test_sweep_lists_are_integers(bad):
    P = load_script("benchmarks/engine/prefill_tiles.py")
    with pytest.raises(ValueError):
        P.ints(bad)
