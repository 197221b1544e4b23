"""Scenario configuration: one YAML file = one simulated (or engine) run.

``load_scenario(path_or_dict, overrides)`` reads YAML, applies ``--set
key=value`` overrides (dotted keys, YAML-typed values), validates every field
and returns a :class:`Scenario`. Any problem is a :class:`KvsimError` naming the
field.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kvsim.configtools import cfg_field, from_dict, to_dict
from kvsim.cost.roofline import RooflineParams
from kvsim.errors import KvsimError
from kvsim.workload.config import WorkloadConfig

ALLOCATORS = ("paged", "orca_max", "orca_pow2", "orca_oracle")
PLACEMENTS = ("first_fit", "buddy")
SCHEDULERS = ("vllm", "chunked", "static")
PREEMPTION = ("auto", "swap", "recompute")
DTYPES = {"fp16": 2, "bf16": 2, "fp32": 4, "fp8": 1}
GiB = 1 << 30


@dataclass
class EngineConfig:
    allocator: str = cfg_field("paged", "KV allocation: paged (vLLM) | orca_max | orca_pow2 | orca_oracle (contiguous)")
    placement: str = cfg_field("first_fit", "contiguous allocators: address-space placement, first_fit | buddy")
    block_size: int = cfg_field(16, "paged: tokens per KV block (>= 1)")
    max_num_seqs: int = cfg_field(256, "most sequences in one iteration's batch")
    max_num_batched_tokens: int = cfg_field(2560, "most tokens (prefill + decode) in one iteration")
    max_model_len: int | None = cfg_field(None, "longest prompt+output in tokens (default: the model's)")
    gpu_memory_utilization: float = cfg_field(0.9, "fraction of GPU memory kvsim may use (weights + activations + KV)")
    swap_space_gib: float = cfg_field(4.0, "CPU swap space per GPU in GiB (0 disables swap)")
    preemption_mode: str = cfg_field("auto", "auto (swap for multi-sequence groups, recompute otherwise) | swap | recompute")
    scheduler: str = cfg_field("vllm", "vllm (prefill-prioritised) | chunked (chunked prefill) | static (request-level batching)")
    enable_prefix_caching: bool = cfg_field(False, "paged: share full prompt blocks by content hash")
    watermark: float = cfg_field(0.01, "paged: fraction of blocks kept free when admitting")
    beam_keep_prob: float = cfg_field(0.5, "beam model: probability a beam keeps its own history each step")
    beam_decay: float = cfg_field(0.5, "beam model: weight decay over ranks for re-parented beams")
    num_gpu_blocks: int | None = cfg_field(None, "override the KV block count computed from memory (tests, validation)")
    num_cpu_blocks: int | None = cfg_field(None, "override the swap block count computed from swap_space_gib")

    def validate(self, path: str = "engine") -> None:
        def bad(f, msg):
            raise KvsimError(f"{path}.{f}", msg)
        for name, allowed in (("allocator", ALLOCATORS), ("placement", PLACEMENTS),
                              ("scheduler", SCHEDULERS), ("preemption_mode", PREEMPTION)):
            v = getattr(self, name)
            if v not in allowed:
                bad(name, f"got {v!r}, expected one of {', '.join(allowed)}")
        for name in ("block_size", "max_num_seqs", "max_num_batched_tokens"):
            if getattr(self, name) < 1:
                bad(name, f"got {getattr(self, name)!r}, expected an integer >= 1")
        if self.max_model_len is not None and self.max_model_len < 2:
            bad("max_model_len", f"got {self.max_model_len!r}, expected >= 2")
        if not 0 < self.gpu_memory_utilization <= 1:
            bad("gpu_memory_utilization", f"got {self.gpu_memory_utilization!r}, expected 0 < x <= 1")
        if self.swap_space_gib < 0:
            bad("swap_space_gib", f"got {self.swap_space_gib!r}, expected >= 0")
        if not 0 <= self.watermark < 1:
            bad("watermark", f"got {self.watermark!r}, expected 0 <= x < 1")
        if not 0 <= self.beam_keep_prob <= 1:
            bad("beam_keep_prob", f"got {self.beam_keep_prob!r}, expected 0 <= x <= 1")
        if not 0 < self.beam_decay <= 1:
            bad("beam_decay", f"got {self.beam_decay!r}, expected 0 < x <= 1")
        for name in ("num_gpu_blocks", "num_cpu_blocks"):
            v = getattr(self, name)
            if v is not None and v < (1 if name == "num_gpu_blocks" else 0):
                bad(name, f"got {v!r}, expected a positive block count")
        if self.scheduler == "chunked" and self.max_num_batched_tokens < self.max_num_seqs:
            bad("max_num_batched_tokens", f"chunked prefill schedules every running sequence's decode token "
                f"first, so it needs max_num_batched_tokens >= max_num_seqs ({self.max_num_seqs}), "
                f"got {self.max_num_batched_tokens}")
        if self.preemption_mode == "swap" and self.swap_space_gib == 0 and not self.num_cpu_blocks:
            bad("preemption_mode", "swap needs swap_space_gib > 0")


@dataclass
class CostConfig:
    model: str = cfg_field("roofline", "cost model: roofline (analytical, from the catalogue) | calibrated (a measured profile)")
    profile: str | None = cfg_field(None, "calibrated: path of the profile JSON written by `kvsim calibrate`")
    roofline: RooflineParams = cfg_field(None, "roofline efficiency factors and overheads")

    def __post_init__(self):
        if self.roofline is None:
            self.roofline = RooflineParams()

    def validate(self, path: str = "cost") -> None:
        if self.model not in ("roofline", "calibrated"):
            raise KvsimError(f"{path}.model", f"got {self.model!r}, expected roofline or calibrated")
        if self.model == "calibrated" and not self.profile:
            raise KvsimError(f"{path}.profile", "the calibrated cost model needs a profile path")
        self.roofline.validate(f"{path}.roofline")


@dataclass
class RuntimeConfig:
    """Settings of the real engine only (``kvsim engine``); the simulator ignores them."""
    device: str = cfg_field("auto", "auto (cuda if available) | cuda | cpu")
    attention_backend: str = cfg_field("auto", "auto (triton on cuda, torch on cpu) | triton | torch")
    weights: str = cfg_field("dummy", "dummy (random weights) or a local Hugging Face checkpoint directory")
    sampling: str = cfg_field("greedy", "greedy | random (temperature / top_p); beam search comes from workload.beam_width")
    temperature: float = cfg_field(1.0, "random sampling temperature (> 0)")
    top_p: float = cfg_field(1.0, "random sampling nucleus mass (0 < top_p <= 1)")
    cuda_graphs: bool = cfg_field(True, "capture decode steps in CUDA graphs for common batch sizes")
    cuda_graph_max_batch: int = cfg_field(256, "largest decode batch captured in a CUDA graph (larger ones run eagerly)")
    cuda_graph_prefill_max_tokens: int = cfg_field(
        2048, "largest prefill step (tokens) captured in a CUDA graph; 0 = prefill always eager")
    unified_mixed_steps: bool = cfg_field(
        True, "run mixed prefill+decode steps as one varlen attention launch, replayed from the prefill CUDA "
              "graphs by token count (false: two launches, eager — the engine before this option)")
    fused_layer_ops: bool = cfg_field(
        True, "LLaMA family on triton: RMSNorm + residual, RoPE + cache write and SiLU x up as fused kernels "
              "(false: the plain torch ops — the engine before this option)")
    warmup: bool = cfg_field(True, "compile and run every kernel variant once before the clock starts (GPU)")
    max_wall_s: float | None = cfg_field(None, "stop the engine after this many wall-clock seconds")

    def validate(self, path: str = "runtime") -> None:
        for name, allowed in (("device", ("auto", "cuda", "cpu")), ("attention_backend", ("auto", "triton", "torch")),
                              ("sampling", ("greedy", "random"))):
            v = getattr(self, name)
            if v not in allowed:
                raise KvsimError(f"{path}.{name}", f"got {v!r}, expected one of {', '.join(allowed)}")
        if self.cuda_graph_max_batch < 1:
            raise KvsimError(f"{path}.cuda_graph_max_batch", f"got {self.cuda_graph_max_batch!r}, expected >= 1")
        if self.cuda_graph_prefill_max_tokens < 0:
            raise KvsimError(f"{path}.cuda_graph_prefill_max_tokens",
                             f"got {self.cuda_graph_prefill_max_tokens!r}, expected >= 0")
        if self.temperature <= 0:
            raise KvsimError(f"{path}.temperature", f"got {self.temperature!r}, expected > 0")
        if not 0 < self.top_p <= 1:
            raise KvsimError(f"{path}.top_p", f"got {self.top_p!r}, expected 0 < top_p <= 1")


@dataclass
class Scenario:
    name: str = cfg_field("scenario", "a name for the run (used in outputs)")
    model: str = cfg_field("opt-13b", "model from the catalogue (`kvsim models`)")
    gpu: str = cfg_field("a100-40gb", "GPU from the catalogue (`kvsim gpus`)")
    tensor_parallel: int = cfg_field(1, "tensor-parallel degree: GPUs per replica (divides weights and KV)")
    dtype: str = cfg_field("fp16", "weights and KV dtype: fp16 | bf16 | fp32 | fp8")
    engine: EngineConfig = cfg_field(None, "engine settings")
    workload: WorkloadConfig = cfg_field(None, "requests: lengths, arrivals, sampling")
    cost: CostConfig = cfg_field(None, "cost model")
    runtime: RuntimeConfig = cfg_field(None, "real-engine settings (kvsim engine)")
    seed: int = cfg_field(0, "random seed for the workload and the beam model")
    max_time_s: float | None = cfg_field(None, "stop the simulation at this simulated time")
    description: str = cfg_field("", "free text")

    def __post_init__(self):
        self.engine = self.engine or EngineConfig()
        self.workload = self.workload or WorkloadConfig()
        self.cost = self.cost or CostConfig()
        self.runtime = self.runtime or RuntimeConfig()

    def validate(self, path: str = "") -> None:
        if self.dtype not in DTYPES:
            raise KvsimError("dtype", f"got {self.dtype!r}, expected one of {', '.join(DTYPES)}")
        if self.tensor_parallel < 1:
            raise KvsimError("tensor_parallel", f"got {self.tensor_parallel!r}, expected an integer >= 1")
        if self.max_time_s is not None and self.max_time_s <= 0:
            raise KvsimError("max_time_s", f"got {self.max_time_s!r}, expected > 0")

    @property
    def dtype_bytes(self) -> int:
        return DTYPES[self.dtype]

    def to_dict(self) -> dict:
        return to_dict(self)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``engine.block_size=32`` -> (["engine", "block_size"], 32); values parse as YAML."""
    if "=" not in item:
        raise KvsimError("--set", f"expected key=value, got {item!r}")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise KvsimError("--set", f"empty key in {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    data = copy.deepcopy(data)
    for item in overrides or []:
        keys, value = parse_override(item)
        node = data
        for k in keys[:-1]:
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            if not isinstance(nxt, dict):
                raise KvsimError(".".join(keys), f"cannot set inside non-mapping {k!r}")
            node = nxt
        node[keys[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise KvsimError("scenario", f"cannot read {path}: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise KvsimError("scenario", f"{path}:{where} is not valid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise KvsimError("scenario", f"{path} must hold a mapping of fields, got {type(data).__name__}")
    return data


def load_scenario(source: str | Path | dict, overrides: list[str] | None = None) -> Scenario:
    """Read and validate a scenario from a YAML path or a dict, applying ``key=value`` overrides."""
    data = source if isinstance(source, dict) else read_yaml(source)
    data = apply_overrides(data, overrides)
    sc = from_dict(Scenario, data)
    sc.engine.validate("engine")
    sc.workload.validate("workload")
    sc.cost.validate("cost")
    sc.runtime.validate("runtime")
    return sc
