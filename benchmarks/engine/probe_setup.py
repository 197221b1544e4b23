"""What the engine probes share (overhead_parts_check.py, lone_prefill_probe.py): their common arguments, and a
profile of this card with its model built on the device — or, for a CPU smoke run, a synthetic profile of a model."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def add_common_args(ap) -> None:
    """``--profile``, ``--model`` (CPU smoke), ``--out``, ``--rounds``, ``--device``, ``--block-size``."""
    ap.add_argument("--profile", help="a profile of this card (its grids price the steps)")
    ap.add_argument("--model", help="with --device cpu and no --profile: a synthetic profile of this model")
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--block-size", type=int, default=16)


def profile_and_model(a):
    """``(profile, model, device, graphs)`` for parsed args ``a``: the profile read (or made, without ``--profile``)
    and its model built in fp16 with dummy weights on ``a.device``; ``graphs``: CUDA graphs (on CUDA only)."""
    import torch

    from kvsim.catalogue import get_model
    from kvsim.engine.models import build_model
    dev = torch.device(a.device)
    if a.profile:
        prof = json.loads(Path(a.profile).read_text())
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
        from profile_factory import synthetic_profile
        spec = get_model(a.model)
        prof = synthetic_profile(model=spec.name, layers=spec.num_layers, steps=True)
    model = build_model(get_model(prof["model"]), dtype=torch.float16, device=dev, weights="dummy")
    return prof, model, dev, dev.type == "cuda"
