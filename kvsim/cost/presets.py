"""Named cost presets: roofline overheads of a serving stack, taken from published measurements.

A preset changes only the host-side (CPU) overheads of :class:`~kvsim.cost.roofline.RooflineParams`;
GPU efficiencies stay at their defaults, and the default roofline (no preset) is unchanged.
Nothing here is fitted to the PagedAttention figures that ``kvsim paper`` reproduces: the numbers
come from two public measurements, cited below, and are combined by the arithmetic in this module.

``paper-a100-2023`` — the paper's setting: one A100, the vLLM Python engine of 2023.

1. **Per-step and per-sequence engine overhead** — Vidur (Agrawal et al., MLSys 2024), file
   ``data/profiling/a100/cpu_overheads.csv`` of github.com/microsoft/vidur: CPU time per engine
   step on an A100, measured in Sarathi-Serve (which "started as a fork of the vLLM project"; its
   package version 0.1.7 is vLLM's of Sept. 2023; the profiler runs it with
   ``scheduler_type="vllm"``) for Llama-2-7B at tensor parallelism 1 and batch sizes 8-64. Vidur's own simulator adds the medians of four phases per step: ``schedule``,
   ``sampler_e2e``, ``prepare_inputs_e2e`` and ``process_model_outputs``; they are
   :data:`VIDUR_A100_MS` below. A least-squares line through their sums gives
   ``1.20 ms + 0.100 ms x batch``. The 7B rows are used because they cover batches 8-64 and
   the smallest model mixes the least GPU time into the ``_e2e`` phases.
2. **Per-request sampling loop** — the vLLM of the paper (v0.1, June 2023) sampled one request
   at a time (a maintainer says so in vllm-project/vllm issue #249, June 2023) until the
   vectorised sampler (PR #820, measured there; merged as PR #1048, Sept. 2023). PR #820 reports, on one A100-80GB with
   Llama-2-13B and 1,000 ShareGPT prompts (``benchmark_throughput.py``), 3.70 req/s and
   1,771.58 tokens/s before and 4.77 req/s after: the loop cost 1/3.70 - 1/4.77 = 60.6 ms per
   request. A request samples once per output token; its tokens (1,771.58 / 3.70 = 479, prompt
   plus output) are split as the paper's ShareGPT means (161 prompt / 338 output tokens), so
   324 output tokens, hence **0.187 ms per sequence per step** on top of (1).

Not included: the HTTP API server and detokenisation outside the engine step, Python garbage
collection pauses, and anything of the GPU kernels (the paper's paged attention kernel cost is
Fig. 18a, read from the project's own kernel benchmark instead).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from kvsim.errors import KvsimError
from kvsim.workload.lengths import SHAREGPT

# batch -> medians in ms of (schedule, sampler_e2e, prepare_inputs_e2e, process_model_outputs);
# Vidur data/profiling/a100/cpu_overheads.csv, model meta-llama/Llama-2-7b-hf, tensor_parallel_degree 1.
VIDUR_A100_MS = {
    8: (0.1651, 0.8878, 0.2932, 0.6244),
    16: (0.2783, 0.9446, 0.4391, 1.1354),
    24: (0.3817, 0.9560, 0.5363, 1.6339),
    32: (0.5798, 1.1264, 0.6710, 2.2457),
    40: (0.6169, 1.0757, 0.7922, 2.6512),
    48: (0.7416, 1.1630, 0.9148, 3.2317),
    56: (0.8395, 1.2473, 1.0398, 3.6074),
    64: (0.9522, 1.3703, 1.1630, 4.1083),
}

# vllm-project/vllm PR #820: A100-80GB, Llama-2-13B, 1,000 ShareGPT prompts, per-request vs vectorised sampler.
PR820_REQ_S_LOOP, PR820_REQ_S_VECTORISED, PR820_TOK_S_LOOP = 3.70, 4.77, 1771.58


def line_fit(points: dict[int, float]) -> tuple[float, float]:
    """Least-squares ``(intercept, slope)`` of ``y = intercept + slope * x`` through ``{x: y}``."""
    n = len(points)
    if n < 2:
        raise ValueError("a line needs at least two points")
    mx = sum(points) / n
    my = sum(points.values()) / n
    sxx = sum((x - mx) ** 2 for x in points)
    sxy = sum((x - mx) * (y - my) for x, y in points.items())
    slope = sxy / sxx
    return my - slope * mx, slope


def vidur_step_overheads_s() -> tuple[float, float]:
    """(per-step, per-sequence) engine overhead in seconds from :data:`VIDUR_A100_MS`."""
    b, m = line_fit({batch: sum(ms) for batch, ms in VIDUR_A100_MS.items()})
    return b / 1e3, m / 1e3


def sampler_loop_per_seq_s() -> float:
    """Seconds per sequence per step of vLLM's per-request sampling loop (PR #820, see module doc)."""
    per_request_s = 1.0 / PR820_REQ_S_LOOP - 1.0 / PR820_REQ_S_VECTORISED
    tokens = PR820_TOK_S_LOOP / PR820_REQ_S_LOOP
    out_share = SHAREGPT.paper_mean_output_tokens / (SHAREGPT.paper_mean_prompt_tokens
                                                     + SHAREGPT.paper_mean_output_tokens)
    return per_request_s / (tokens * out_share)


@dataclass(frozen=True)
class CostPreset:
    name: str
    summary: str
    sources: tuple[str, ...]
    roofline: dict = field(default_factory=dict)      # RooflineParams field -> value

    def overrides(self) -> list[str]:
        """``--set``-style overrides that apply the preset to a scenario."""
        return ["cost.model=roofline"] + [f"cost.roofline.{k}={v!r}" for k, v in self.roofline.items()]

    def describe(self) -> str:
        vals = ", ".join(f"{k} = {v * 1e3:.3f} ms" for k, v in self.roofline.items())
        return f"`{self.name}`: {self.summary} ({vals}); sources: {'; '.join(self.sources)}"


def _paper_a100_2023() -> CostPreset:
    step, per_seq = vidur_step_overheads_s()
    return CostPreset(
        "paper-a100-2023",
        "A100 with the 2023 vLLM Python engine: measured per-step engine overhead plus the "
        "per-request sampling loop of the paper's vLLM; GPU efficiencies as the default roofline",
        ("Vidur (MLSys 2024) data/profiling/a100/cpu_overheads.csv, Llama-2-7B tp=1, medians of "
         "schedule + sampler_e2e + prepare_inputs_e2e + process_model_outputs, batch 8-64",
         "vllm-project/vllm PR #820 (A100-80GB, Llama-2-13B, ShareGPT: 3.70 -> 4.77 req/s with a "
         "vectorised sampler)"),
        {"step_overhead_s": round(step, 6), "per_seq_overhead_s": round(per_seq + sampler_loop_per_seq_s(), 6)})


PRESETS = {p.name: p for p in (_paper_a100_2023(),)}


def get_preset(name: str | None) -> CostPreset | None:
    """The preset called ``name`` (None for none); unknown -> KvsimError naming the known ones."""
    if name in (None, "", "none", "roofline"):
        return None
    if name not in PRESETS:
        raise KvsimError("--preset", f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    return PRESETS[name]
