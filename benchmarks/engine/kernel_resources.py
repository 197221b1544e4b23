"""A Triton kernel's resources on Hopper, from the compiler alone (CPU, no GPU): registers, spills, shared memory,
occupancy and tensor-core instructions per launch configuration.

Triton compiles for ``sm_90`` without a device (``triton.compile`` with a ``GPUTarget``; its bundled ``ptxas`` and
``cuobjdump`` build and read the cubin), so what a launch costs in registers and shared memory, whether it spills to
local memory, how many programs fit on an SM and whether the K/V loads became asynchronous copies (``LDGSTS``) can be
read before a device call, and a sweep's candidates chosen on it. The compile specializes the arguments as the JIT
does at a real launch (``tt.divisibility`` 16 on every pointer and on the integers that are multiples of 16 there:
the strides of the engine's tensors and the full-attention window): without that, loads are not vectorized, the
pipeliner leaves them synchronous and a launch appears to spill where the real one does not.

Occupancy on an H100/H200 SM: 65,536 registers (allocated per warp in 256-register units), 64 warps, 228 KiB of
shared memory (1 KiB reserved per CTA), 32 CTAs; ``ctas_per_sm`` is the least of the three limits.

usage: python benchmarks/engine/kernel_resources.py [--group 4] [--diag 0,1] [--out FILE.md]
Prints one line per launch of :func:`kvsim.kernels.prefill.paged_prefill_attention` (the sweep of prefill_tiles.py).
"""
from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import tempfile

SM_REGS, SM_WARPS, SM_SMEM, SM_CTAS, CTA_SMEM_RESERVED = 65536, 64, 228 * 1024, 32, 1024
PREFILL_SIG = {"q_ptr": "*fp16", "k_ptr": "*fp16", "v_ptr": "*fp16", "bt_ptr": "*i32", "qsl_ptr": "*i32",
               "ctx_ptr": "*i32", "cut_ptr": "*i32", "num_seqs": "i32", "out_ptr": "*fp16", "scale_log2": "fp32",
               **{k: "i32" for k in ("stride_qt", "stride_qh", "stride_kb", "stride_kt", "stride_kh", "stride_vb",
                                    "stride_vt", "stride_vh", "stride_bts", "stride_ot", "stride_oh", "win")}}
NOT_ALIGNED = ("num_seqs", "scale_log2")      # the arguments a launch does not see as multiples of 16


def occupancy(regs: int, warps: int, smem: int) -> int:
    """CTAs of ``warps`` warps, ``regs`` registers a thread and ``smem`` bytes of shared memory that fit on one SM."""
    per_warp = -(-regs * 32 // 256) * 256
    by_regs = (SM_REGS // per_warp) // warps if per_warp else SM_CTAS
    by_smem = SM_SMEM // (smem + CTA_SMEM_RESERVED)
    return max(0, min(by_regs, by_smem, SM_WARPS // warps, SM_CTAS))


def compile_sm90(fn, signature: dict, constexprs: dict, warps: int, stages: int, not_aligned=NOT_ALIGNED):
    """``fn`` compiled for sm_90 as a launch would compile it (see module doc); the ``CompiledKernel``."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(fn.arg_names)
             if a in signature and a not in not_aligned}
    src = ASTSource(fn=fn, signature={**signature, **{k: "constexpr" for k in constexprs}}, constexprs=constexprs,
                    attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, "num_stages": stages})


def resources(kernel, warps: int) -> dict:
    """Registers, local-memory stack and spill instructions, shared memory, CTAs per SM and instruction counts of a
    compiled kernel (its cubin read by the ``cuobjdump`` Triton ships)."""
    import triton
    tools = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(kernel.asm["cubin"])
    try:
        sass = subprocess.run([os.path.join(tools, "cuobjdump"), "-sass", f.name], capture_output=True, text=True,
                              check=True).stdout
        usage = subprocess.run([os.path.join(tools, "cuobjdump"), "-res-usage", f.name], capture_output=True,
                               text=True, check=True).stdout
    finally:
        os.unlink(f.name)
    regs = int(re.search(r"REG:(\d+)", usage).group(1))
    stack = int(re.search(r"STACK:(\d+)", usage).group(1))
    smem = int(kernel.metadata.shared)
    return {"regs": regs, "stack": stack, "spill_stores": sass.count("STL"), "smem": smem,
            "ctas_per_sm": occupancy(regs, warps, smem), "warps_per_sm": occupancy(regs, warps, smem) * warps,
            "wgmma": sass.count("HGMMA"), "async_copies": sass.count("LDGSTS")}


def prefill_rows(group: int, diag: bool, launches) -> list[dict]:
    from kvsim.kernels.prefill import _prefill_kernel
    rows = []
    for m, n, w, s in launches:
        const = dict(G=group, HEAD_DIM=128, BLOCK_D=128, BLOCK_M=m, BLOCK_N=n, BLOCK_SIZE=16, DOT_F32=False,
                     PERSISTENT=False, DIAG_SPLIT=diag)
        row = {"group": group, "diag_split": diag, "block_m": m, "block_n": n, "num_warps": w, "num_stages": s}
        try:
            row.update(resources(compile_sm90(_prefill_kernel, PREFILL_SIG, const, w, s), w))
        except Exception as e:       # out of shared memory, say: the sweep would record the same failure
            row["error"] = f"{type(e).__name__}: {str(e)[:80]}"
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--group", type=int, nargs="+", default=[4, 1], help="query heads per KV head (4: Llama-3-8B)")
    ap.add_argument("--diag", default="0,1")
    ap.add_argument("--out")
    a = ap.parse_args()
    launches = list(itertools.product((64, 128), (32, 64, 128), (4, 8), (2, 3)))
    lines = ["| G | diag | block_m | block_n | warps | stages | regs | stack (B) | spill stores | smem (KiB) | "
             "CTAs / SM | warps / SM | wgmma | async copies |", "|" + "---|" * 14]
    for g in a.group:
        for d in (bool(int(x)) for x in a.diag.split(",")):
            for r in prefill_rows(g, d, launches):
                head = f"| {g} | {'on' if d else 'off'} | {r['block_m']} | {r['block_n']} | {r['num_warps']} | " \
                       f"{r['num_stages']} |"
                lines.append(head + (f" {r['error']} |" + " |" * 7 if "error" in r else
                                     f" {r['regs']} | {r['stack']} | {r['spill_stores']} | {r['smem'] / 1024:.1f} | "
                                     f"{r['ctas_per_sm']} | {r['warps_per_sm']} | {r['wgmma']} | {r['async_copies']} |"))
                print(lines[-1], flush=True)
    if a.out:
        import triton
        with open(a.out, "w") as f:
            f.write("# The paged prefill kernel's resources on sm_90, per launch (compiled on the CPU)\n\n"
                    f"`python benchmarks/engine/kernel_resources.py --out <this file>` (triton {triton.__version__}; "
                    "see its docstring). Head dim 128, block size 16, fp16.\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
