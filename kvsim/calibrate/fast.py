"""``kvsim calibrate --fast``: many block sizes in one device call.

A full calibration times ~370 grid points per block size (210 s for OPT-13B on an H200), too slow
for 1, 2, 4, ..., 256 in one 10-minute call. Most of it does not depend on the block size: the GEMMs,
the rest of the layer, the LM head and the per-iteration host overheads are measured once
(``kvsim calibrate`` already does) and shared. Per block size, ``--fast`` times only what the
blocking changes, on reduced grids:

* whole decode steps (batch x context) and unequal-context steps beside their uniform twins,
* whole prefill steps at a few token counts (CUDA graphs captured at exactly those counts),
* one layer's paged decode and prefill attention grids, block copies and swaps.

Mixed steps are skipped (the calibrated model then adds a prefill chunk's tokens to the decode step,
as for older profiles). The grids are **dense for small blocks** (``B <= DENSE_MAX``), where a thread
block reads little KV and the cost changes fast with ``B`` (paper Fig. 18a), and **coarse** for the
rest, where it barely moves. Decode batches are on the engine's CUDA-graph ladder, so a step of a
captured batch is priced from a point measured at exactly that batch. Every axis keeps at least two
points, so the cost model interpolates (and extends the last slope) as on full grids.

:func:`estimate_seconds` is the time budget derived from the counts of grid points: points times the
mean seconds per point of the full block-16 calibration of OPT-13B on the H200 (``FULL_B16_SECONDS``
over the ``BASIS_POINTS`` it timed), plus the shared tables once, for another model scaled by
its parameters (:func:`model_scale`: a timed step is a forward pass, its time about its weights' read or its
FLOPs). It is an estimate, to be measured on the GPU: Llama-3-8B at block 16 (8,192-token contexts, 523 points,
scale 0.62) is estimated 144 s of grids against 154 s measured on an H200 with ``--grid-idle 1``
(``benchmarks/engine/results_H200/calib_1206``); unscaled, and with the seconds per point taken over its own
point count, it was 219 s.
"""
from __future__ import annotations

DENSE_MAX = 8     # block sizes up to this get the dense grid

DENSE = {"batch": [1, 4, 16, 32, 64, 128, 256], "ctx": [128, 512, 1024, 2048], "spread": [2048],
         "prefill": [16, 128, 512, 2048], "attn_batch": [1, 4, 16, 64, 256], "attn_ctx": [16, 256, 1024, 2048],
         "pre_new": [16, 256, 1024, 2048], "pre_cached": [0, 1024], "copy": [1, 16, 256]}
COARSE = {"batch": [1, 8, 32, 128, 256], "ctx": [128, 512, 2048], "spread": [2048],
          "prefill": [16, 512, 2048], "attn_batch": [1, 16, 256], "attn_ctx": [16, 1024, 2048],
          "pre_new": [16, 1024, 2048], "pre_cached": [0, 1024], "copy": [1, 16, 256]}

# measured input, not an output: the block-16 grids (210.4 s) and the shared tables (9 s) of the OPT-13B H200
# calibration of 2026-12-05 04:14, commit 604a776 (benchmarks/engine/results_H200/calib_0413/; whole-step points
# were then timed 12 times, 8 since 10f067c, so this over-estimates by up to ~25%)
FULL_B16_SECONDS = 219.4
SERVING_FIT_SECONDS = 180.0  # the serving fit's 33 runs, OPT-13B-sized (1-128 rows in two passes, three stepped, two
# beam and two beam on short requests (kvsim.calibrate.beam_fit, "Two lengths"; 170 s for 31 before), four
# short-context since kvsim.calibrate.short_fit; two until 2026-12-07, when this read 160 s for 29):
# OPT-13B on an H100 ran 17 of them in 81 s (2026-12-07 00:44-00:45, results_H100/async_opt_1207's log, commit
# bfecda7: ~4.8 s a run, ~140 s for 29; on another H100 at 08:03-08:06 the 27 that fit in its memory and the prefill
# overhead fits in 177 s, results_H100/async_opt_1207c in git history at b1d3dba; the 29 that fit and those fits on a
# third H100 at 09:47-09:50 in 174 s, results_H100/async_1207d),
# Llama-3-8B on an H100 all 27 of its day in 105 s (03:09-03:11, results_H100/async_1207's log, commit 98cc84c: ~170 s
# at OPT-13B's parameters); between the two (OPT-13B, H200, 2026-12-05: runs through one kept engine ~4 s each,
# calib_0413's log; Llama-3-8B overlapped, H200, 2026-12-06: 21 runs in 73 s, results_H200/async_1206)
# the shared tables (GEMMs, layer rest, LM head, overhead and prefill-overhead fits) counted as points;
# the fits run the engine (10 short runs), counted here as 3 points each
SHARED_FIT_RUNS = 10
FIT_RUN_POINTS = 3
BASIS_MODEL, BASIS_MAX_CTX = "opt-13b", 2048   # the calibration FULL_B16_SECONDS was measured on


def model_scale(model: str | None) -> float:
    """The model's parameters over OPT-13B's: what a timed point and a fit's engine run cost relative to the
    basis (1 for None or OPT-13B)."""
    if model is None:
        return 1.0
    from kvsim.catalogue import get_model
    return get_model(model).num_params() / get_model(BASIS_MODEL).num_params()


BASIS_POINTS = 497     # the points FULL_B16_SECONDS timed, as full_points(BASIS_MAX_CTX) counted them before the
#                        decode grid's 32- and 64-token columns (2026-12-07): points added since add to the estimate


def _per_point(scale: float) -> float:
    """Seconds per timed point: the basis calibration's mean, scaled."""
    return FULL_B16_SECONDS / BASIS_POINTS * scale


def grid_for(bs: int, max_ctx: int | None = None) -> dict:
    """The reduced grids for block size ``bs`` (dense up to DENSE_MAX), contexts capped at ``max_ctx``."""
    g = {k: list(v) for k, v in (DENSE if bs <= DENSE_MAX else COARSE).items()}
    if max_ctx:
        for key in ("ctx", "spread", "prefill"):
            g[key] = sorted({min(c, max_ctx) for c in g[key]})
    return g


def step_grid(g: dict) -> dict:
    """The ``grid`` argument of :func:`kvsim.calibrate.steps.measure_steps` (no mixed steps, no multi-prompt
    or cached-context prefill grids)."""
    return {"batch": g["batch"], "ctx": g["ctx"], "spread": g["spread"], "prefill": g["prefill"], "mix": None,
            "prefill_batch": None, "prefill_cached": None}


def block_points(g: dict) -> int:
    """Timed points of one block size on grid ``g`` (each spread point also times its uniform twin)."""
    nb = len(g["batch"])
    return (nb * len(g["ctx"]) + 2 * nb * len(g["spread"]) + len(g["prefill"])
            + len(g["attn_batch"]) * len(g["attn_ctx"]) + len(g["pre_new"]) * len(g["pre_cached"])
            + 2 * len(g["copy"]))


def shared_points() -> int:
    from kvsim.calibrate import measure as M
    return 2 * len(M.TOKENS) + len(M.BATCH) + SHARED_FIT_RUNS * FIT_RUN_POINTS


def full_points(max_ctx: int = 2048) -> int:
    """Points of a full calibration of one block size (kvsim.calibrate.measure's and .steps' grids), with the shared ones."""
    from kvsim.calibrate import measure as M
    from kvsim.calibrate import steps as S
    from kvsim.graph_sizes import prefill_token_sizes
    g = {"batch": S.STEP_BATCH, "ctx": sorted({min(c, max_ctx) for c in S.STEP_CTX}), "spread": S.SPREAD_MAX,
         "prefill": prefill_token_sizes(min(S.GRAPH_PREFILL_MAX_TOKENS, max_ctx)), "attn_batch": M.BATCH,
         "attn_ctx": M.CTX, "pre_new": M.PREFILL_NEW, "pre_cached": M.PREFILL_CACHED, "copy": M.COPY_BLOCKS}
    from kvsim.calibrate import prefill_grids as PG
    mixed = len(S.MIX_DECODE) * len(S.MIX_CTX) * len(S.MIX_CHUNK)
    new, cached = PG.cached_axes(PG.PREFILL_CACHED_NEW, PG.PREFILL_CACHED_CTX, max_ctx)
    prefills = len(PG.PREFILL_BATCH_SEQS) * len(PG.PREFILL_BATCH_TOKENS) + len(new) * len(cached)
    return block_points(g) + mixed + prefills + shared_points()


def estimate_seconds(block_sizes: list[int], max_ctx: int = 2048, scale: float = 1.0) -> dict:
    """Estimated seconds of ``--fast`` over ``block_sizes`` (module doc): an estimate, to be measured."""
    per_point = _per_point(scale)
    per_block = {bs: block_points(grid_for(bs, max_ctx)) for bs in block_sizes}
    points = sum(per_block.values()) + shared_points()
    return {"seconds_per_point": per_point, "points_per_block": per_block, "shared_points": shared_points(),
            "points": points, "estimate_s": points * per_point,
            "basis": f"{FULL_B16_SECONDS:.0f} s / {full_points(BASIS_MAX_CTX)} points of a full block-16 calibration "
                     f"(OPT-13B, H200), x{scale:.2f} for the model's parameters; an estimate, to be measured"}


FITS_SECONDS = 40.0    # the step and prefill overhead fits' 14 engine runs (OPT-13B, H200, 2026-12-05: 23 + 18 s)


def full_grid_estimate(block_sizes: list[int], max_ctx: int = 2048, scale: float = 1.0) -> tuple[int, float]:
    """(timed points, estimated seconds) of a full calibration's grids over ``block_sizes``."""
    pts = (full_points(max_ctx) - shared_points()) * len(block_sizes) + shared_points()
    return pts, pts * _per_point(scale)


PROMPT_STEP_SHARE = 0.65
"""The share of a full block size's grid time spent on steps with prompt tokens, the steps ``--grid-idle``
idles before (OPT-13B, H200, calib_0413: prefill 30 s, batches and cached 42 s, mixed 65 s of 210 s)."""


def serving_fit_count(fast: bool, serving_fits: int | None, block_sizes: int = 1) -> int:
    """Block sizes with a serving fit: as asked (``--serving-block-sizes``), else every one of the ``block_sizes``
    for a full calibration and none for ``--fast``."""
    return (0 if fast else block_sizes) if serving_fits is None else int(serving_fits)


def estimate_total_s(block_sizes: list[int], fast: bool, max_ctx: int = 2048, grid_idle: float = 0.0,
                     scale: float = 1.0, serving_fits: int | None = None) -> float:
    """Estimated seconds of the whole calibration asked for: grids (``grid_idle`` adds that multiple of their
    prompt steps' share, at most: the idle gaps scale with each timed step), then (not ``--fast``) the fits'
    engine runs, and a serving fit at each of ``serving_fits`` block sizes."""
    idle = 1.0 + grid_idle * PROMPT_STEP_SHARE
    serving = SERVING_FIT_SECONDS * scale * serving_fit_count(fast, serving_fits, len(block_sizes))
    if fast:
        return estimate_seconds(block_sizes, max_ctx, scale)["estimate_s"] * idle + serving
    return full_grid_estimate(block_sizes, max_ctx, scale)[1] * idle + FITS_SECONDS * scale + serving


def time_limit_warning(block_sizes: list[int], fast: bool, time_limit_s: float | None, max_ctx: int = 2048,
                       grid_idle: float = 0.0, model: str | None = None,
                       serving_fits: int | None = None) -> str | None:
    """A warning when ``--time-limit`` is below the estimate: what will be cut and what to do instead."""
    total = estimate_total_s(block_sizes, fast, max_ctx, grid_idle, model_scale(model), serving_fits)
    if time_limit_s is None or total <= time_limit_s:
        return None
    return (f"warning: --time-limit {time_limit_s:g} s is under the estimate (~{total:.0f} s, from OPT-13B's on an "
            f"H200{_scaled(model)}): "
            "block sizes whose grids no longer fit are left out (meta.skipped_block_sizes) and the serving fit will "
            "be cut short, and the profile will say so (kvsim calibrate --resume completes the fit on the same card); "
            "or calibrate fewer block sizes per call and join them with kvsim merge-profiles")


def _scaled(model: str | None) -> str:
    from kvsim.catalogue import get_model
    return "" if model is None else f", x{model_scale(model):.2f} for {get_model(model).name}'s parameters"


def estimate_full_or_fast(block_sizes: list[int], fast: bool, max_ctx: int = 2048, grid_idle: float = 0.0,
                          model: str | None = None, serving_fits: int | None = None) -> str:
    """One line for ``kvsim calibrate --estimate``: the estimated time of the run asked for (``model``: scaled
    from OPT-13B's by :func:`model_scale`)."""
    scale = model_scale(model)
    if fast:
        e = estimate_seconds(block_sizes, max_ctx, scale)
        pts = e["points"]
    else:
        pts, seconds = full_grid_estimate(block_sizes, max_ctx, scale)
        e = {"estimate_s": seconds, "seconds_per_point": _per_point(scale)}
    line = (f"{'fast' if fast else 'full'} calibration of block sizes {','.join(map(str, block_sizes))}: {pts} timed "
            f"points x {e['seconds_per_point']:.2f} s = ~{e['estimate_s'] / 60:.1f} min (an estimate from the counts "
            f"of grid points and the full block-16 OPT-13B H200 calibration's {FULL_B16_SECONDS:.0f} s"
            f"{_scaled(model)}; to be measured)")
    if grid_idle:
        line += (f", up to ~{e['estimate_s'] * grid_idle * PROMPT_STEP_SHARE / 60:.1f} min more for --grid-idle "
                 f"{grid_idle:g}")
    n = serving_fit_count(fast, serving_fits, len(block_sizes))
    if n:            # the serving fit's engine runs come on top (kvsim.calibrate.serving_fit)
        each = f" at each of {n} block sizes" if n > 1 else ""
        line += (f", plus the fits' engine runs: the serving fit ~{SERVING_FIT_SECONDS * scale:.0f} s{each} "
                 f"(--time-limit caps it)")
    if not fast:
        line += f", the step and prefill overhead fits ~{FITS_SECONDS * scale:.0f} s"
    total = estimate_total_s(block_sizes, fast, max_ctx, grid_idle, scale, serving_fits)
    return line + f"; ~{total / 60:.1f} min in all"
