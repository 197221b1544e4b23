"""How the calibration's serving runs are set up (:mod:`kvsim.calibrate.serving_fit` runs and fits them): the
workload at n rows (a closed loop of n requests in flight on uniform lengths), its scenario in the calibration's
runtime mode or stepped, and the calibrated cost model a fit prices the runs' steps with (the profile without the
tables being fitted). Needs no torch."""
from __future__ import annotations

from kvsim.calibrate import engine_runs as ER

PROMPT_RANGE = (16, 1024)          # capped at half the model's longest sequence
OUTPUT_RANGE = (16, 256)
REQUESTS_PER_SLOT = 2              # per pass
# a row whose KV pool does not fit the card at PROMPT_RANGE runs shorter prompts, down to this longest prompt (outputs
# kept: a closed loop of short outputs is mostly prompt steps): OPT-13B's 64 rows on an H100 (64.1 GiB at 1,024-token
# prompts against 32 GiB of room) run prompts up to ~370 tokens rather than not at all (2026-12-07)
MIN_PROMPT_HI = 256
POOL_SPARE_BLOCKS, SEQ_SPARE_TOKENS = 64, 8   # a run's KV pool: rows x row_blocks(...) + the spare blocks
# the short-context runs (kvsim.calibrate.short_fit): Alpaca-like lengths, 9-128 tokens a row while decoding; short
# requests finish fast, so more of them per slot for as many decode steps at n rows
SHORT_PROMPT_RANGE, SHORT_OUTPUT_RANGE, SHORT_REQUESTS_PER_SLOT = (8, 64), (16, 64), 6


def row_blocks(prompt_hi: int, output_hi: int, bs: int) -> int:
    """Blocks of one row's worst case (its longest prompt and output and a few spare tokens)."""
    return -(-(prompt_hi + output_hi + SEQ_SPARE_TOKENS) // bs)
STEPPED_MODE = {"async_scheduling": False, "async_prompt_steps": False}   # a stepped run in an overlapped calibration


def serving_workload(n: int, max_seq_len: int, beam_width: int = 1, prompt_hi: int | None = None,
                     short: bool = False) -> tuple[dict, dict]:
    """``(engine, workload)`` settings of the serving run at ``n`` rows (see module doc); ``beam_width`` > 1:
    n // beam_width requests in flight, each searching that many beams (n rows); ``prompt_hi``: prompts at most
    that long (:func:`prompt_hi_fitting`); ``short``: the short-context lengths (``SHORT_*``)."""
    prompts, outputs = (SHORT_PROMPT_RANGE, SHORT_OUTPUT_RANGE) if short else (PROMPT_RANGE, OUTPUT_RANGE)
    p_hi = min(prompts[1], max_seq_len // 2, prompt_hi or prompts[1])
    o_hi = min(outputs[1], max_seq_len - p_hi - 8)
    # serving's engine limits (its CUDA graphs, so n rows replay the graph a serving engine pads them to),
    # with at most n requests in flight (a closed loop: the next one arrives when one finishes)
    engine = {"scheduler": "vllm", "max_num_seqs": 256, "max_num_batched_tokens": max(p_hi, 2048)}
    workload = {"dataset": "uniform", "prompt_len_range": [prompts[0], p_hi],
                "output_len_range": [outputs[0], o_hi], "arrival": "burst",
                "num_requests": (SHORT_REQUESTS_PER_SLOT if short else REQUESTS_PER_SLOT) * n, "max_concurrency": n}
    if beam_width > 1:
        groups = max(1, n // beam_width)
        per_slot = SHORT_REQUESTS_PER_SLOT if short else REQUESTS_PER_SLOT
        workload.update(beam_width=beam_width, num_requests=per_slot * groups, max_concurrency=groups)
    return engine, workload


def stripped_cost(profile: dict, bs: int, graphs: dict, *, drop: tuple[str, ...], bare: bool):
    """A calibrated cost model of ``profile`` without the tables ``drop`` (and without step overhead when
    ``bare``), at the CUDA-graph sizes ``graphs`` (:func:`kvsim.graph_sizes.engine_graph_sizes`)."""
    from kvsim.cost.calibrated import CalibratedCostModel, Profile
    doc = {k: v for k, v in profile.items() if k not in drop}
    if bare:
        doc["step_overhead"] = {"num_seqs": [1.0], "time_s": [0.0]}
    return CalibratedCostModel(Profile(doc), model_name=profile["model"], dtype=profile["dtype"], block_size_tokens=bs,
                               **graphs)


def prompt_hi_fitting(sc, bs: int, room_bytes: int) -> int | None:
    """The longest prompt (at most ``sc``'s) at which the serving run ``sc``'s KV pool, sized for its worst case,
    fits ``room_bytes`` (:func:`kvsim.calibrate.engine_runs.kv_room_bytes`), or None where that is under
    :data:`MIN_PROMPT_HI`."""
    from kvsim.catalogue import get_model
    w = sc.workload
    rows = (w.max_concurrency or 1) * max(1, w.beam_width)
    block_bytes = bs * get_model(sc.model).kv_bytes_per_token(sc.dtype_bytes)
    per_row = (room_bytes // block_bytes - POOL_SPARE_BLOCKS) // rows    # the largest row_blocks that fits
    p_hi = min(per_row * bs - w.output_len_range[1] - SEQ_SPARE_TOKENS, w.prompt_len_range[1])
    return int(p_hi) if p_hi >= MIN_PROMPT_HI else None


def serving_scenario_doc(profile: dict, bs: int, n: int, device: str = "cuda", cuda_graphs: bool = True,
                         stepped: bool = False, beam_width: int = 1, prompt_hi: int | None = None,
                         short: bool = False) -> dict:
    """The scenario document of the serving run at ``n`` rows (:func:`serving_workload`), with a KV pool for its
    worst case, in the calibration's runtime mode (``stepped``: every step stepped; beam search is never
    overlapped; ``prompt_hi``: prompts at most that long; ``short``: the short-context lengths)."""
    from kvsim.catalogue import get_model
    engine, workload = serving_workload(n, get_model(profile["model"]).max_seq_len, beam_width, prompt_hi, short)
    per_seq = row_blocks(workload["prompt_len_range"][1], workload["output_len_range"][1], bs)
    kind = ("beam-" if beam_width > 1 else "") + ("short-" if short else "")
    return {"name": f"calibrate-serving-{kind}{n}", "model": profile["model"], "gpu": "h100-80gb", "dtype": profile["dtype"],
            "seed": 0, "engine": {"block_size": bs, "num_gpu_blocks": n * per_seq + POOL_SPARE_BLOCKS, "swap_space_gib": 0, **engine},
            "workload": workload, "runtime": {"device": device, "cuda_graphs": cuda_graphs, **ER.runtime_mode(),
                                              **(STEPPED_MODE if stepped else {})}}


def serving_scenario(profile: dict, bs: int, n: int, device: str = "cuda", cuda_graphs: bool = True,
                     stepped: bool = False, beam_width: int = 1, prompt_hi: int | None = None, short: bool = False):
    """The scenario of the serving run at ``n`` rows (:func:`serving_scenario_doc`)."""
    import kvsim
    return kvsim.load_scenario(serving_scenario_doc(profile, bs, n, device, cuda_graphs, stepped, beam_width,
                                                    prompt_hi, short))
