"""Model and GPU catalogue: shapes and datasheet numbers, loaded from YAML.

``models.yaml`` and ``gpus.yaml`` (next to this file) hold the published
configs and datasheet numbers, with their sources in comments. Entries are
validated on load: a missing or mistyped field is a one-line
:class:`~kvsim.errors.KvsimError` naming the file, the entry and the field.

Lookup is tolerant. Models: case-insensitive, any ``org/`` prefix and a
trailing ``-hf`` are dropped and separators ignored, so ``opt-13b``,
``OPT-13B`` and ``facebook/opt-13b`` all give OPT-13B; YAML ``aliases`` add
more names. GPUs: the same normalisation (a leading ``NVIDIA`` is dropped too),
and a *unique* prefix is accepted (``h100`` -> H100-80GB), but an ambiguous one
is rejected (``A100`` could be the 40GB or the 80GB part).
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from kvsim.errors import KvsimError

ARCHS = ("opt", "llama")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer's shapes.

    ``arch="opt"``: LayerNorm, 2-matrix MLP, learned positions (``max_seq_len + 2``
    rows), biases, LM head tied to the embedding. ``arch="llama"``: RMSNorm,
    SwiGLU (3 matrices), RoPE, no biases, untied LM head. ``tie_word_embeddings``
    defaults from ``arch`` when left ``None``.
    """

    name: str
    arch: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    ffn_hidden_size: int
    vocab_size: int
    max_seq_len: int
    tie_word_embeddings: bool | None = None
    sliding_window: int = 0                  # 0: no sliding-window layer
    layer_pattern: tuple[str, ...] = ()      # cycled over layers: "sliding" | "full"; () = all sliding

    def layer_windows(self) -> tuple[int, ...]:
        """Each layer's attention window in tokens (0 = full attention), in layer order."""
        if not self.sliding_window:
            return (0,) * self.num_layers
        pat = self.layer_pattern or ("sliding",)
        return tuple(self.sliding_window if pat[i % len(pat)] == "sliding" else 0 for i in range(self.num_layers))

    def __post_init__(self):
        if self.tie_word_embeddings is None:
            object.__setattr__(self, "tie_word_embeddings", self.arch == "opt")

    # -- per-GPU shapes under tensor parallelism -------------------------------
    def kv_heads_per_gpu(self, tp: int = 1) -> int:
        """KV heads each GPU stores: ceil(kv_heads / tp); KV heads replicate when tp > kv heads."""
        return _ceil_div(self.num_kv_heads, tp)

    def kv_bytes_per_token(self, dtype_bytes: int = 2, tp: int = 1) -> int:
        """Per-GPU KV-cache bytes of one token: 2 (K and V) x layers x kv_heads_per_gpu x head_dim x dtype."""
        return 2 * self.num_layers * self.kv_heads_per_gpu(tp) * self.head_dim * dtype_bytes

    @property
    def mlp_matrices(self) -> int:
        """2 for OPT (fc1, fc2), 3 for LLaMA's SwiGLU (gate, up, down)."""
        return 2 if self.arch == "opt" else 3

    def linear_params_per_layer(self, tp: int = 1) -> int:
        """Weight-matrix parameters of one layer held by one GPU (q, k, v, o and MLP; no biases).

        Query heads and the FFN width are split ``tp`` ways (ceil); KV heads per
        GPU are ``kv_heads_per_gpu(tp)`` (replicated when tp > kv heads).
        """
        q_width = _ceil_div(self.num_heads, tp) * self.head_dim
        kv_width = self.kv_heads_per_gpu(tp) * self.head_dim
        attn = self.hidden_size * (2 * q_width + 2 * kv_width)  # q + o, k + v
        mlp = self.mlp_matrices * self.hidden_size * _ceil_div(self.ffn_hidden_size, tp)
        return attn + mlp

    def _small_params_per_layer(self) -> int:
        """Biases and norm parameters of one layer (replicated on every GPU)."""
        if self.arch == "opt":
            q = self.num_heads * self.head_dim
            kv = self.num_kv_heads * self.head_dim
            biases = q + 2 * kv + self.hidden_size + self.ffn_hidden_size + self.hidden_size
            return biases + 2 * 2 * self.hidden_size  # two LayerNorms (weight + bias)
        return 2 * self.hidden_size  # two RMSNorms

    def _other_params(self) -> int:
        """Final norm and learned positions (replicated on every GPU)."""
        if self.arch == "opt":
            return 2 * self.hidden_size + (self.max_seq_len + 2) * self.hidden_size
        return self.hidden_size

    def _vocab_params(self, tp: int = 1) -> int:
        """Token embedding (+ untied LM head), vocab-parallel like vLLM: split ``tp`` ways."""
        tables = 1 if self.tie_word_embeddings else 2
        return tables * _ceil_div(self.vocab_size, tp) * self.hidden_size

    def num_params(self) -> int:
        """Total parameters computed from the shapes (embeddings, norms and biases included)."""
        per_layer = self.linear_params_per_layer(1) + self._small_params_per_layer()
        return self.num_layers * per_layer + self._vocab_params(1) + self._other_params()

    def weight_bytes(self, dtype_bytes: int = 2, tp: int = 1) -> int:
        """Weight bytes held by ONE GPU under ``tp``-way tensor parallelism.

        Linear layers and the vocab tables (embedding, LM head) are split ``tp``
        ways as vLLM does; biases, norms and learned positions are replicated.
        """
        per_layer = self.linear_params_per_layer(tp) + self._small_params_per_layer()
        params = self.num_layers * per_layer + self._vocab_params(tp) + self._other_params()
        return params * dtype_bytes

    def flops_per_token_linear(self) -> int:
        """FLOPs of one token through all linear layers and the LM head: 2 x those weights."""
        return 2 * (self.num_layers * self.linear_params_per_layer(1) + self.vocab_size * self.hidden_size)


@dataclass(frozen=True)
class GPUSpec:
    """Datasheet numbers of one GPU (bytes, bytes/s, FLOP/s).

    ``host_link_Bps`` is the theoretical per-direction PCIe bandwidth and
    ``interconnect_Bps`` the per-GPU per-direction NVLink (or PCIe) bandwidth;
    achievable fractions are cost-model parameters, not catalogue data.
    """

    name: str
    memory_bytes: int
    hbm_bandwidth_Bps: float
    peak_fp16_flops: float
    host_link_Bps: float
    interconnect_Bps: float
    price_per_hour_usd: float | None = None


# -- loading and validation ----------------------------------------------------
_MODEL_INT_FIELDS = ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim",
                     "ffn_hidden_size", "vocab_size", "max_seq_len")
_GPU_NUM_FIELDS = {"memory_mib": 1 << 20, "hbm_bandwidth_GBps": 1e9, "peak_fp16_tflops": 1e12,
                   "host_link_GBps": 1e9, "interconnect_GBps": 1e9}


# libyaml's safe loader where PyYAML was built with it: the same data, ~10x faster than the pure-Python one (the
# catalogue is read by every run; ~30 ms of a 10,000-request simulation otherwise)
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _entries(path: Path, key: str) -> list[dict]:
    try:
        data = yaml.load(Path(path).read_text(), Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader
    except (OSError, yaml.YAMLError) as e:
        raise KvsimError("catalogue", f"cannot read {path}: {e}".replace("\n", " ")) from None
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise KvsimError("catalogue", f"{Path(path).name}: expected a top-level '{key}:' list")
    for i, e in enumerate(data[key]):
        if not isinstance(e, dict) or not isinstance(e.get("name"), str):
            raise KvsimError("catalogue", f"{Path(path).name}: entry #{i} needs a string 'name'")
    return data[key]


def _check_keys(where: str, entry: dict, required: tuple, optional: tuple) -> None:
    for k in required:
        if k not in entry:
            raise KvsimError("catalogue", f"{where}: missing field '{k}'")
    extra = set(entry) - set(required) - set(optional)
    if extra:
        raise KvsimError("catalogue", f"{where}: unknown field '{sorted(extra)[0]}'")


def _positive(where: str, key: str, value, integer: bool):
    ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool) and value > 0
    if not ok:
        kind = "a positive integer" if integer else "a positive number"
        raise KvsimError("catalogue", f"{where}: field '{key}' must be {kind}, got {value!r}")
    return value


def _window_fields(where: str, e: dict) -> tuple[int, tuple[str, ...]]:
    """The optional sliding_window and layer_pattern fields, checked."""
    window = _positive(where, "sliding_window", e["sliding_window"], True) if "sliding_window" in e else 0
    pattern = e.get("layer_pattern")
    if pattern is None:
        return window, ()
    if not window:
        raise KvsimError("catalogue", f"{where}: field 'layer_pattern' needs a sliding_window")
    if (not isinstance(pattern, list) or not pattern
            or any(k not in ("sliding", "full") for k in pattern)):
        raise KvsimError("catalogue", f"{where}: field 'layer_pattern' must be a non-empty list of "
                                      f"'sliding' / 'full', got {pattern!r}")
    return window, tuple(pattern)


def load_models(path: str | Path) -> dict[str, tuple[ModelSpec, list[str]]]:
    """Parse and validate a models YAML file -> {name: (spec, aliases)}."""
    out = {}
    for e in _entries(path, "models"):
        where = f"{Path(path).name}: {e['name']}"
        _check_keys(where, e, ("name", "arch") + _MODEL_INT_FIELDS,
                    ("aliases", "tie_word_embeddings", "sliding_window", "layer_pattern"))
        if e["arch"] not in ARCHS:
            raise KvsimError("catalogue", f"{where}: field 'arch' must be one of {', '.join(ARCHS)}, got {e['arch']!r}")
        ints = {k: _positive(where, k, e[k], True) for k in _MODEL_INT_FIELDS}
        if ints["num_heads"] % ints["num_kv_heads"]:
            raise KvsimError("catalogue", f"{where}: num_heads must be a multiple of num_kv_heads")
        window, pattern = _window_fields(where, e)
        spec = ModelSpec(name=e["name"], arch=e["arch"], tie_word_embeddings=e.get("tie_word_embeddings"),
                         sliding_window=window, layer_pattern=pattern, **ints)
        out[spec.name] = (spec, list(e.get("aliases") or []))
    return out


def load_gpus(path: str | Path) -> dict[str, tuple[GPUSpec, list[str]]]:
    """Parse and validate a GPUs YAML file -> {name: (spec, aliases)}."""
    out = {}
    for e in _entries(path, "gpus"):
        where = f"{Path(path).name}: {e['name']}"
        _check_keys(where, e, ("name",) + tuple(_GPU_NUM_FIELDS), ("aliases", "price_per_hour_usd"))
        vals = {k: _positive(where, k, e[k], k == "memory_mib") for k in _GPU_NUM_FIELDS}
        price = e.get("price_per_hour_usd")
        if price is not None:
            _positive(where, "price_per_hour_usd", price, False)
        spec = GPUSpec(name=e["name"], memory_bytes=vals["memory_mib"] << 20,
                       hbm_bandwidth_Bps=vals["hbm_bandwidth_GBps"] * 1e9,
                       peak_fp16_flops=vals["peak_fp16_tflops"] * 1e12,
                       host_link_Bps=vals["host_link_GBps"] * 1e9,
                       interconnect_Bps=vals["interconnect_GBps"] * 1e9,
                       price_per_hour_usd=None if price is None else float(price))
        out[spec.name] = (spec, list(e.get("aliases") or []))
    return out


def _data_file(name: str) -> Path:
    return Path(str(resources.files("kvsim.catalogue").joinpath(name)))


@functools.lru_cache(maxsize=None)
def _models() -> dict[str, tuple[ModelSpec, list[str]]]:
    return load_models(_data_file("models.yaml"))


@functools.lru_cache(maxsize=None)
def _gpus() -> dict[str, tuple[GPUSpec, list[str]]]:
    return load_gpus(_data_file("gpus.yaml"))


def _norm(name: str, *, strip_vendor: bool = False) -> str:
    s = name.strip().lower().rsplit("/", 1)[-1]
    if strip_vendor and s.startswith("nvidia"):
        s = s[len("nvidia"):]
    s = re.sub(r"[-_ ]hf$", "", s)
    return re.sub(r"[^a-z0-9.]", "", s)


def _index(table: dict, strip_vendor: bool) -> dict[str, str]:
    idx = {}
    for canonical, (_, aliases) in table.items():
        for n in [canonical, *aliases]:
            idx[_norm(n, strip_vendor=strip_vendor)] = canonical
    return idx


def get_model(name: str) -> ModelSpec:
    """The catalogue model called ``name`` (tolerant, see module doc); unknown -> KvsimError("model")."""
    table = _models()
    key = _norm(str(name))
    hit = _index(table, False).get(key)
    if hit is None:
        raise KvsimError("model", f"unknown model {name!r} (known: {', '.join(table)})")
    return table[hit][0]


def get_gpu(name: str) -> GPUSpec:
    """The catalogue GPU called ``name``; a unique prefix works; unknown/ambiguous -> KvsimError("gpu")."""
    table = _gpus()
    key = _norm(str(name), strip_vendor=True)
    idx = _index(table, True)
    hit = idx.get(key)
    if hit is None and key:
        cands = sorted({c for k, c in idx.items() if k.startswith(key)})
        if len(cands) == 1:
            hit = cands[0]
        elif cands:
            raise KvsimError("gpu", f"ambiguous gpu {name!r} (matches: {', '.join(cands)})")
    if hit is None:
        raise KvsimError("gpu", f"unknown gpu {name!r} (known: {', '.join(table)})")
    return table[hit][0]


def list_models() -> list[str]:
    """Canonical model names, in catalogue order."""
    return list(_models())


def list_gpus() -> list[str]:
    """Canonical GPU names, in catalogue order."""
    return list(_gpus())


__all__ = ["ModelSpec", "GPUSpec", "get_model", "get_gpu", "list_models", "list_gpus",
           "load_models", "load_gpus", "ARCHS"]
