"""``kvsim calibrate`` command-line glue (imports torch only when run)."""
from __future__ import annotations

import argparse
import sys

from kvsim.errors import KvsimError

DTYPE_CHOICES = ("bf16", "fp16")
DEFAULT_GRID_IDLE = 1.0     # --grid-idle: an idle gap of the step's own length before each timed prompt step (an
#                             H100 ran long mixed steps 5-10% and prefills 11-15% faster after one than back to back,
#                             benchmarks/engine/results_H100/idle_swap_1206; serving runs them between decode steps)


def add_parser(sub) -> None:
    c = sub.add_parser("calibrate", help="measure a cost profile on this GPU (needs CUDA)")
    c.add_argument("--model", help="model to measure (required unless --resume)")
    c.add_argument("--block-sizes", default=None, help="comma-separated KV block sizes to measure (default 16)")
    c.add_argument("--dtype", default=None, choices=DTYPE_CHOICES, help="default fp16")
    c.add_argument("--out", help="profile path (default calibrate/profiles/<model>-<gpu>.json; with --resume, "
                                 "the resumed file)")
    c.add_argument("--resume", metavar="PROFILE",
                   help="keep PROFILE's grids and step overhead (a calibration stopped after them, or one whose "
                        "serving fit a time limit cut short) and run the serving fit and the prefill overhead fits "
                        "again, whole, on the same card and engine (kvsim/calibrate/resume.py)")
    c.add_argument("--allow-other-card", action="store_true",
                   help="with --resume: accept a card other than the one that measured the grids (recorded)")
    c.add_argument("--no-cuda-graphs", action="store_true",
                   help="time decode steps eagerly (for an engine run with runtime.cuda_graphs: false)")
    c.add_argument("--fast", action="store_true",
                   help="per block size only what depends on it, on reduced grids (dense for blocks <= 8), sharing "
                        "the block-free tables; for many block sizes in one call (kvsim/calibrate/fast.py)")
    c.add_argument("--serving-runs", metavar="DIR",
                   help="also keep the serving fit's engine runs here (DIR/n<N>/iterations.csv, requests.csv), "
                        "to refit on a CPU (kvsim.calibrate.serving_fit.load_runs)")
    c.add_argument("--time-limit", type=float, metavar="S",
                   help="seconds the whole calibration may take: a block size's grids start only when the time "
                        "left holds them and the fits after them (else it is left out, meta.skipped_block_sizes), "
                        "and the serving fit starts no run that would leave too little for the rest (skipped rows "
                        "are logged; the profile is still written)")
    c.add_argument("--grid-idle", type=float, default=None, metavar="X",
                   help=f"idle before each timed step with prompt tokens (prefill, mixed), X times the step's own "
                        f"time (default {DEFAULT_GRID_IDLE:g}; 0 times them back to back): back to back, compute-bound "
                        f"steps run at the card's power limit, below serving's clocks, 5-15%% slower on an H100 "
                        f"(benchmarks/engine/results_H100/idle_swap_1206); recorded as meta.grid_idle")
    c.add_argument("--swap-per-layer", action="store_true",
                   help="time swaps as one copy per layer, K/V and run of blocks (vLLM V0's way), for an engine run "
                        "with runtime.swap_staged: false (recorded as meta.swap_staged)")
    c.add_argument("--async-scheduling", action=argparse.BooleanOptionalAction, default=None,
                   help="the fits' engine runs with the host's next step overlapping the GPU's decode step (the "
                        "engine's default, runtime.async_scheduling: true), or, with --no-async-scheduling, stepped "
                        "one at a time, for an engine run with runtime.async_scheduling: false (recorded as "
                        "meta.async_scheduling)")
    c.add_argument("--split-kv", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed steps' few long decode rows cut into partitions in the grids and the fits' engine runs, "
                        "for an engine run with runtime.mixed_decode_split: true (default: the engine's, false; "
                        "recorded as meta.mixed_decode_split)")
    c.add_argument("--serving-block-sizes", default=None, metavar="LIST",
                   help="block sizes (of --block-sizes, or of the resumed profile) that get their own serving fit, "
                        "e.g. 1,16,128 for a block-size report checked on the engine at those sizes (default: every "
                        "one for a full calibration, none with --fast; --resume keeps the profile's; "
                        "kvsim/calibrate/serving_blocks.py)")
    c.add_argument("--estimate", action="store_true",
                   help="print the estimated time from the counts of grid points and exit (no GPU needed)")
    c.set_defaults(func=cmd_calibrate)


def cmd_resume(args) -> int:
    """``--resume PROFILE``: the file is checked before torch is imported (a wrong file fails at once)."""
    for flag, given in (("--block-sizes", args.block_sizes is not None), ("--fast", args.fast),
                        ("--estimate", args.estimate)):
        if given:
            raise KvsimError(flag, "not with --resume: a resumed calibration keeps the profile's grids and block "
                                   "sizes and runs only the fits after them")
    from kvsim.calibrate.merge import block_sizes
    from kvsim.calibrate.resume import load_for_resume
    from kvsim.calibrate.serving_blocks import parse_serving_sizes
    doc = load_for_resume(args.resume, args.model, args.dtype)
    serving_sizes = parse_serving_sizes(args.serving_block_sizes, [int(b) for b in block_sizes(doc)])
    try:
        import torch  # noqa: F401
        from kvsim.calibrate import measure as M
        from kvsim.calibrate.resume import resume
    except ImportError as e:
        raise KvsimError("calibrate", f"needs torch and triton (pip install -e '.[gpu]'): {e}") from None
    M.SWAP_STAGED = False if args.swap_per_layer else None     # a profile that timed per-layer swaps resumes so
    from kvsim.calibrate import engine_runs as ER
    ER.ASYNC_SCHEDULING = args.async_scheduling    # ... and an overlapped or stepped one as asked (None: default)
    _split_kv(ER, args.split_kv)
    path = resume(args.resume, args.out, "kvsim " + " ".join(sys.argv[1:]), model_name=args.model, dtype=args.dtype,
                  cuda_graphs=not args.no_cuda_graphs, serving_runs=args.serving_runs,
                  time_limit_s=args.time_limit, allow_other_card=args.allow_other_card, serving_sizes=serving_sizes)
    print(f"wrote {path}")
    return 0


def cmd_calibrate(args) -> int:
    if args.allow_other_card and args.resume is None:
        raise KvsimError("--allow-other-card", "only with --resume")
    if args.resume is None and not args.model:
        raise KvsimError("--model", "required (the model to measure), unless --resume PROFILE")
    from kvsim import limits
    from kvsim.cli import _int_list
    sizes = _int_list("16" if args.block_sizes is None else args.block_sizes, "--block-sizes", "8,16,32")
    bad = [b for b in sizes if not 1 <= b <= limits.MAX_BLOCK_SIZE]
    if bad:
        raise KvsimError("--block-sizes", f"got {bad[0]}; allowed: block sizes in [1, {limits.MAX_BLOCK_SIZE}]")
    if len(set(sizes)) < len(sizes):
        raise KvsimError("--block-sizes", f"got {args.block_sizes!r}: a block size given twice")
    if args.serving_runs is not None:
        from pathlib import Path
        if args.fast and args.serving_block_sizes is None:
            raise KvsimError("--serving-runs", "--fast makes no serving runs (a full calibration does, and --fast "
                                               "with --serving-block-sizes)")
        if Path(args.serving_runs).exists() and not Path(args.serving_runs).is_dir():
            raise KvsimError("--serving-runs", f"{args.serving_runs} exists and is not a directory")
    if args.time_limit is not None and not (args.time_limit > 0 and args.time_limit < float("inf")):
        raise KvsimError("--time-limit", f"must be a positive number of seconds, got {args.time_limit}")
    if args.grid_idle is not None and not 0.0 <= args.grid_idle <= 10.0:       # (NaN fails both)
        raise KvsimError("--grid-idle", f"must be a multiple of each call's time in [0, 10], got {args.grid_idle}")
    if args.grid_idle is not None and args.resume is not None:
        raise KvsimError("--grid-idle", "not with --resume: a resumed calibration keeps the profile's grids")
    if args.resume is not None:
        return cmd_resume(args)
    from kvsim.calibrate.serving_blocks import parse_serving_sizes
    serving_sizes = parse_serving_sizes(args.serving_block_sizes, sizes)
    args.grid_idle = DEFAULT_GRID_IDLE if args.grid_idle is None else args.grid_idle
    from kvsim.catalogue import get_model
    try:                    # the model named before anything needs a GPU (a typo says so on any machine)
        spec = get_model(args.model)
    except KvsimError as e:
        raise KvsimError("--model", e.message) from None
    if args.estimate:
        from kvsim.calibrate.fast import estimate_full_or_fast, time_limit_warning
        max_ctx = spec.max_seq_len
        fits = None if serving_sizes is None else len(serving_sizes)
        print(estimate_full_or_fast(sizes, args.fast, max_ctx, args.grid_idle, spec.name, fits))
        warn = time_limit_warning(sizes, args.fast, args.time_limit, max_ctx, args.grid_idle, spec.name, fits)
        if warn:
            print(warn)
        return 0
    try:
        from kvsim.calibrate import measure as M
        from kvsim.calibrate.profile import calibrate
    except ImportError as e:
        raise KvsimError("calibrate", f"needs torch and triton (pip install -e '.[gpu]'): {e}") from None
    M.GRID_IDLE = float(args.grid_idle)
    M.SWAP_STAGED = False if args.swap_per_layer else None
    from kvsim.calibrate import engine_runs as ER
    ER.ASYNC_SCHEDULING = args.async_scheduling    # None: the engine's default
    _split_kv(ER, args.split_kv)
    path = calibrate(args.model, sizes, args.out, args.dtype or "fp16", "kvsim " + " ".join(sys.argv[1:]),
                     cuda_graphs=not args.no_cuda_graphs, fast=args.fast, serving_runs=args.serving_runs,
                     time_limit_s=args.time_limit, serving_sizes=serving_sizes)
    print(f"wrote {path}")
    return 0


def _split_kv(ER, asked: bool | None) -> None:
    """The fits' engine runs (``runtime.mixed_decode_split``) and the grids (``varlen_decode.SPLIT``) alike."""
    from kvsim.kernels import varlen_decode
    ER.MIXED_DECODE_SPLIT = asked
    varlen_decode.SPLIT = ER.mixed_decode_split()
