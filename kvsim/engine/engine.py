"""RealEngine: replays a scenario's workload on a real model with the kvsim.core scheduler.

Requests enter the scheduler when their arrival time passes on the wall clock
(with ``workload.max_concurrency``, through the simulator's closed-loop gate,
:mod:`kvsim.workload.closed_loop`: a request waits for a slot, and is sent when
one finishes).
Each iteration: ``plan = scheduler.schedule(now)`` (CPU), build the batch,
run swaps / copies / the forward pass / sampling (GPU), then
``scheduler.complete_step(plan, now, beam_parents)``. The records have the
simulator's schema plus ``cpu_s`` (scheduling, input preparation and the
bookkeeping after the step) and ``gpu_s`` (device work and sampling until
synchronised) per iteration, and the host part's thread CPU time and core
(``host_thread_s``, ``host_cpu``: :mod:`kvsim.engine.host_probe`); ``duration_s`` covers both, so iterations tile
the wall clock except for idle waits.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from kvsim.build import RunSetup, setup_run
from kvsim.config import Scenario
from kvsim.engine.compile_log import CompileLog
from kvsim.engine.kv_cache import KVCache
from kvsim.engine.kv_sizing import measure_blocks, profile_shape  # noqa: F401  (profile_shape: tests import it here)
from kvsim.engine.runner import ModelRunner
from kvsim.errors import KvsimError
from kvsim.records import request_frame, run_summary

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass
class EngineResult:
    setup: RunSetup
    requests: pd.DataFrame
    iterations: pd.DataFrame
    summary: dict
    info: dict
    outputs: dict[int, list[list[int]]]     # request id -> tokens generated per sequence


def _device(sc: Scenario) -> torch.device:
    want = sc.runtime.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda" and not torch.cuda.is_available():
        raise KvsimError("runtime.device", "cuda requested but no CUDA GPU is visible")
    return torch.device(want)


def _backend(sc: Scenario, device: torch.device) -> str:
    be = sc.runtime.attention_backend
    return ("triton" if device.type == "cuda" else "torch") if be == "auto" else be


def check_prompt_tokens(prompt_tokens: dict, requests, vocab_size: int, prefix_caching: bool) -> dict[int, list[int]]:
    """``RealEngine(prompt_tokens=...)``: request id -> that request's real prompt token ids (a request not in it
    gets synthetic ids). Each must be a workload request's id, its ids exactly ``prompt_len`` ints in
    ``[0, vocab_size)``; refused with prefix caching, whose block hashes are of the synthetic ids."""
    if prefix_caching:
        raise KvsimError("prompt_tokens", "not with engine.enable_prefix_caching (its block hashes are of "
                                          "the synthetic prompt ids)")
    lens = {r.request_id: r.prompt_len for r in requests}
    out = {}
    for rid, ids in prompt_tokens.items():
        if rid not in lens:
            raise KvsimError("prompt_tokens", f"request id {rid!r} is not in the workload (ids 0..{len(lens) - 1})")
        try:
            ids = [int(t) for t in ids]
        except (TypeError, ValueError):
            raise KvsimError("prompt_tokens", f"request {rid}: {ids!r:.60} is not a list of integer token ids") from None
        if len(ids) != lens[rid]:
            raise KvsimError("prompt_tokens", f"request {rid}: {len(ids)} ids but its prompt_len is {lens[rid]}")
        bad = [t for t in ids if not 0 <= t < vocab_size]
        if bad:
            raise KvsimError("prompt_tokens", f"request {rid}: id {bad[0]} is outside the vocabulary [0, {vocab_size})")
        out[rid] = ids
    return out


class RealEngine:
    def __init__(self, scenario: Scenario, *, model=None, tp=None, prompt_tokens: dict | None = None, parts=None):
        """``tp`` (a :class:`kvsim.engine.tp.TPGroup`): this process is one rank of a tensor-parallel run
        (CPU + gloo only, :mod:`kvsim.engine.tp_ranks`); rank 0 calls :meth:`run`, the others :meth:`serve`.
        ``prompt_tokens``: real prompt token ids by request id (:func:`check_prompt_tokens`; Python API only).
        ``parts`` (a :class:`kvsim.engine.reuse.EngineParts`): take the KV cache and CUDA graphs of an earlier run
        with the same settings, and skip a warm-up already run (``kvsim calibrate``'s short runs)."""
        from kvsim.engine.models import build_model
        self.sc = sc = scenario
        self.setup = setup_run(sc, simulator=False)
        if sc.dtype not in DTYPES:
            raise KvsimError("dtype", f"the engine supports {', '.join(DTYPES)}, got {sc.dtype!r}")
        self.device = _device(sc)
        self.tp = tp if sc.tensor_parallel != 1 else None
        if sc.tensor_parallel != 1 and (self.device.type != "cpu" or tp is None or tp.world_size != sc.tensor_parallel):
            raise KvsimError("tensor_parallel", "the engine runs on one GPU (tensor_parallel must be 1); "
                             "tensor_parallel > 1 runs on CPU only (runtime.device: cpu, gloo ranks)")
        self.backend = _backend(sc, self.device)
        if self.backend == "triton":      # (a module switch the kernels read at launch and capture: set per run)
            from kvsim.kernels import varlen_decode
            varlen_decode.SPLIT = bool(sc.runtime.mixed_decode_split)
        dtype = DTYPES[sc.dtype]
        t0 = time.perf_counter()
        self.model = model or build_model(self.setup.model, dtype=dtype, device=self.device,
                                          weights=sc.runtime.weights, seed=sc.seed, tp=self.tp)
        self.load_s = time.perf_counter() - t0
        given = check_prompt_tokens(prompt_tokens, self.setup.requests, self.model.spec.vocab_size,
                                    sc.engine.enable_prefix_caching) if prompt_tokens else None
        if hasattr(self.model, "fused_ops"):
            self.model.fused_ops = sc.runtime.fused_layer_ops
        e = sc.engine
        self.info: dict = {"simulator_blocks": self.setup.budget.num_gpu_blocks}
        if self.device.type == "cuda" and e.num_gpu_blocks is None:
            blocks, self.info = measure_blocks(self.model, self.setup, self.device, dtype, self.backend)
            b = self.setup.budget         # the measured block count replaces the simulator's estimate
            self.setup = dataclasses.replace(self.setup, budget=dataclasses.replace(
                b, num_gpu_blocks=blocks, kv_cache_bytes=blocks * b.block_bytes, kv_capacity_tokens=blocks * e.block_size))
        self.kv = self.setup.make_kv()
        layout = getattr(self.kv, "layout", None)     # KV groups: layers share page tensors by slot
        rt = sc.runtime
        graph = self._graph_settings()
        self.parts = parts if layout is None else None
        key = self._parts_key(graph) if self.parts is not None else None
        kept = self.parts.take(key, self.kv.num_gpu_blocks) if self.parts is not None else None
        self.parts_kept = kept is not None
        if kept is not None:
            kept.cache.transfers = 0          # this run's swaps only
            self.cache = kept.cache
        else:
            blocks = self.kv.num_gpu_blocks if self.parts is None else self.parts.build_blocks(self.kv.num_gpu_blocks)
            self.cache = KVCache(self.model.num_layers, blocks, self.kv.block_size, self.model.num_kv_heads,
                                 self.model.head_dim, self.kv.num_cpu_blocks, dtype, self.device, self.backend,
                                 layer_slot=layout.layer_slot if layout is not None else None,
                                 staged_swap=rt.swap_staged)
        self.sched = self.setup.make_scheduler(self.kv, np.random.default_rng([sc.seed, 2]))
        warm = self._warms_up() and not (self.parts is not None and self.parts.warm(self._warmup_key()))
        self.warmup_s = self._warm_up() if warm else 0.0
        self.graphs = self.prefill_graphs = None
        if kept is not None:
            self.graphs, self.prefill_graphs = kept.graphs, kept.prefill_graphs
        elif self.device.type == "cuda" and rt.cuda_graphs and layout is None:   # graphs: one table per step
            from kvsim.engine.cuda_graphs import DecodeGraphs, PrefillGraphs, prefill_token_sizes
            common = dict(block_size=e.block_size, max_context_len=self.setup.max_model_len, backend=self.backend)
            self.graphs = DecodeGraphs(self.model, self.cache.gpu, max_batch=graph["max_batch"], **common)
            max_tokens = graph["prefill_max_tokens"]
            if max_tokens:
                self.prefill_graphs = PrefillGraphs(self.model, self.cache.gpu, max_tokens=max_tokens,
                                                    max_seqs=graph["max_seqs"], decode_kernel=graph["decode_kernel"],
                                                    token_sizes=prefill_token_sizes(max_tokens, graph["ladder"]),
                                                    route=graph["route"], skip=list(graph["skip"]),
                                                    **common)
        if self.parts is not None and kept is None:
            self.parts.keep(key, self.cache, self.graphs, self.prefill_graphs)
        self.runner = ModelRunner(self.model, self.cache, self.kv, self.sched.groups, backend=self.backend,
                                  sampling_mode=rt.sampling, temperature=rt.temperature, top_p=rt.top_p,
                                  seed=sc.seed, graphs=[g for g in (self.graphs, self.prefill_graphs) if g is not None],
                                  unified_mixed=rt.unified_mixed_steps, mixed_decode_kernel=rt.mixed_decode_kernel,
                                  prompt_tokens=given, pad_logits=rt.pad_logits)
        if self.tp is not None and self.tp.rank == 0:
            self.runner.tp = self.tp
        if self.device.type == "cuda" and layout is None:    # the card's speed today (before any sequence exists)
            from kvsim.engine.reference_step import reference_step
            self.info["reference_step"] = reference_step(
                self.model, self.cache.gpu, self.graphs, block_size=e.block_size, num_blocks=self.kv.num_gpu_blocks,
                backend=self.backend, device=self.device)

    def _graph_settings(self) -> dict:
        """What the CUDA graphs are captured with (besides the KV cache), from the scenario."""
        e, rt = self.sc.engine, self.sc.runtime
        return {"max_batch": min(rt.cuda_graph_max_batch, e.max_num_seqs),
                "prefill_max_tokens": min(rt.cuda_graph_prefill_max_tokens, e.max_num_batched_tokens),
                "max_seqs": min(e.max_num_seqs, 256), "decode_kernel": rt.mixed_decode_kernel,
                "decode_split": rt.mixed_decode_split,
                "ladder": rt.cuda_graph_prefill_ladder, "route": rt.cuda_graph_prefill_route,
                "skip": tuple(sorted(set(rt.cuda_graph_prefill_skip)))}

    def _parts_key(self, graph: dict) -> tuple:
        """What an :class:`~kvsim.engine.reuse.EngineParts` must match to lend this run its cache and graphs: the
        graphs' settings and everything else the cache and graphs depend on besides the pool's size."""
        from kvsim.engine.reuse import parts_key
        e, rt = self.sc.engine, self.sc.runtime
        return parts_key(self.model, block_size=e.block_size, max_context_len=self.setup.max_model_len,
                         backend=self.backend, dtype=str(self.model.dtype), num_cpu_blocks=self.kv.num_cpu_blocks,
                         cuda_graphs=rt.cuda_graphs, fused_ops=rt.fused_layer_ops, swap_staged=rt.swap_staged, **graph)

    def _warmup_key(self) -> tuple:
        """The arguments :func:`kvsim.engine.warmup.warm_up` compiles kernels for (a kept engine skips a seen one)."""
        from kvsim.engine.warmup import largest_prefill_step
        e, rt = self.sc.engine, self.sc.runtime
        return (id(self.model), e.block_size, e.max_num_batched_tokens, self.setup.max_model_len, e.max_num_seqs,
                largest_prefill_step(self.sc, self.setup.max_model_len, self.kv.num_gpu_blocks),
                rt.mixed_decode_kernel, rt.mixed_decode_split, rt.sampling, bool(self.kv.num_cpu_blocks), self.backend)

    def _warms_up(self) -> bool:
        """Warm-up runs on a GPU (``runtime.warmup``): there kernels compile and load on first use."""
        return self.device.type == "cuda" and self.sc.runtime.warmup

    def _warm_up(self) -> float:
        """:func:`kvsim.engine.warmup.warm_up` on this engine (before the runner and graphs exist)."""
        from kvsim.engine.warmup import warm_up
        return warm_up(self.model, self.cache, self.sc, max_model_len=self.setup.max_model_len,
                       num_gpu_blocks=self.kv.num_gpu_blocks, device=self.device, backend=self.backend)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def serve(self, trace: list | None = None) -> int:
        """A worker rank (1..N-1) of a tensor-parallel run: execute rank 0's steps until it stops."""
        from kvsim.engine.tp_ranks import worker_loop
        return worker_loop(self.model, self.cache, self.tp, trace=trace)

    def run(self) -> EngineResult:
        if self.runner.tp is None:
            return self._run()
        from kvsim.engine.tp_ranks import send_stop
        try:
            return self._run()
        finally:
            send_stop(self.runner.tp)

    def _run(self) -> EngineResult:
        from kvsim.engine.serve_loop import serve
        clog = CompileLog()
        res = serve(self, clog)
        reqs = request_frame(self.sched.request_groups())
        its = res.log.frame()
        its["cpu_s"] = np.array(res.cpu_s, dtype=float)
        its["gpu_s"] = np.array(res.gpu_s, dtype=float)
        if len(res.thread_s) == len(its):        # instrumentation of the host part (kvsim.engine.host_probe)
            its["host_thread_s"] = np.array(res.thread_s, dtype=float)
            its["host_cpu"] = np.array(res.cores, dtype=np.int32)
            its["host_ahead"] = np.array(res.ahead, dtype=np.int8)   # prepared while the step before it flew
        summary = run_summary(self.setup, reqs, its, res.end_s, self.kv)
        return EngineResult(self.setup, reqs, its, summary, {**self._info(its), **clog.info(), **res.info},
                            res.outputs)

    def _info(self, its: pd.DataFrame) -> dict:
        import triton
        dev = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        return {**self.info, "device": dev, "torch": torch.__version__, "triton": triton.__version__,
                "cuda": torch.version.cuda, "attention_backend": self.backend, "weights": self.sc.runtime.weights,
                "model_load_s": round(self.load_s, 3), "kv_blocks": self.setup.budget.num_gpu_blocks,
                "warmup_s": round(self.warmup_s, 3), "tensor_parallel": self.sc.tensor_parallel,
                "cuda_graph_batch_sizes": self.graphs.sizes if self.graphs is not None else [],
                "cuda_graph_prefill_tokens": self.prefill_graphs.sizes if self.prefill_graphs is not None else [],
                # sizes a step is never padded to (asked for, or routed past: a larger graph replayed faster), and
                # each graph's replay time when routing measured it
                "cuda_graph_prefill_skip": self.prefill_graphs.skipped if self.prefill_graphs is not None else [],
                "cuda_graph_prefill_replay_ms": [round(t * 1e3, 3) for t in self.prefill_graphs.replay_time_s]
                if self.prefill_graphs is not None else [],
                "cuda_graph_capture_s": 0.0 if self.parts_kept else round(sum(g.capture_s for g in self.runner.graphs), 3),
                "engine_parts_kept": self.parts_kept,
                "cuda_graph_steps": self.runner.graph_steps,
                "unified_mixed_steps": self.runner.unified_mixed,
                "mixed_decode_kernel": self.runner.mixed_decode_kernel,
                "logits_graph_rows": self.runner.logit_sizes is not None,   # LM head padded to graph sizes?
                "mixed_decode_split": _split_rows(),      # a mixed step's decode rows cut into partitions?
                "fused_layer_ops": bool(getattr(self.model, "fused_ops", False)),
                "cpu_s_mean": float(its.cpu_s.mean()) if len(its) else 0.0,
                "gpu_s_mean": float(its.gpu_s.mean()) if len(its) else 0.0,
                "swap_transfers": self.cache.transfers, "swap_staged": self.cache.staged_swap}


def _split_rows() -> bool:
    """Whether the varlen decode kernel cuts a mixed step's decode rows into partitions (varlen_decode.SPLIT)."""
    from kvsim.kernels import varlen_decode
    return bool(varlen_decode.SPLIT)
