"""Loading Hugging Face weights into the engine's models.

:func:`load_hf_state_dict` is a by-name copy: the models use HF's parameter
names, so the only translations are (1) keys saved from a base model without
the ``model.`` prefix (old OPT checkpoints say ``decoder.layers.0...``) and
(2) non-parameter buffers some checkpoints carry (``rotary_emb.inv_freq``),
which are skipped. A tied LM head may be absent from the checkpoint.

:func:`load_checkpoint_dir` reads a local directory holding ``config.json``
and ``*.safetensors`` shards, checks the config against the model's
:class:`ModelSpec` and copies the shards one tensor at a time, straight onto
the model's device (no full CPU copy of the model).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from kvsim.catalogue import ModelSpec
from kvsim.errors import KvsimError

_SKIPPED_SUFFIXES = ("rotary_emb.inv_freq", "masked_bias", "attn.bias")


def expect_fields(spec: ModelSpec, cfg: dict, mapping: dict[str, str]) -> None:
    """Raise a one-line error for the first ``config.json`` key whose value differs from ``spec``'s field."""
    for key, field in mapping.items():
        if key not in cfg:
            raise KvsimError("config.json", f"missing {key!r} (ModelSpec {spec.name}.{field}="
                             f"{getattr(spec, field)!r})")
        if cfg[key] != getattr(spec, field):
            raise KvsimError(field, f"config.json has {key}={cfg[key]!r} but ModelSpec {spec.name} "
                             f"has {field}={getattr(spec, field)!r}")


def read_hf_config(path: str | Path) -> dict:
    """The parsed ``config.json`` of a checkpoint directory (one-line error if absent or invalid)."""
    p = Path(path) / "config.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise KvsimError("weights", f"cannot read {p}: {e}".replace("\n", " ")) from None


def _target_name(key: str, names: dict) -> str | None:
    if key in names:
        return key
    if "model." + key in names:
        return "model." + key
    return None


def load_hf_state_dict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], *,
                       strict: bool = True) -> set[str]:
    """Copy HF-named tensors into ``model`` (cast to its dtype, moved to its device).

    Unknown keys and shape mismatches raise a one-line :class:`KvsimError`
    naming the key. With ``strict`` every parameter must be filled (the LM
    head may be missing when tied). Returns the model names that were filled,
    so a sharded checkpoint can call this per shard with ``strict=False`` and
    check completeness itself with :func:`check_complete`.
    """
    names = dict(model.named_parameters(remove_duplicate=False))
    loaded = set()
    with torch.no_grad():
        for key, tensor in state_dict.items():
            target = _target_name(key, names)
            if target is None:
                if key.endswith(_SKIPPED_SUFFIXES):
                    continue
                raise KvsimError(key, f"checkpoint tensor has no counterpart in {type(model).__name__}")
            param = names[target]
            if tuple(tensor.shape) != tuple(param.shape):
                raise KvsimError(key, f"checkpoint shape {tuple(tensor.shape)} != model's {tuple(param.shape)}")
            param.copy_(tensor)
            loaded.add(target)
    if strict:
        check_complete(model, loaded)
    return loaded


def check_complete(model: torch.nn.Module, loaded: set[str]) -> None:
    """Raise naming the first parameter no tensor was loaded into (aliases of a loaded one excepted)."""
    filled = {id(p) for n, p in model.named_parameters(remove_duplicate=False) if n in loaded}
    for name, p in model.named_parameters(remove_duplicate=False):
        if name not in loaded and id(p) not in filled:
            raise KvsimError(name, "missing from the checkpoint")


def load_checkpoint_dir(model: torch.nn.Module, path: str | Path) -> None:
    """Load every ``*.safetensors`` file under ``path`` into ``model`` (complete or error)."""
    from safetensors import safe_open
    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise KvsimError("weights", f"no *.safetensors files in {path}")
    device = str(next(model.parameters()).device)
    loaded: set[str] = set()
    for f in files:
        with safe_open(str(f), framework="pt", device=device) as shard:
            for key in shard.keys():
                loaded |= load_hf_state_dict(model, {key: shard.get_tensor(key)}, strict=False)
    check_complete(model, loaded)
