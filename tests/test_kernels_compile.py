"""The paged prefill kernel compiled for Hopper (sm_90) on the CPU, without a GPU
(``benchmarks/engine/kernel_resources.py``): the launches the prefill_tiles.py sweep tries first and both loops
(``DIAG_SPLIT``) must get through Triton's whole pipeline to a cubin; the interpreter tests check their numbers, this
checks what only the compiler sees (loop-carried values through a constexpr branch, shared memory within the card's
227 KiB, the K/V loads made asynchronous copies, no spill in the default launch). Triton chooses interpreter or compiler at import, and
the kernel test modules import it interpreted, so the compiling runs in a fresh process without TRITON_INTERPRET."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parents[1]
HOPPER_SMEM = 227 * 1024
VARIANTS = [(g, launch, diag) for g, launch in ((4, (64, 64, 4, 2)), (4, (128, 64, 8, 3)), (1, (64, 64, 4, 2)))
            for diag in (False, True)]

CHILD = r'''
import json, sys
sys.path.insert(0, "benchmarks/engine")
from kernel_resources import prefill_rows
out = []
for g, launch, diag in json.loads(sys.argv[1]):
    out += prefill_rows(g, diag, [tuple(launch)])
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def compiled():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(VARIANTS)], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=600)
    if r.returncode:
        if "GPUTarget" in r.stderr or "ASTSource" in r.stderr:      # another triton layout: nothing to check
            pytest.skip(r.stderr.strip().splitlines()[-1])
        raise AssertionError(r.stderr[-2000:])
    res = json.loads(r.stdout.strip().splitlines()[-1])
    if all("ptxas" in x.get("error", "").lower() or "cuobjdump" in x.get("error", "").lower() for x in res):
        pytest.skip("no ptxas on this machine: the CUDA backend cannot finish")
    return dict(zip(range(len(VARIANTS)), res))


@pytest.mark.parametrize("i", range(len(VARIANTS)), ids=[f"G{g}-m{m}n{n}w{w}s{s}-{'diag' if d else 'masked'}"
                                                           for g, (m, n, w, s), d in VARIANTS])
def test_prefill_kernel_compiles_for_hopper(compiled, i):
    r = compiled[i]
    assert "error" not in r, r.get("error")
    assert 0 < r["smem"] <= HOPPER_SMEM and r["ctas_per_sm"] >= 1 and r["wgmma"] > 0
    assert r["async_copies"] > 0            # the K/V loads pipelined (the JIT's alignment specialization applied)
    if VARIANTS[i][1] == (64, 64, 4, 2):    # the default launch: nothing spilled to local memory
        assert r["stack"] == 0 and r["spill_stores"] == 0
    if VARIANTS[i][2]:      # the unmasked walk is a second loop: more tensor-core instructions than one loop
        assert r["wgmma"] > compiled[i - 1]["wgmma"]
