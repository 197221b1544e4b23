"""Serving fits at more than one block size (``kvsim calibrate --serving-block-sizes``).

A full calibration runs its serving fit (:mod:`kvsim.calibrate.serving_fit`: real engine runs of serving-shaped
batches, the decode and lone-prefill steps' extra over the grid price) at every block size it measures, the fit
block size (:func:`kvsim.calibrate.profile.fit_block_size`, 16 when measured) first, and ``--fast`` runs none
(until 2026-12-07 a full one ran it at the fit block size alone). Decode steps at a
block size without its own fit are priced with the lock-step step overhead made non-decreasing, which the H100
block-size engine check of 2026-12-06 found 4.1-4.6% high at blocks 16 and 128 against serving runs
(``benchmarks/blocksize/H100/README.md``); and one block size's fit does not carry over to another: the H200
holdouts at block 64 (h02, h04, h05), priced with block 16's fit copied to 64, went from +1.1 / +3.4 / −1.4% to
+7.5 / +10.0 / +7.2% on mean latency (the fit's terms are measured against its own block size's grids). So a
block size gets its own fit, and ``--serving-block-sizes 1,16,128`` picks the ones that do (a ``--fast``
calibration for a block-size report checked on the engine at those sizes): it runs the fit at each, after the fit block size's stages, each through its own engine parts (one KV cache at that block size),
its runs kept under ``--serving-runs DIR/b<bs>``. What a time limit cuts is recorded per block size
(``meta.serving_fit_skipped_at``), as the fit block size's is (``meta.serving_fit_skipped``)."""
from __future__ import annotations

from pathlib import Path

from kvsim.errors import KvsimError

LAST_RUN_S = 10.0     # a serving fit run after every other stage starts only this long before the time limit


def parse_serving_sizes(text: str | None, block_sizes: list[int]) -> list[int] | None:
    """The block sizes whose serving fit runs: ``text`` ("1,16,128"), each one of ``block_sizes``; None when not
    given (the default: every block size for a full calibration, none for ``--fast``; a resumed one keeps the
    profile's ``meta.serving_block_sizes``)."""
    if text is None:
        return None
    from kvsim.cli import _int_list
    sizes = _int_list(text, "--serving-block-sizes", "1,16,128")
    missing = [b for b in sizes if b not in block_sizes]
    if missing:
        raise KvsimError("--serving-block-sizes", f"got {missing[0]}: not one of the calibration's block sizes "
                                                  f"({','.join(map(str, block_sizes))})")
    if len(set(sizes)) < len(sizes):
        raise KvsimError("--serving-block-sizes", f"got {text!r}: a block size given twice")
    return sizes


def serving_fit_once(model, prof: dict, bs: int, *, parts, device: str = "cuda", cuda_graphs: bool = True,
                     save_dir=None, deadline: float | None = None, log=print) -> tuple[dict, dict, dict | None,
                                                                                        str | None]:
    """One serving fit at block size ``bs`` (:func:`kvsim.calibrate.serving_fit.fit_serving`): ``(decode_serving,
    prefill_serving, what a time limit cut or None, why it failed or None)``; a fit that fails gives empty tables
    (they are optional: the profile then prices that block size without them)."""
    from kvsim.calibrate.serving_fit import fit_serving
    notes: dict = {}
    try:
        decode, prefill = fit_serving(model, prof, bs, device=device, cuda_graphs=cuda_graphs, log=log,
                                      save_dir=save_dir, deadline=deadline, notes=notes, parts=parts)
    except (RuntimeError, ValueError, KeyError, IndexError, KvsimError) as e:
        return {}, {}, None, f"{type(e).__name__}: {e}".splitlines()[0][:300]
    return decode, prefill, notes.get("serving_fit_skipped"), None


def fit_serving_at(model, prof: dict, sizes: list[int], path: Path, *, device: str = "cuda",
                   cuda_graphs: bool = True, serving_runs: str | None = None, deadline: float | None = None,
                   log=print, write=None) -> None:
    """The serving fit at each of ``sizes`` (not the fit block size, whose fit :func:`fit_after_grids` runs) into
    ``prof["decode_serving"][bs]`` and ``prof["prefill_serving"][bs]``, the profile written after each
    (``write(prof, path)``). A fit that fails or finds too few steps leaves its block size priced as without it,
    and says so in ``meta``; ``deadline``: no run starts after it."""
    from kvsim.calibrate.engine_runs import calibration_parts
    meta = prof["meta"]
    for bs in sizes:
        parts = calibration_parts(prof, bs, device, overhead=False, serving=True)
        save = None if serving_runs is None else str(Path(serving_runs) / f"b{bs}")
        try:
            decode, prefill, cut, error = serving_fit_once(model, prof, bs, parts=parts, device=device,
                                                           cuda_graphs=cuda_graphs, save_dir=save,
                                                           deadline=deadline, log=log)
        finally:
            parts.drop()               # its KV cache and graphs: the next block size builds its own
        if error:
            meta.setdefault("serving_fit_error_at", {})[str(bs)] = error
            log(f"serving fit at block size {bs} failed: {error}")
        if decode:
            prof.setdefault("decode_serving", {})[str(bs)] = decode
        if prefill:
            prof.setdefault("prefill_serving", {})[str(bs)] = prefill
        if cut:
            meta.setdefault("serving_fit_skipped_at", {})[str(bs)] = cut
        meta.setdefault("serving_block_sizes", [])
        if decode and bs not in meta["serving_block_sizes"]:
            meta["serving_block_sizes"].append(bs)
        if write is not None:
            write(prof, path)


def more_serving_fits(model, prof: dict, fit_bs: int, sizes: list[int], path: Path, *, device: str = "cuda",
                      cuda_graphs: bool = True, serving_runs: str | None = None, deadline: float | None = None,
                      log=print, write=None) -> None:
    """Record which block sizes have their own serving fit (``meta.serving_block_sizes``: the fit block size's,
    run by ``fit_after_grids``, if it gave one) and run it at the ``sizes`` other than ``fit_bs``
    (:func:`fit_serving_at`)."""
    prof["meta"]["serving_block_sizes"] = [fit_bs] if str(fit_bs) in (prof.get("decode_serving") or {}) else []
    more = [b for b in sizes if b != fit_bs]
    if more:
        fit_serving_at(model, prof, more, path, device=device, cuda_graphs=cuda_graphs, serving_runs=serving_runs,
                       deadline=deadline, log=log, write=write)
