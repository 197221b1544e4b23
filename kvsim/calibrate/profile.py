"""``kvsim calibrate``: build the model with dummy weights on the GPU, measure every grid, fit the
per-iteration overhead from real engine decode steps, and write the versioned profile JSON."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import torch

from kvsim.calibrate import engine_runs as ER
from kvsim.calibrate import measure as M
from kvsim.calibrate.block_tables import BLOCK_TABLES, REFERENCE, measure_block
from kvsim.calibrate.engine_runs import OVERHEAD_BATCH, calibration_parts, engine_iterations, overhead_blocks
from kvsim.calibrate.prefill_fit import fit_prefill_overhead
from kvsim.catalogue import get_model
from kvsim.cost.calibrated import FORMAT, VERSION, CalibratedCostModel, Profile
from kvsim.errors import KvsimError

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def default_path(model: str, gpu: str) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", f"{model}-{gpu}".lower()).strip("-")
    return Path("calibrate") / "profiles" / f"{slug}.json"


def write_profile(prof: dict, path: Path, partial: str | None = None) -> None:
    """Write ``prof`` to ``path`` atomically (a temporary file renamed over it). ``partial``: what is still to
    come; recorded as ``meta.partial`` so a calibration stopped later (a device call's time limit) still
    leaves a profile the cost model reads, and says what it lacks. The final write drops the mark."""
    doc = dict(prof, meta=dict(prof["meta"]))
    if partial:
        doc["meta"]["partial"] = f"calibration stopped before {partial}"
    else:
        doc["meta"].pop("partial", None)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)


def fit_overhead(model, profile: dict, bs: int, device: str = "cuda", batches=OVERHEAD_BATCH,
                 cuda_graphs: bool = True, parts=None) -> dict:
    """Median (measured step − composed ops) of real engine decode steps, per batch size."""
    provisional = dict(profile, step_overhead={"num_seqs": [1.0], "time_s": [0.0]})
    cost = CalibratedCostModel(Profile(provisional), model_name=profile["model"], dtype=profile["dtype"],
                               block_size_tokens=bs)
    out = []
    for n in batches:
        its = engine_iterations(model, profile, f"calibrate-overhead-{n}", device, cuda_graphs,
                                {"block_size": bs, "num_gpu_blocks": overhead_blocks(n, bs)},
                                {"prompt_len": 128, "output_len": 48, "arrival": "burst", "num_requests": n}, parts=parts)
        dec = its[(its.prefill_tokens == 0) & (its.decode_seqs == n)].iloc[3:]      # skip warm-up steps
        resid = []
        for _, row in dec.iterrows():
            # decode-only, no sharing: the used KV slots after the step's append are the context sum
            composed = float(cost.decode_step_times(n, np.array([float(row.mem_used)]))[0])
            resid.append(row.duration_s - composed)
        out.append(max(0.0, float(np.median(resid))) if resid else 0.0)    # never a negative cost
        M._log(f"overhead n={n}: measured step {dec.duration_s.median() * 1e3:.2f} ms, residual {out[-1] * 1e3:.2f} ms")
    return {"num_seqs": list(batches), "time_s": out}


def engine_mode(model, cuda_graphs: bool) -> dict:
    """The engine settings a profile's timings depend on, recorded in its ``meta`` (``--resume`` checks them)."""
    from kvsim.engine.attention import MIXED_DECODE_KERNEL
    from kvsim.graph_sizes import PREFILL_LADDER
    return {"cuda_graphs": bool(cuda_graphs),
            "fused_layer_ops": bool(getattr(model, "fused_ops", False)),
            "mixed_decode_kernel": MIXED_DECODE_KERNEL,      # how the engine attended a mixed step's decode rows
            **ER.runtime_mode(),     # the fits' engine runs: stepped or overlapped, their prefill and mixed steps too
            "prefill_ladder": PREFILL_LADDER,                # the token counts its prefill/mixed graphs captured
            "prefill_route": bool(cuda_graphs),              # ... routed past the slow ones (prefill_step's graph_skip)
            "copy_one_launch": True,          # copy_block timed with one launch over all layers (KVCache.planes)
            "swap_staged": M.swap_staged()}    # swap timed through the staging buffer? (--swap-per-layer: no)


RESERVE_AFTER_SERVING_S = 45.0   # what the fits after the serving runs take (prefill overhead, busy and idle:
# 18 s for OPT-13B on the H200 with kept engine parts, 2026-12-05; 67 s when each run built its engine)
OVERHEAD_FIT_S = 30.0            # the step-overhead fit right after the grids (20 s for Llama-3-8B on the H200)


def grids_out_of_time(elapsed_s: float, block_seconds: list[float], time_limit_s: float | None) -> str | None:
    """Why the next block size's grids must not start (None: they may). ``--time-limit`` governs the grids too:
    a block size starts only when the time left holds it (as long as the slowest one measured so far) and the
    fits after the grids (:data:`OVERHEAD_FIT_S`, :data:`RESERVE_AFTER_SERVING_S`); the first always starts.
    Without this a call's timeout killed a calibration of three block sizes before it wrote anything
    (benchmarks/engine/results_H200/calib_1206/README.md)."""
    if time_limit_s is None or not block_seconds:
        return None
    need = max(block_seconds) + OVERHEAD_FIT_S + RESERVE_AFTER_SERVING_S
    if elapsed_s + need <= time_limit_s:
        return None
    return (f"not started: --time-limit {time_limit_s:g} s leaves {max(0.0, time_limit_s - elapsed_s):.0f} s, "
            f"its grids and the fits after them need ~{need:.0f} s (calibrate it in another call and join the "
            "profiles with kvsim merge-profiles)")


def calibrate(model_name: str, block_sizes: list[int], out: str | None, dtype: str, command: str,
              cuda_graphs: bool = True, fast: bool = False, serving_runs: str | None = None,
              time_limit_s: float | None = None, serving_sizes: list[int] | None = None) -> Path:
    """Measure ``model_name`` at ``block_sizes`` and write the profile. ``serving_sizes``: the block sizes whose
    serving fit runs (default: every one, none for ``fast``; :mod:`kvsim.calibrate.serving_blocks`)."""
    if not torch.cuda.is_available():
        raise KvsimError("calibrate", "needs a CUDA GPU (run it on the GPU machine)")
    from kvsim.engine.models import build_model
    spec = get_model(model_name)
    dev = torch.device("cuda")
    t0 = time.perf_counter()
    from kvsim.calibrate.fast import estimate_full_or_fast, time_limit_warning
    fits = None if serving_sizes is None else len(serving_sizes)
    M._log(estimate_full_or_fast(block_sizes, fast, spec.max_seq_len, M.GRID_IDLE, spec.name, fits))
    warn = time_limit_warning(block_sizes, fast, time_limit_s, spec.max_seq_len, M.GRID_IDLE, spec.name, fits)
    if warn:
        M._log(warn)
    model = build_model(spec, dtype=DTYPES[dtype], device=dev, weights="dummy")
    M._log(f"built {spec.name} in {time.perf_counter() - t0:.1f} s")
    prof: dict = {"format": FORMAT, "version": VERSION, "meta": M._meta(command), "model": spec.name,
                  "dtype": dtype, "num_layers": spec.num_layers}
    prof["meta"].update(engine_mode(model, cuda_graphs))
    prof["linear"], prof["layer_other"] = M.measure_nonattention(model, dev)
    M._log("linear / other done")
    prof["lm_head"] = M.measure_lm_head(model, dev)
    from kvsim.calibrate.sampling import describe, sampling_table
    prof["sampling"] = sampling_table(spec.vocab_size, dev)       # beam search's sampling, priced apart
    M._log(describe(prof["sampling"]))
    prof["meta"]["fast"] = bool(fast)
    prof["meta"]["grid_idle"] = float(M.GRID_IDLE)      # idle before each timed grid call, x its time (--grid-idle)
    for key in BLOCK_TABLES:
        prof[key] = {}
    t_blocks, skipped = {}, {}
    for bs in block_sizes:
        t1 = time.perf_counter()
        late = grids_out_of_time(t1 - t0, list(t_blocks.values()), time_limit_s)
        if late:
            skipped[str(bs)] = late
            M._log(f"block size {bs} skipped: {late}")
            continue
        try:
            tables = measure_block(model, bs, dev, cuda_graphs=cuda_graphs, fast=fast)
        except torch.OutOfMemoryError as err:      # this block size's grids do not fit beside the model: the
            # others are still measured (one size out of memory ended the whole calibration before)
            torch.cuda.empty_cache()
            skipped[str(bs)] = str(err).splitlines()[0][:200]
            M._log(f"block size {bs} skipped: CUDA out of memory ({skipped[str(bs)]})")
            continue
        for key, table in tables.items():
            if key == REFERENCE:
                prof["meta"].setdefault("reference_step", {})[str(bs)] = table
                marks = {"start": table.get("time_s"), "grid's timing": table.get("grid_timing_s"),
                         **(table.get("checkpoints_s") or {})}
                M._log("reference step (ms): " + ", ".join(f"{k} {v * 1e3:.3f}" for k, v in marks.items() if v))
            else:
                prof[key][str(bs)] = table
        torch.cuda.empty_cache()
        t_blocks[str(bs)] = round(time.perf_counter() - t1, 1)
        M._log(f"block size {bs} done in {t_blocks[str(bs)]:.1f} s")
    prof["meta"]["seconds_per_block_size"] = t_blocks
    block_sizes = [bs for bs in block_sizes if str(bs) not in skipped]
    if skipped:
        prof["meta"]["skipped_block_sizes"] = skipped
    if not block_sizes:
        raise KvsimError("--block-sizes", f"no block size fits on this card beside {spec.name} "
                                          f"(CUDA out of memory at {', '.join(skipped)})")
    for key in ("mixed_step", "prefill_batch_step", "prefill_cached_step"):    # optional tables: absent, not empty
        if not prof[key]:
            del prof[key]
    fit_bs = fit_block_size(block_sizes)
    if serving_sizes is None:       # each block size its own fit (one's does not carry to another: serving_blocks)
        serving_sizes = [] if fast else list(block_sizes)
    serving_sizes = [b for b in serving_sizes if b in block_sizes]      # (a block size left out has no grids)
    serve = fit_bs in serving_sizes
    try:
        parts = calibration_parts(prof, fit_bs, "cuda", serving=serve)   # one engine build for every run below
        prof["step_overhead"] = fit_overhead(model, prof, fit_bs, cuda_graphs=cuda_graphs, parts=parts)
    except torch.OutOfMemoryError:
        raise KvsimError("--block-sizes", f"the overhead fit's engine runs at block size {fit_bs} do not fit on this "
                                          f"card beside {spec.name} (CUDA out of memory); add a block size nearer "
                                          "16 (the fits run at the one closest to 16)") from None
    path = Path(out) if out else default_path(spec.name, prof["meta"]["gpu"])
    write_profile(prof, path, partial=AFTER_GRIDS)   # usable if stopped later; --resume finishes it
    M._log(f"wrote {path} so far (meta.partial): the grids and the step overhead")
    deadline = None if time_limit_s is None else t0 + time_limit_s - RESERVE_AFTER_SERVING_S
    fit_after_grids(model, prof, fit_bs, path, cuda_graphs=cuda_graphs, serving=serve,
                    serving_runs=serving_runs, deadline=deadline, parts=parts)
    prof["meta"]["engine_builds"] = {"built": parts.builds, "kept": parts.reuses}
    parts.drop()
    from kvsim.calibrate.serving_blocks import LAST_RUN_S, more_serving_fits
    more_serving_fits(model, prof, fit_bs, serving_sizes, path, cuda_graphs=cuda_graphs, serving_runs=serving_runs,
                      deadline=None if time_limit_s is None else t0 + time_limit_s - LAST_RUN_S, log=M._log,
                      write=write_profile)
    prof["meta"]["calibrate_seconds"] = round(time.perf_counter() - t0, 1)
    write_profile(prof, path)
    M._log(f"wrote {path} in {time.perf_counter() - t0:.1f} s")
    return path


AFTER_GRIDS = "the serving fit and the prefill overhead fits"
def fit_block_size(block_sizes) -> int:
    """The block size whose engine runs give the serving and prefill overhead fits: 16 when measured, else the
    one nearest to it in ratio, the smaller on a tie (a fit's KV cache rounds each run's sequences up to whole
    blocks: at block 256 OPT-13B's asked 62.5 GiB on an 80 GB H100, where block 16's fits)."""
    import math
    sizes = sorted(int(b) for b in block_sizes)
    return min(sizes, key=lambda b: (abs(math.log2(b / 16)), b))


def fit_after_grids(model, prof: dict, fit_bs: int, path: Path, *, device: str = "cuda", cuda_graphs: bool = True,
                    serving: bool = True, serving_runs: str | None = None, deadline: float | None = None,
                    parts=None) -> None:
    """The stages after the grids and ``step_overhead``, each timing the real engine against them, into
    ``prof`` (written to ``path`` as each ends): the serving fit (``decode_serving``, ``prefill_serving``; not
    for ``--fast``), then the busy and idle prefill overhead fits (``prefill_overhead``, ``wake_overhead``).
    ``deadline``: no serving run starts after it. ``parts``: the engine runs share one KV cache and set of CUDA
    graphs (:func:`kvsim.calibrate.engine_runs.calibration_parts`). :func:`calibrate` and ``--resume`` both end here."""
    if parts is None:
        parts = calibration_parts(prof, fit_bs, device, overhead=False, serving=serving)
    if serving:      # decode steps of serving-shaped batches (up to eighteen short engine runs, 21 overlapped: three stepped): kvsim.calibrate.serving_fit
        from kvsim.calibrate.serving_blocks import serving_fit_once
        decode, prefill, cut, error = serving_fit_once(model, prof, fit_bs, parts=parts, device=device,
                                                       cuda_graphs=cuda_graphs, save_dir=serving_runs,
                                                       deadline=deadline, log=M._log)
        if cut:          # the profile says its fit is short (kvsim calibrate --resume runs it whole)
            prof["meta"]["serving_fit_skipped"] = cut
        if error:        # optional tables: say so, go on
            prof["meta"]["serving_fit_error"] = error
            M._log(f"serving fit failed, profile written without decode_serving/prefill_serving: {error}")
        if decode:
            prof["decode_serving"] = {str(fit_bs): decode}
        if prefill:
            prof["prefill_serving"] = {str(fit_bs): prefill}
        write_profile(prof, path, partial="the prefill overhead fits")
    prof["prefill_overhead"] = fit_prefill_overhead(model, prof, fit_bs, device=device, cuda_graphs=cuda_graphs,
                                                    busy=True, parts=parts)
    idle = fit_prefill_overhead(model, prof, fit_bs, device=device, cuda_graphs=cuda_graphs, parts=parts)
    prof["wake_overhead"] = {"tokens": idle["tokens"],          # what a prompt reaching an idle engine adds
                             "time_s": [max(0.0, a - b) for a, b in zip(idle["time_s"],
                                                                         prof["prefill_overhead"]["time_s"])]}
    if "latency_s" in idle:                                     # and its wake (arrival to scheduling)
        prof["wake_overhead"]["latency_s"] = idle["latency_s"]
