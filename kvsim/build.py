"""Turn a validated Scenario into the objects a run needs: model, GPU, KV budget, KV manager, cost model."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from kvsim.catalogue import GPUSpec, ModelSpec, get_gpu, get_model
from kvsim.config import GiB, Scenario
from kvsim.core.kv import KVManager
from kvsim.core.kv_contiguous import ContiguousKV
from kvsim.core.kv_groups import KVGroupLayout
from kvsim.core.kv_paged import PagedKV
from kvsim.core.kv_paged_v1 import PagedKVV1
from kvsim.core.kv_window import WindowedPagedKV
from kvsim.core.kv_window_v1 import WindowedPagedKVV1
from kvsim.core.request import RequestSpec
from kvsim.core.scheduler import Scheduler, SchedulerConfig
from kvsim.core.scheduler_v1 import SchedulerV1
from kvsim.cost import CostModel, RooflineCostModel
from kvsim.errors import KvsimError
from kvsim.limits import MAX_BLOCKS
from kvsim.window_setup import check_window_requests, check_window_scenario, window_budget
from kvsim.memory import KVBudget, kv_budget
from kvsim.workload import build_workload


@dataclass
class RunSetup:
    scenario: Scenario
    model: ModelSpec
    gpu: GPUSpec
    budget: KVBudget
    max_model_len: int
    requests: list[RequestSpec]
    cost: CostModel | None          # None for the real engine, which measures time

    @property
    def kv_bytes_per_token(self) -> int:
        return self.model.kv_bytes_per_token(self.scenario.dtype_bytes, self.scenario.tensor_parallel)

    @property
    def kv_layout(self) -> KVGroupLayout:
        """The model's KV-cache groups (one full-attention group for a model without windows)."""
        return KVGroupLayout.from_windows(self.model.layer_windows())

    def make_kv(self) -> KVManager:
        e = self.scenario.engine
        if self.model.sliding_window:   # paged only (checked by check_window_scenario)
            if e.policy == "v1":
                return WindowedPagedKVV1(self.kv_layout, self.budget.num_gpu_blocks, e.block_size)
            return WindowedPagedKV(self.kv_layout, self.budget.num_gpu_blocks, e.block_size, e.watermark)
        if e.policy == "v1":         # paged only (validated); no swap pool, no watermark
            return PagedKVV1(self.budget.num_gpu_blocks, e.block_size, e.enable_prefix_caching)
        if e.allocator == "paged":
            return PagedKV(self.budget.num_gpu_blocks, e.block_size, self.budget.num_cpu_blocks,
                           e.watermark, e.enable_prefix_caching)
        capacity = self.budget.kv_cache_bytes // self.kv_bytes_per_token
        cpu = self.budget.num_cpu_blocks * e.block_size
        return ContiguousKV(capacity, e.allocator.removeprefix("orca_"), self.max_model_len,
                            e.placement, cpu, block_size=e.block_size)

    def make_scheduler(self, kv, rng: np.random.Generator) -> Scheduler:
        e = self.scenario.engine
        cfg = SchedulerConfig(max_num_seqs=e.max_num_seqs, max_num_batched_tokens=e.max_num_batched_tokens,
                              max_model_len=self.max_model_len, policy=e.scheduler,
                              preemption_mode=e.preemption_mode, beam_keep_prob=e.beam_keep_prob,
                              beam_decay=e.beam_decay)
        return (SchedulerV1 if e.policy == "v1" else Scheduler)(kv, cfg, rng)


def check_block_counts(sc: Scenario, budget: KVBudget) -> None:
    """The block counts memory gives must stay under MAX_BLOCKS (the block manager keeps per-block lists)."""
    e = sc.engine
    if e.num_gpu_blocks is None and budget.num_gpu_blocks > MAX_BLOCKS:
        raise KvsimError("engine.block_size", f"got {e.block_size}: the KV cache holds {budget.num_gpu_blocks} "
                                              f"blocks of that size, more than the limit {MAX_BLOCKS}; use a larger "
                                              f"block_size or set engine.num_gpu_blocks")
    if e.num_cpu_blocks is None and budget.num_cpu_blocks > MAX_BLOCKS:
        raise KvsimError("engine.swap_space_gib", f"got {e.swap_space_gib:g}: {budget.num_cpu_blocks} swap blocks, "
                                                  f"more than the limit {MAX_BLOCKS}; lower swap_space_gib")


# GPUs with FP8 tensor cores (Hopper, Ada Lovelace); Ampere (A100, A10G) has none
FP8_TENSOR_CORES = ("H100-80GB", "H200-141GB", "L4")


def dtype_note(sc: Scenario) -> str | None:
    """A one-line note for ``dtype: fp8`` on a GPU without FP8 tensor cores: it is accepted (vLLM runs FP8
    weights and KV cache on Ampere), and the note says what the model then assumes."""
    if sc.dtype != "fp8":
        return None
    gpu = get_gpu(sc.gpu)
    if gpu.name in FP8_TENSOR_CORES:
        return None
    return (f"note: dtype fp8 on {gpu.name}, which has no FP8 tensor cores: weights and KV are stored in 1 byte "
            "(as vLLM's weight-only FP8 and fp8 KV cache on Ampere) and matrix products are priced at the fp16 "
            "rate")


def setup_run(sc: Scenario, *, simulator: bool = True) -> RunSetup:
    """Resolve catalogue entries, size the KV cache, build the workload and (for the simulator,
    ``simulator=True``) the cost model; the real engine measures time and gets ``cost=None``."""
    if not isinstance(sc, Scenario):
        raise KvsimError("scenario", f"expected a Scenario (kvsim.load_scenario), got {type(sc).__name__}")
    sc.check()
    model = get_model(sc.model)
    gpu = get_gpu(sc.gpu)
    note = dtype_note(sc)
    if note:
        from kvsim.workload.config import note_once
        note_once(note)
    e = sc.engine
    max_len = e.max_model_len or model.max_seq_len
    if max_len > model.max_seq_len:
        raise KvsimError("engine.max_model_len",
                         f"got {max_len}, but {model.name} supports at most {model.max_seq_len} tokens")
    if e.scheduler != "chunked" and e.max_num_batched_tokens < 1:
        raise KvsimError("engine.max_num_batched_tokens", "must be >= 1")
    try:
        budget = kv_budget(model, gpu, block_size_tokens=e.block_size, tensor_parallel=sc.tensor_parallel,
                           gpu_memory_utilization=e.gpu_memory_utilization, dtype_bytes=sc.dtype_bytes,
                           max_num_batched_tokens=e.max_num_batched_tokens, max_num_seqs=e.max_num_seqs,
                           swap_space_bytes=int(e.swap_space_gib * GiB))
    except KvsimError as err:            # name the scenario field (memory.py speaks of bare arguments)
        engine_fields = ("block_size", "max_num_seqs", "max_num_batched_tokens", "gpu_memory_utilization")
        if err.field in engine_fields:
            raise KvsimError(f"engine.{err.field}", err.message) from None
        raise
    check_block_counts(sc, budget)
    if e.num_gpu_blocks is not None or e.num_cpu_blocks is not None:
        gpu_blocks = e.num_gpu_blocks if e.num_gpu_blocks is not None else budget.num_gpu_blocks
        budget = dataclasses.replace(
            budget, num_gpu_blocks=gpu_blocks, kv_cache_bytes=gpu_blocks * budget.block_bytes,
            kv_capacity_tokens=gpu_blocks * e.block_size,
            num_cpu_blocks=e.num_cpu_blocks if e.num_cpu_blocks is not None else budget.num_cpu_blocks)
    if e.policy == "v1":                 # V1 has no swap: no CPU block pool
        budget = dataclasses.replace(budget, num_cpu_blocks=0)
    if model.sliding_window:
        check_window_scenario(sc, model)
        budget = window_budget(sc, model, budget)
        check_block_counts(sc, budget)
    rng = np.random.default_rng([sc.seed, 1])
    requests = build_workload(sc.workload, max_len_tokens=max_len, rng=rng)
    if e.policy == "v1":
        beam = next((r for r in requests if r.beam_width > 1), None)
        if beam is not None:
            raise KvsimError("workload.beam_width", f"request {beam.request_id} asks for beam width "
                                                    f"{beam.beam_width}, but policy v1 has no beam search; "
                                                    f"use engine.policy v0")
    if model.sliding_window:
        check_window_requests(requests, e.policy)
    cost = make_cost(sc, model, gpu) if simulator else None
    for note in (partial_note(sc, cost), serving_note(sc, cost), sampling_note(sc, cost, requests)):
        if note:
            from kvsim.workload.config import note_once
            note_once(note)
    return RunSetup(sc, model, gpu, budget, max_len, requests, cost)


def partial_note(sc: Scenario, cost) -> str | None:
    """A one-line note for a profile whose calibration stopped before its end (``meta.partial``), or whose
    serving fit a time limit cut short (``meta.serving_fit_skipped``): both are finished by
    ``kvsim calibrate --resume``."""
    meta = getattr(getattr(cost, "p", None), "meta", None)
    if not isinstance(meta, dict):
        return None
    if meta.get("partial"):
        return (f"note: {sc.cost.profile}: {meta['partial']}; it is priced without them (kvsim calibrate --resume "
                f"{sc.cost.profile} runs them, on the card that measured it)")
    at = meta.get("serving_fit_skipped_at")      # a block size's own fit (kvsim calibrate --serving-block-sizes)
    cut = at.get(str(cost.bs)) if isinstance(at, dict) and str(cost.bs) in at else meta.get("serving_fit_skipped")
    if isinstance(cut, dict) and cut.get("runs"):
        fit = cost.p.decode_serving.get(cost.bs)
        rows = f"; decode steps above {int(fit[0][-1])} rows extrapolate it" if fit is not None else ""
        return (f"note: {sc.cost.profile}: its serving fit skipped {cut['runs']} of {cut.get('of', '?')} engine runs "
                f"({cut.get('why', 'stopped early')}){rows}; kvsim calibrate --resume completes it on the same card")
    return None


def serving_note(sc: Scenario, cost) -> str | None:
    """A one-line note when the profile has serving fits, but none at the scenario's block size: its decode steps
    are then priced from the lock-step step overhead, which the H100 block-size check of 2026-12-06 found 4.1-4.6%
    high against serving runs, and another block size's fit does not carry over (:mod:`kvsim.calibrate.serving_blocks`)."""
    fits = getattr(getattr(cost, "p", None), "decode_serving", None)
    if not fits or cost.bs in fits:
        return None
    return (f"note: {sc.cost.profile} has no serving fit at block size {cost.bs} (it has one at "
            f"{', '.join(map(str, sorted(fits)))}): decode steps are priced from the lock-step step overhead, a few "
            f"percent high; kvsim calibrate --resume {sc.cost.profile} --serving-block-sizes {cost.bs} adds one on "
            "the card that measured it")


def sampling_note(sc: Scenario, cost, requests) -> str | None:
    """A one-line note when beam search is priced from a profile without a ``sampling`` table (calibrated
    before its calls were timed): those steps are then priced as greedy ones (a beam step's calls took 0.30 ms
    against greedy's 0.05 ms for Llama-3-8B on the H200, ``kvsim/calibrate/sampling.py``)."""
    if cost is None or not hasattr(cost, "prices_sampling") or cost.prices_sampling:
        return None
    if not any(r.beam_width > 1 for r in requests):
        return None
    return (f"note: {sc.cost.profile} has no sampling table (calibrated before beam search's sampling calls were "
            "timed): beam steps are priced as greedy ones, a little fast; recalibrate to price them")


def make_cost(sc: Scenario, model: ModelSpec, gpu: GPUSpec, *, swaps_in_step: bool = False) -> CostModel:
    """The scenario's cost model. The simulator charges swaps on its host-link resource, so by default
    step times leave them out (``swaps_in_step``)."""
    e = sc.engine
    params = sc.cost.roofline
    if not swaps_in_step:
        params = dataclasses.replace(params, include_swaps_in_step=False)
    if sc.cost.model == "calibrated":
        from kvsim.cost.calibrated import CalibratedCostModel, load_profile
        if sc.tensor_parallel != 1:
            raise KvsimError("tensor_parallel", "calibrated profiles are measured on one GPU; use tensor_parallel: 1")
        from kvsim.graph_sizes import engine_graph_sizes
        from kvsim.textio import read_json
        read_json(sc.cost.profile, "cost.profile", "profile JSON file (kvsim calibrate)")   # readable, JSON
        try:      # priced at the CUDA-graph sizes the engine (kvsim.engine.engine) pads its steps to
            cost: CostModel = CalibratedCostModel(
                load_profile(sc.cost.profile), model_name=model.name, dtype=sc.dtype, block_size_tokens=e.block_size,
                include_swaps_in_step=swaps_in_step, gpu=None if sc.cost.profile_other_gpu else gpu.name,
                stepped_decode=sc.workload.beam_width > 1, **engine_graph_sizes(sc))   # beams: never overlapped
        except KvsimError as err:            # the cost module says "profile"; the scenario field is cost.profile
            if err.field == "profile":
                raise KvsimError("cost.profile", err.message) from None
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
            raise KvsimError("cost.profile", f"{sc.cost.profile}: not a kvsim calibrate profile "
                                             f"({type(err).__name__}: {err})".splitlines()[0]) from None
    else:
        cost = RooflineCostModel(model, gpu, sc.tensor_parallel, sc.dtype_bytes, params,
                                 block_size_tokens=e.block_size)
    return cost
