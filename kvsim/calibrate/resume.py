"""``kvsim calibrate --resume PROFILE``: run again the stages after a profile's grids, on the card that measured them.

A full calibration of a 13B model takes about ten minutes on an H200 (OPT-13B: grids 266 s, the serving fit's
engine runs ~4 min in two passes, the prefill overhead fits ~70 s), longer than many job or device-call limits.
:func:`kvsim.calibrate.profile.calibrate` writes the profile once its grids and ``step_overhead`` are measured
(``meta.partial``), and ``--time-limit`` skips serving runs that would not fit. ``--resume`` keeps everything the
profile measured up to there (grids, per-layer tables, sampling, ``step_overhead``, the reference step) and runs
every stage after it again, whole: the serving fit at all its rows and passes, then the busy and idle prefill
overhead fits (:func:`kvsim.calibrate.profile.fit_after_grids`).

Those stages time the real engine *against the grids*, so they are only meaningful on the physical card and the
engine that measured the grids: the card is checked by GPU UUID (``meta.reference_step``; lent cards of one
model differ by several percent), the engine by the profile's engine-mode fields
(:func:`kvsim.calibrate.profile.engine_mode`). A mismatch is refused on one line naming the field;
``--allow-other-card`` accepts another card and records it. ``meta.resumed`` keeps each resume's date, command,
card and seconds. The checks on the file run before torch is imported, so a wrong file fails at once.
"""
from __future__ import annotations

import datetime
import time
from pathlib import Path

from kvsim.cost.profile import LEGACY_ENGINE_MODE as LEGACY_MODE
from kvsim.errors import KvsimError

FITTED_AFTER_GRIDS = ("decode_serving", "prefill_serving", "prefill_overhead", "wake_overhead")
NEEDED = ("step_overhead", "decode_attn", "decode_step", "prefill_step", "linear", "lm_head")


def load_for_resume(path: str, model: str | None = None, dtype: str | None = None) -> dict:
    """The profile at ``path``, checked to be one ``--resume`` can finish (one-line KvsimError otherwise)."""
    from kvsim.calibrate.merge import block_sizes, check_profile
    from kvsim.catalogue import get_model
    from kvsim.cost.calibrated import FORMAT
    from kvsim.textio import read_json
    doc = read_json(path, "--resume", "profile JSON file (kvsim calibrate)")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("meta"), dict):
        raise KvsimError("--resume", f"{path}: not a profile written by kvsim calibrate")
    missing = [k for k in NEEDED if not doc.get(k)]
    if missing:
        raise KvsimError("--resume", f"{path}: has no {', '.join(missing)}; only a profile whose grids and step "
                                     "overhead were measured can be resumed (run kvsim calibrate)")
    if doc["meta"].get("fast"):
        raise KvsimError("--resume", f"{path}: a --fast profile has no serving fit to run again")
    # every table kept well-formed, block sizes whole numbers (the fits after the grids are measured again, whole)
    check_profile({k: v for k, v in doc.items() if k not in FITTED_AFTER_GRIDS}, path, "--resume")
    if not block_sizes(doc):
        raise KvsimError("--resume", f"{path}: its decode_attn table names no block size")
    if model is not None and get_model(model).name != doc.get("model"):
        raise KvsimError("--model", f"{model!r} is not the profile's model {doc.get('model')!r} "
                                    "(leave --model out: --resume takes the profile's)")
    if dtype is not None and dtype != doc.get("dtype"):
        raise KvsimError("--dtype", f"{dtype!r} is not the profile's {doc.get('dtype')!r}")
    return doc


def check_engine_mode(doc: dict, now: dict) -> None:
    """The engine that would run the fits now is the one that measured the grids, field by field."""
    meta = doc["meta"]
    for key, value in now.items():
        then = meta.get(key, LEGACY_MODE.get(key))
        if then != value:
            hint = " or --swap-per-layer" if key == "swap_staged" and not then else \
                (" or --async-scheduling" if then else " or --no-async-scheduling") if key == "async_scheduling" \
                else ""
            raise KvsimError(f"meta.{key}", f"the profile was measured with {key}={then!r}, this engine runs "
                                            f"{value!r}; its grids and fresh fits would describe different "
                                            f"engines (calibrate again{hint})")


def check_card(doc: dict, block_size: int, uuid: str | None, allow_other_card: bool = False) -> str | None:
    """None when ``uuid`` is the card of the profile's reference step at ``block_size``; the profile's card
    when another one is allowed; otherwise a one-line KvsimError naming ``meta.reference_step``."""
    steps = doc["meta"].get("reference_step")
    ref = steps.get(str(block_size)) if isinstance(steps, dict) else None
    theirs = ref.get("gpu_uuid") if isinstance(ref, dict) else None
    if theirs and uuid and theirs == uuid:
        return None
    if allow_other_card:
        return str(theirs or "unknown")
    why = (f"its grids were measured on {theirs}, this is {uuid or 'a card without a UUID'}" if theirs else
           "it does not record which card measured its grids")
    raise KvsimError("meta.reference_step", f"cannot resume: {why}; the fits time the engine against the grids, "
                                            "so run them on the same card (or pass --allow-other-card)")


def resume(path: str, out: str | None, command: str, *, model_name: str | None = None, dtype: str | None = None,
           cuda_graphs: bool = True, serving_runs: str | None = None, time_limit_s: float | None = None,
           allow_other_card: bool = False, device: str = "cuda", serving_sizes: list[int] | None = None) -> Path:
    """Run the stages after the grids of the profile at ``path`` again and write it to ``out`` (default:
    ``path``). Returns the path written. ``serving_sizes``: block sizes that get their own serving fit besides
    the fit block size's (default: those the profile had, ``meta.serving_block_sizes``)."""
    from kvsim.calibrate.merge import block_sizes
    doc = load_for_resume(path, model_name, dtype)
    import torch

    from kvsim.calibrate import measure as M
    from kvsim.calibrate.profile import (DTYPES, RESERVE_AFTER_SERVING_S, engine_mode, fit_after_grids,
                                         fit_block_size, write_profile)
    from kvsim.calibrate.serving_blocks import LAST_RUN_S, more_serving_fits
    from kvsim.catalogue import get_model
    from kvsim.engine.models import build_model
    from kvsim.engine.reference_step import gpu_uuid
    if device == "cuda" and not torch.cuda.is_available():
        raise KvsimError("calibrate", "needs a CUDA GPU (run it on the GPU machine)")
    t0 = time.perf_counter()
    bs = fit_block_size(block_sizes(doc))
    card = gpu_uuid(device) if device == "cuda" else None
    other = check_card(doc, bs, card, allow_other_card)
    model = build_model(get_model(doc["model"]), dtype=DTYPES[doc["dtype"]], device=torch.device(device),
                        weights="dummy")
    check_engine_mode(doc, engine_mode(model, cuda_graphs))
    for key in FITTED_AFTER_GRIDS:        # measured again, whole; nothing of the old fits is kept
        doc.pop(key, None)
    if serving_sizes is None:
        had = doc["meta"].get("serving_block_sizes")
        serving_sizes = [b for b in had if isinstance(b, int) and b in block_sizes(doc)] if isinstance(had, list) \
            else [bs]
    for key in ("serving_fit_error", "serving_fit_skipped", "partial", "serving_fit_error_at",
                "serving_fit_skipped_at", "serving_block_sizes"):
        doc["meta"].pop(key, None)
    dest = Path(out) if out else Path(path)
    M._log(f"resuming {path} at block size {bs}: the serving fit and the prefill overhead fits")
    deadline = None if time_limit_s is None else t0 + time_limit_s - RESERVE_AFTER_SERVING_S
    fit_after_grids(model, doc, bs, dest, device=device, cuda_graphs=cuda_graphs, serving_runs=serving_runs,
                    deadline=deadline)
    more_serving_fits(model, doc, bs, serving_sizes, dest, device=device, cuda_graphs=cuda_graphs,
                      serving_runs=serving_runs, log=M._log, write=write_profile,
                      deadline=None if time_limit_s is None else t0 + time_limit_s - LAST_RUN_S)
    doc["meta"].setdefault("resumed", []).append({
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "command": command,
        "gpu_uuid": card, "seconds": round(time.perf_counter() - t0, 1),
        **({"other_card": other} if other is not None else {})})
    write_profile(doc, dest)
    M._log(f"wrote {dest} in {time.perf_counter() - t0:.1f} s")
    return dest
