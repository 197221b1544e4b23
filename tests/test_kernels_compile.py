"""The paged prefill kernel compiled for Hopper (sm_90) on the CPU, without a GPU: the launches the prefill_tiles.py
sweep tries first and both loops (``DIAG_SPLIT``) must get through Triton's whole pipeline to PTX and a cubin; the
interpreter tests check their numbers, this checks what only the compiler sees (loop-carried values through a
constexpr branch, shared memory within the card's 227 KiB). Triton chooses interpreter or compiler at import, and
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
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from kvsim.kernels.prefill import _prefill_kernel
sig = {"q_ptr": "*fp16", "k_ptr": "*fp16", "v_ptr": "*fp16", "bt_ptr": "*i32", "qsl_ptr": "*i32", "ctx_ptr": "*i32",
       "cut_ptr": "*i32", "num_seqs": "i32", "out_ptr": "*fp16", "scale_log2": "fp32",
       **{k: "i32" for k in ("stride_qt", "stride_qh", "stride_kb", "stride_kt", "stride_kh", "stride_vb",
                            "stride_vt", "stride_vh", "stride_bts", "stride_ot", "stride_oh", "win")}}
out = []
for g, (m, n, w, s), diag in json.loads(sys.argv[1]):
    const = dict(G=g, HEAD_DIM=128, BLOCK_D=128, BLOCK_M=m, BLOCK_N=n, BLOCK_SIZE=16, DOT_F32=False,
                 PERSISTENT=False, DIAG_SPLIT=diag)
    src = ASTSource(fn=_prefill_kernel, signature={**sig, **{k: "constexpr" for k in const}}, constexprs=const)
    try:
        k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": w, "num_stages": s})
    except Exception as e:
        out.append({"error": f"{type(e).__name__}: {str(e)[:300]}"})
        continue
    out.append({"ptx": len(k.asm["ptx"]), "name": "_prefill_kernel" in k.asm["ptx"], "cubin": bool(k.asm.get("cubin")),
                "shared": k.metadata.shared})
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
    if all("ptxas" in x.get("error", "").lower() for x in res):
        pytest.skip("no ptxas on this machine: the CUDA backend cannot finish")
    return dict(zip(range(len(VARIANTS)), res))


@pytest.mark.parametrize("i", range(len(VARIANTS)), ids=[f"G{g}-m{m}n{n}w{w}s{s}-{'diag' if d else 'masked'}"
                                                           for g, (m, n, w, s), d in VARIANTS])
def test_prefill_kernel_compiles_for_hopper(compiled, i):
    r = compiled[i]
    assert "error" not in r, r.get("error")
    assert r["cubin"] and r["name"] and 0 < r["shared"] <= HOPPER_SMEM
    if VARIANTS[i][2]:      # the unmasked walk is a second loop: more code than the masked loop alone
        assert r["ptx"] > compiled[i - 1]["ptx"]
