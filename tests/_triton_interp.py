"""Shared set-up of the kernel test modules: Triton's CPU interpreter when there is no CUDA.

Triton picks interpreter-or-compiler when it is first imported. If another test module of this
session imported it first without TRITON_INTERPRET on a machine with no GPU, the kernels can't
run in this process: ``STALE_TRITON`` is then true, the kernel tests skip, and one test in each
module re-runs that module in a fresh process (``run_file_in_fresh_interpreter``).
"""
import os

import pytest

torch = pytest.importorskip("torch")
_ENV_BEFORE = os.environ.get("TRITON_INTERPRET")
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

STALE_TRITON = not torch.cuda.is_available() and type(tl.zeros).__name__ != "InterpretedFunction"
if STALE_TRITON:  # leave the session's environment as we found it
    if _ENV_BEFORE is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = _ENV_BEFORE

CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def only_in_a_usable_process(request):
    """Import into a kernel test module: skips its tests in a process where Triton can't run them."""
    if STALE_TRITON and request.node.name != "test_rerun_in_fresh_interpreter":
        pytest.skip("triton was imported without the interpreter: see test_rerun_in_fresh_interpreter")
