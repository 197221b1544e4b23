"""Scenario configuration: one YAML file = one simulated (or engine) run.

``load_scenario(path_or_dict, overrides)`` reads YAML, applies ``--set
key=value`` overrides (dotted keys, YAML-typed values), validates every field
and returns a :class:`Scenario`. Any problem is a :class:`KvsimError` naming the
field.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kvsim import limits as L
from kvsim.configtools import cfg_field, check_fields, from_dict, to_dict
from kvsim.cost.roofline import RooflineParams
from kvsim.errors import KvsimError
# reading and overriding the document, re-exported (callers import them from here)
from kvsim.overrides import (apply_overrides, map_infinite_rate, normalize_overrides,  # noqa: F401
                             parse_override, read_yaml)
from kvsim.workload.config import WorkloadConfig

ALLOCATORS = ("paged", "orca_max", "orca_pow2", "orca_oracle")
PLACEMENTS = ("first_fit", "buddy")
SCHEDULERS = ("vllm", "chunked", "static")
PREEMPTION = ("auto", "swap", "recompute")
POLICIES = ("v0", "v1")
DTYPES = {"fp16": 2, "bf16": 2, "fp32": 4, "fp8": 1}
GiB = 1 << 30


@dataclass
class EngineConfig:
    allocator: str = cfg_field("paged", "KV allocation: paged (vLLM) | orca_max | orca_pow2 | orca_oracle (contiguous)")
    placement: str = cfg_field("first_fit", "contiguous allocators: address-space placement, first_fit | buddy")
    block_size: int = cfg_field(16, "paged: tokens per KV block (>= 1)", lo=1, hi=L.MAX_BLOCK_SIZE)
    max_num_seqs: int = cfg_field(256, "most sequences in one iteration's batch", lo=1, hi=L.MAX_SEQS)
    max_num_batched_tokens: int = cfg_field(2560, "most tokens (prefill + decode) in one iteration", lo=1,
                                             hi=L.MAX_TOKENS)
    max_model_len: int | None = cfg_field(None, "longest prompt+output in tokens (default: the model's)", lo=2,
                                           hi=L.MAX_TOKENS)
    gpu_memory_utilization: float = cfg_field(0.9, "fraction of GPU memory kvsim may use (weights + activations + KV)",
                                              lo=0, hi=1, lo_open=True)
    swap_space_gib: float = cfg_field(4.0, "CPU swap space per GPU in GiB (0 disables swap; policy v1 has no swap)", lo=0, hi=L.MAX_SWAP_GIB)
    preemption_mode: str = cfg_field("auto", "auto (swap for multi-sequence groups, recompute otherwise; policy v1: recompute) | swap | recompute (v1: auto or recompute)")
    scheduler: str = cfg_field("vllm", "vllm (prefill-prioritised) | chunked (chunked prefill) | static (request-level batching); policy v1 has one scheduler (vllm and chunked both mean it)")
    policy: str = cfg_field("v0", "engine generation: v0 (the paper's vLLM: swap or recompute, copy-on-write for n and "
                                  "beams) | v1 (vLLM V1: recompute-only preemption, always-chunked prefill with decodes "
                                  "first, n as child requests sharing the prompt via the prefix cache, no beam search, "
                                  "no watermark; paged only)")
    enable_prefix_caching: bool = cfg_field(False, "paged: share full prompt blocks by content hash")
    watermark: float = cfg_field(0.01, "paged, policy v0: fraction of blocks kept free when admitting (v1 keeps none)", lo=0, hi=1, hi_open=True)
    beam_keep_prob: float = cfg_field(0.5, "beam model: probability a beam keeps its own history each step", lo=0, hi=1)
    beam_decay: float = cfg_field(0.5, "beam model: weight decay over ranks for re-parented beams", lo=0, hi=1,
                                   lo_open=True)
    num_gpu_blocks: int | None = cfg_field(None, "override the KV block count computed from memory (tests, validation)",
                                            lo=1, hi=L.MAX_BLOCKS)
    num_cpu_blocks: int | None = cfg_field(None, "override the swap block count computed from swap_space_gib", lo=0,
                                            hi=L.MAX_BLOCKS)

    def validate(self, path: str = "engine") -> None:
        check_fields(self, path, recurse=False)

        def bad(f, msg):
            raise KvsimError(f"{path}.{f}", msg)
        for name, allowed in (("allocator", ALLOCATORS), ("placement", PLACEMENTS),
                              ("scheduler", SCHEDULERS), ("preemption_mode", PREEMPTION), ("policy", POLICIES)):
            v = getattr(self, name)
            if v not in allowed:
                bad(name, f"got {v!r}, expected one of {', '.join(allowed)}")
        if self.policy == "v1":
            self._validate_v1(bad)
        contiguous = self.allocator != "paged"
        if self.enable_prefix_caching and contiguous:      # (asked for, and it would silently do nothing)
            bad("enable_prefix_caching", f"true needs allocator paged; the contiguous allocator "
                                         f"{self.allocator!r} shares no KV between requests")
        if self.placement != "first_fit" and not contiguous:     # (the default stays: saved scenarios list it)
            bad("placement", f"{self.placement!r} places contiguous allocations (orca_*); allocator paged has "
                             f"no placement")
        if self.scheduler == "chunked" and self.max_num_batched_tokens < self.max_num_seqs:
            bad("max_num_batched_tokens", f"chunked prefill schedules every running sequence's decode token "
                f"first, so it needs max_num_batched_tokens >= max_num_seqs ({self.max_num_seqs}), "
                f"got {self.max_num_batched_tokens}")
        if self.preemption_mode == "swap" and self.swap_space_gib == 0 and not self.num_cpu_blocks:
            bad("preemption_mode", "swap needs swap_space_gib > 0")

    def _validate_v1(self, bad) -> None:
        """What vLLM V1 does not have, refused with the field that asks for it."""
        if self.preemption_mode == "swap":
            bad("preemption_mode", "got 'swap', but policy v1 preempts by recompute only; use auto or recompute "
                                   "(or policy v0)")
        if self.allocator != "paged":
            bad("allocator", f"got {self.allocator!r}, but policy v1 is paged only; use paged (or policy v0)")
        if self.scheduler == "static":
            bad("scheduler", "got 'static', but policy v1 always runs chunked prefill; use vllm or chunked "
                             "(both mean the V1 scheduler) or policy v0")
        if self.max_num_batched_tokens < self.max_num_seqs:
            bad("max_num_batched_tokens", f"policy v1 schedules every running request's decode token first, so "
                f"it needs max_num_batched_tokens >= max_num_seqs ({self.max_num_seqs}), "
                f"got {self.max_num_batched_tokens}")


@dataclass
class CostConfig:
    model: str = cfg_field("roofline", "cost model: roofline (analytical, from the catalogue) | calibrated (a measured profile)")
    profile: str | None = cfg_field(None, "calibrated: path of the profile JSON written by `kvsim calibrate`")
    profile_other_gpu: bool = cfg_field(
        False, "calibrated: allow a profile measured on another card than the scenario's gpu (its step times "
               "beside the scenario GPU's memory: a what-if such as kvsim paper's H200 times with the paper's "
               "A100-40GB memory); off: such a profile is refused")
    roofline: RooflineParams = cfg_field(None, "roofline efficiency factors and overheads")

    def __post_init__(self):
        if self.roofline is None:
            self.roofline = RooflineParams()

    def validate(self, path: str = "cost") -> None:
        check_fields(self, path)
        if self.model not in ("roofline", "calibrated"):
            raise KvsimError(f"{path}.model", f"got {self.model!r}, expected roofline or calibrated")
        if self.model == "calibrated" and not self.profile:
            raise KvsimError(f"{path}.profile", "the calibrated cost model needs a profile path")
        if self.model != "calibrated" and self.profile:        # (asked for, and it would silently do nothing)
            raise KvsimError(f"{path}.profile", f"{self.profile} is given with cost.model {self.model!r}, which "
                                                f"does not read it; set cost.model: calibrated (or --profile)")
        self.roofline.validate(f"{path}.roofline")


@dataclass
class RuntimeConfig:
    """Settings of the real engine (``kvsim engine``). The simulator reads two of them, ``async_scheduling`` and
    ``async_prompt_steps``: which prompt steps the engine prepares while the step before flies (kvsim/overlap.py)."""
    device: str = cfg_field("auto", "auto (cuda if available) | cuda | cpu")
    attention_backend: str = cfg_field("auto", "auto (triton on cuda, torch on cpu) | triton | torch")
    weights: str = cfg_field("dummy", "dummy (random weights) or a local Hugging Face checkpoint directory")
    sampling: str = cfg_field("greedy", "greedy | random (temperature / top_p); beam search comes from workload.beam_width")
    temperature: float = cfg_field(1.0, "random sampling temperature (> 0)", lo=0, hi=1e6, lo_open=True)
    top_p: float = cfg_field(1.0, "random sampling nucleus mass (0 < top_p <= 1)", lo=0, hi=1, lo_open=True)
    cuda_graphs: bool = cfg_field(True, "capture decode steps in CUDA graphs for common batch sizes")
    cuda_graph_max_batch: int = cfg_field(256, "largest decode batch captured in a CUDA graph (larger ones run eagerly)",
                                           lo=1, hi=L.MAX_SEQS)
    cuda_graph_prefill_max_tokens: int = cfg_field(
        2048, "largest prefill step (tokens) captured in a CUDA graph; 0 = prefill always eager", lo=0,
        hi=L.MAX_TOKENS)
    cuda_graph_prefill_ladder: str = cfg_field(
        "v2", "token counts the prefill/mixed graphs capture: v2 (every 16 to 256, 32 to 512, 64 beyond) or v1 "
              "(16 to 128, 32 to 256, 64 to 512, 128 to 1024, 256 beyond: the engine before v2); a step runs as the "
              "graph of the next size, and the simulator prices it there")
    cuda_graph_prefill_route: bool = cfg_field(
        True, "time the captured prefill/mixed graphs at start-up and run a step padded to a size that a larger "
              "captured size replays >= 5% faster (confirmed by re-timing) as that larger graph (the GEMM library's "
              "kernel choice makes some token counts slow; the engine records the sizes it skipped, and the simulator "
              "prices a step where the profile's calibration routed it; false: every size replays its own graph)")
    cuda_graph_prefill_skip: list[int] = cfg_field(
        [], "prefill/mixed graph sizes never replayed: a step padded to one runs as the next larger captured size "
            "(besides the routed ones; a replay of an engine run sets the sizes that run skipped)", lo=1,
        hi=L.MAX_TOKENS)
    unified_mixed_steps: bool = cfg_field(
        True, "run mixed prefill+decode steps as one varlen attention launch, replayed from the prefill CUDA "
              "graphs by token count (false: two launches, eager — the engine before this option)")
    mixed_decode_kernel: bool = cfg_field(
        True, "in mixed (and prefill) steps, sequences with one new token (decode rows) are attended by the decode "
              "kernel beside the prefill kernel's launch (false: inside the prefill kernel as 64-row query tiles "
              "— the engine before this option)")
    mixed_decode_split: bool = cfg_field(
        False, "with mixed_decode_kernel, a mixed step's few long decode rows are cut into partitions (split-KV) "
               "while they are fewer than half the kernel's persistent programs, other steps left whole "
               "(kvsim/kernels/varlen_split.py; measured 1.04-1.30x on 8-24 long rows, neutral elsewhere, on an "
               "H100); false: every row walked whole, the engine the committed profiles were measured with")
    fused_layer_ops: bool = cfg_field(
        True, "LLaMA family on triton: RMSNorm + residual, RoPE + cache write and SiLU x up as fused kernels "
              "(false: the plain torch ops — the engine before this option)")
    swap_staged: bool = cfg_field(
        True, "swap a preempted group's KV through a staging buffer: one gather (or scatter) over every layer and one "
              "PCIe copy per run of consecutive CPU blocks (false: a copy per layer, K and V, and run of blocks — "
              "the engine before this option; kvsim/engine/swap_staged.py)")
    pad_logits: bool = cfg_field(
        True, "with decode CUDA graphs, the LM head runs on a step's sampled rows padded to the next graph batch "
              "size, the rows the calibration's decode grid timed (false: on exactly the sampled rows, the engine "
              "before 2026-12-07; kvsim/engine/runner.py)")
    async_scheduling: bool = cfg_field(
        True, "overlap the host's scheduling and input preparation of the next step with the GPU's decode step "
              "(kvsim/engine/serve_loop.py; the same decisions as stepping unless a request arrives while a step "
              "is in flight: counted as arrivals_deferred; beam search is always stepped; false: every step "
              "stepped, the engine before 2026-12-06)")
    async_prompt_steps: bool = cfg_field(
        True, "with async_scheduling, steps with prompt tokens (prefill, mixed) are overlapped as decode steps are "
              "(false: only decode-only steps, the engine of 2026-12-06; kvsim/engine/serve_loop.py)")
    warmup: bool = cfg_field(True, "compile and run every kernel variant once before the clock starts (GPU)")
    max_wall_s: float | None = cfg_field(None, "stop the engine after this many wall-clock seconds", lo=0,
                                         hi=L.MAX_SECONDS, lo_open=True)

    def validate(self, path: str = "runtime") -> None:
        check_fields(self, path, recurse=False)
        for name, allowed in (("device", ("auto", "cuda", "cpu")), ("attention_backend", ("auto", "triton", "torch")),
                              ("sampling", ("greedy", "random")), ("cuda_graph_prefill_ladder", ("v1", "v2"))):
            v = getattr(self, name)
            if v not in allowed:
                raise KvsimError(f"{path}.{name}", f"got {v!r}, expected one of {', '.join(allowed)}")


@dataclass
class Scenario:
    name: str = cfg_field("scenario", "a name for the run (used in outputs)")
    model: str = cfg_field("opt-13b", "model from the catalogue (`kvsim models`)")
    gpu: str = cfg_field("a100-40gb", "GPU from the catalogue (`kvsim gpus`)")
    tensor_parallel: int = cfg_field(1, "tensor-parallel degree: GPUs per replica (divides weights and KV)", lo=1,
                                     hi=L.MAX_TP)
    dtype: str = cfg_field("fp16", "weights and KV dtype: fp16 | bf16 | fp32 | fp8")
    engine: EngineConfig = cfg_field(None, "engine settings")
    workload: WorkloadConfig = cfg_field(None, "requests: lengths, arrivals, sampling")
    cost: CostConfig = cfg_field(None, "cost model")
    runtime: RuntimeConfig = cfg_field(None, "real-engine settings (kvsim engine)")
    seed: int = cfg_field(0, "random seed for the workload and the beam model", lo=0, hi=L.MAX_SEED)
    max_time_s: float | None = cfg_field(None, "stop the simulation at this simulated time", lo=0, hi=L.MAX_SECONDS,
                                         lo_open=True)
    description: str = cfg_field("", "free text")

    def __post_init__(self):
        self.engine = self.engine or EngineConfig()
        self.workload = self.workload or WorkloadConfig()
        self.cost = self.cost or CostConfig()
        self.runtime = self.runtime or RuntimeConfig()

    def validate(self, path: str = "") -> None:
        check_fields(self, "", recurse=False)
        if self.engine.policy == "v1" and self.workload.beam_width > 1:
            raise KvsimError("workload.beam_width", f"got {self.workload.beam_width}, but policy v1 has no beam "
                                                    f"search (vLLM V1 dropped it from the engine); use 1 or "
                                                    f"engine.policy v0")
        if self.dtype not in DTYPES:
            raise KvsimError("dtype", f"got {self.dtype!r}, expected one of {', '.join(DTYPES)}")
        check_name(self.name)

    @property
    def dtype_bytes(self) -> int:
        return DTYPES[self.dtype]

    def check(self) -> None:
        """Every check of :func:`load_scenario`, for a Scenario built or changed in Python."""
        for part, name in ((self.engine, "engine"), (self.workload, "workload"), (self.cost, "cost"),
                           (self.runtime, "runtime")):
            if not hasattr(part, "validate"):
                raise KvsimError(name, f"expected a mapping of fields, got {part!r}")
            part.validate(name)
        self.validate()

    def to_dict(self) -> dict:
        return to_dict(self)


def check_name(name: str) -> None:
    """A scenario name: printable text of at most MAX_NAME characters (outputs use a sanitised copy)."""
    if not name.strip():
        raise KvsimError("name", "is empty; expected a short printable name")
    if len(name) > L.MAX_NAME:
        raise KvsimError("name", f"has {len(name)} characters; expected at most {L.MAX_NAME}")
    if any(not c.isprintable() for c in name):
        raise KvsimError("name", f"{name!r} holds a control character; expected printable text")


def check_key(key: str, field: str = "--set") -> None:
    """KvsimError unless dotted ``key`` names a scenario field (with a did-you-mean)."""
    import dataclasses
    import difflib
    import typing
    cls = Scenario
    parts = key.split(".")
    for i, k in enumerate(parts):
        names = [f.name for f in dataclasses.fields(cls)]
        if k not in names:
            close = difflib.get_close_matches(k, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (allowed: {', '.join(names)})"
            raise KvsimError(field, f"{key!r}: unknown field {'.'.join(parts[:i + 1])!r}{hint}")
        typ = typing.get_type_hints(cls)[k]
        if i + 1 < len(parts):
            if not dataclasses.is_dataclass(typ):
                raise KvsimError(field, f"{key!r}: {'.'.join(parts[:i + 1])!r} has no fields inside")
            cls = typ


def load_scenario(source: str | Path | dict, overrides: list[str] | dict | str | None = None) -> Scenario:
    """Read and validate a scenario from a YAML path or a dict, applying overrides
    (``["engine.block_size=32"]``, ``{"engine.block_size": 32}`` or one ``"key=value"`` string)."""
    if not isinstance(source, (str, Path, dict)):
        raise KvsimError("scenario", f"expected a YAML path or a mapping, got {type(source).__name__}")
    overrides = normalize_overrides(overrides)
    data = source if isinstance(source, dict) else read_yaml(source)
    data = apply_overrides(data, overrides)
    data, rate_inf = map_infinite_rate(data)
    sc = from_dict(Scenario, data)
    if rate_inf:
        object.__setattr__(sc.workload, "_rate_inf", True)
    sc.check()
    return sc
