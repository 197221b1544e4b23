"""Before ``kvsim engine`` allocates anything: will the model and its KV cache fit the device?

On CPU the weights and the KV cache (GPU-side blocks and swap blocks both live
in RAM) must fit in the memory the OS reports available; on CUDA the weights
must fit in the GPU's free memory. Otherwise a one-line error says how much is
needed, how much there is, and which catalogue models would fit — instead of
minutes of allocation ending in an out-of-memory crash.
"""
from __future__ import annotations

import os

from kvsim.errors import KvsimError

GiB = 1 << 30
CPU_HEADROOM = 0.8          # use at most this fraction of available RAM


def available_ram_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62                  # unknown: do not refuse


def _fitting_models(limit: int, dtype_bytes: int) -> str:
    from kvsim.catalogue import get_model, list_models
    names = [n for n in list_models() if get_model(n).weight_bytes(dtype_bytes) < limit / 2]
    return ", ".join(names[:4]) or "none"


def check_fits(setup, device_type: str, *, ram_bytes: int | None = None, gpu_free_bytes: int | None = None) -> None:
    """KvsimError unless ``setup``'s model (and, on CPU, its KV cache) fits ``device_type`` ('cpu' or 'cuda')."""
    sc = setup.scenario
    weights = setup.model.weight_bytes(sc.dtype_bytes, sc.tensor_parallel)
    if device_type == "cpu":
        b = setup.budget
        kv = (b.num_gpu_blocks + b.num_cpu_blocks) * b.block_bytes
        have = int((ram_bytes if ram_bytes is not None else available_ram_bytes()) * CPU_HEADROOM)
        if weights + kv > have:
            raise KvsimError("model", f"{setup.model.name} on cpu needs {weights / GiB:.1f} GiB of weights + "
                                      f"{kv / GiB:.1f} GiB of KV cache ({b.num_gpu_blocks} + {b.num_cpu_blocks} "
                                      f"blocks), more than the {have / GiB:.1f} GiB of RAM available; use a tiny model "
                                      f"({_fitting_models(have, sc.dtype_bytes)}) or set engine.num_gpu_blocks "
                                      f"and engine.num_cpu_blocks")
    elif gpu_free_bytes is not None and weights > gpu_free_bytes:
        raise KvsimError("model", f"{setup.model.name} needs {weights / GiB:.1f} GiB of weights, more than the "
                                  f"{gpu_free_bytes / GiB:.1f} GiB free on the GPU")


def check_engine_fits(sc) -> None:
    """Resolve the device the engine would use and run :func:`check_fits` for ``sc``."""
    import torch

    from kvsim.build import setup_run
    want = sc.runtime.device
    cuda = torch.cuda.is_available()
    if want == "cuda" and not cuda:
        raise KvsimError("runtime.device", "cuda requested but no CUDA GPU is visible")
    device = "cuda" if (want == "cuda" or (want == "auto" and cuda)) else "cpu"
    setup = setup_run(sc, simulator=False)
    free = torch.cuda.mem_get_info()[0] if device == "cuda" else None
    check_fits(setup, device, gpu_free_bytes=free)
