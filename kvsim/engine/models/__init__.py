"""The engine's models: OPT and the LLaMA family in plain torch, on the paged KV cache.

Public API
----------
* :func:`build_model` — a :class:`CausalLM` for a :class:`~kvsim.catalogue.ModelSpec`, with
  deterministic dummy weights or a local Hugging Face checkpoint.
* :func:`load_hf_state_dict` — copy a HF-named state dict into a model.
* :class:`CausalLM` — the interface: ``forward(input_ids, positions, kv_caches, meta)`` returns
  final hidden states; ``compute_logits(hidden)`` returns float32 logits.
"""
from __future__ import annotations

from pathlib import Path

import torch

from kvsim.catalogue import ModelSpec
from kvsim.engine.models.base import CausalLM
from kvsim.engine.models.llama import LlamaForCausalLM
from kvsim.engine.models.loading import load_checkpoint_dir, load_hf_state_dict, read_hf_config
from kvsim.engine.models.opt import OPTForCausalLM
from kvsim.errors import KvsimError

MODEL_CLASSES = {"opt": OPTForCausalLM, "llama": LlamaForCausalLM}


def build_model(spec: ModelSpec, *, dtype: torch.dtype, device, weights: str | Path = "dummy",
                seed: int = 0, tp=None, **overrides) -> CausalLM:
    """Build ``spec``'s model on ``device`` in ``dtype``, in eval mode.

    ``weights="dummy"``: deterministic random weights from ``seed`` (see
    :meth:`CausalLM.init_dummy`). Otherwise a local directory with
    ``config.json`` and ``*.safetensors``: the config is checked against
    ``spec`` (a mismatch names the field), architecture options such as
    ``rope_theta`` / ``rms_norm_eps`` are taken from it, and the weights are
    loaded. ``overrides`` (LLaMA: ``rope_theta``, ``rms_norm_eps``) win over both.

    ``tp`` (a :class:`kvsim.engine.tp.TPGroup` of more than one rank): this rank's shard. The full
    model is built first (same weights, same seed) and each tensor narrowed to the rank's slice, so
    TP=N computes what TP=1 does; the full copy is freed before returning (peak memory: one full
    model plus one shard per rank, fine for the CPU tests, not for a 70B model on a GPU).
    """
    if tp is not None and tp.world_size > 1:
        from kvsim.engine.tp import load_full_state_dict
        full = build_model(spec, dtype=dtype, device=device, weights=weights, seed=seed, **overrides)
        options = {k: getattr(full, k) for k in ("rope_theta", "rms_norm_eps") if hasattr(full, k)}
        with torch.device(device):
            model = MODEL_CLASSES[spec.arch](spec, dtype=dtype, device=device, tp=tp, **options)
        load_full_state_dict(model, full.state_dict())
        del full
        return model.eval()
    cls = MODEL_CLASSES.get(spec.arch)
    if cls is None:
        raise KvsimError("arch", f"{spec.arch!r} is not one of {', '.join(MODEL_CLASSES)}")
    if dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise KvsimError("dtype", f"{dtype} is not float16, bfloat16 or float32")
    dummy = isinstance(weights, str) and weights == "dummy"
    options = {}
    if not dummy:
        if not Path(weights).is_dir():
            raise KvsimError("weights", f"{str(weights)!r} is neither 'dummy' nor a checkpoint directory")
        from kvsim.engine.models import llama, opt
        checker = opt.check_hf_config if spec.arch == "opt" else llama.check_hf_config
        options = checker(spec, read_hf_config(weights))
    options.update(overrides)
    with torch.device(device):  # any stray allocation lands on the device too
        model = cls(spec, dtype=dtype, device=device, **options)
    if dummy:
        model.init_dummy(seed)
    else:
        load_checkpoint_dir(model, weights)
    return model.eval()


__all__ = ["CausalLM", "LlamaForCausalLM", "OPTForCausalLM", "build_model", "load_hf_state_dict"]
