"""Merge profiles of one model on one card measured at different block sizes (``kvsim merge-profiles``).

Calibrating OPT-13B takes ~3.5 minutes per block size on an H200, so block sizes are often measured in
separate device calls. Their block-keyed tables (``decode_attn``, ``prefill_attn``, ``copy_block``,
``swap`` and the ``*_step`` grids, keyed ``"16"``, ``"32"``, ...) can be joined into one profile when both
were measured on the same card, model, precision and engine mode. "The same card" is the physical card where
both profiles name it (their reference steps' ``gpu_uuid``): two lent H200s differ by several percent in step
time and host work, so a profile whose block sizes come from two of them is refused unless asked for
(``--allow-other-card``, recorded in ``meta.merged``). Each profile's reference step per block size
(``meta.reference_step``) is kept with its block size. The tables without a block size
(``linear``, ``layer_other``, ``lm_head``, ``step_overhead``) are the first profile's; every later
measurement is recorded in ``meta.merged`` (its block sizes, date, commit and command), so the file still
says where each number came from. Overlapping block sizes are refused: one measurement per key.
"""
from __future__ import annotations

import json
from pathlib import Path

from kvsim.errors import KvsimError

MUST_MATCH = ("format", "version", "model", "dtype", "num_layers")
META_MUST_MATCH = ("gpu", "cuda_graphs", "fused_layer_ops", "prefill_ladder", "prefill_route", "mixed_decode_kernel",
                   "async_scheduling", "swap_staged", "async_prompt_steps", "pad_logits", "mixed_decode_split")
# keys older profiles lack: LEGACY_ENGINE_MODE's
META_DEFAULT_KEYS = ("async_scheduling", "prefill_route", "async_prompt_steps", "pad_logits", "mixed_decode_split")


def _meta_defaults() -> dict:
    from kvsim.cost.profile import LEGACY_ENGINE_MODE     # (numpy: imported when merging, not for the CLI's parser)
    return {k: LEGACY_ENGINE_MODE[k] for k in META_DEFAULT_KEYS}


def block_keyed(doc: dict) -> list[str]:
    """Names of the tables keyed by block size (objects whose keys are all integers as strings)."""
    from kvsim.cost.profile import block_size_key     # (numpy: imported when merging, not for the CLI's parser)
    return [k for k, v in doc.items()
            if isinstance(v, dict) and v and k != "meta" and all(block_size_key(x) is not None for x in v)]


def block_sizes(doc: dict) -> list[int]:
    """Block sizes a profile holds (those of its ``decode_attn`` table, which every profile has); a key that is
    not a block size is a KvsimError naming ``decode_attn`` (a profile checked by
    :class:`kvsim.cost.profile.Profile` has none)."""
    from kvsim.cost.profile import block_size_key
    table = doc.get("decode_attn")
    if not isinstance(table, dict):
        return []
    bad = [k for k in table if block_size_key(k) is None]
    if bad:
        raise KvsimError("decode_attn", f"block size {bad[0]!r} is not a whole number >= 1")
    return sorted(int(b) for b in table)


def check_profile(doc, path: str, field: str) -> dict:
    """``doc`` (the JSON at ``path``) checked to be a well-formed profile (:class:`kvsim.cost.profile.Profile`);
    a one-line KvsimError naming ``field`` and the file's offending key otherwise."""
    from kvsim.cost.profile import Profile
    try:
        Profile(doc, str(path))
    except KvsimError as e:
        raise KvsimError(field, e.message if e.field == "profile" else f"{path}: {e}") from None
    return doc


def _meta(doc: dict) -> dict:
    meta = doc.get("meta")
    return meta if isinstance(meta, dict) else {}


def card_uuids(doc: dict) -> set[str]:
    """The physical cards (GPU UUIDs) a profile's reference steps were timed on (empty for older profiles)."""
    ref = _meta(doc).get("reference_step")
    if not isinstance(ref, dict):
        return set()
    return {str(r["gpu_uuid"]) for r in ref.values() if isinstance(r, dict) and r.get("gpu_uuid")}


def merge_profiles(base: dict, extra: dict, *, name: str = "profile", allow_other_card: bool = False) -> dict:
    """``base`` with ``extra``'s block sizes added (see module doc). Raises KvsimError naming the field."""
    for key in MUST_MATCH:
        if base.get(key) != extra.get(key):
            raise KvsimError(key, f"{name}: {extra.get(key)!r} differs from the first profile's {base.get(key)!r}; "
                                  "only profiles of one model, precision and format merge")
    bm, em, defaults = _meta(base), _meta(extra), _meta_defaults()
    for key in META_MUST_MATCH:
        if bm.get(key, defaults.get(key)) != em.get(key, defaults.get(key)):
            raise KvsimError(f"meta.{key}", f"{name}: {em.get(key)!r} differs from the first profile's "
                                            f"{bm.get(key)!r}; a profile holds one card and one engine mode")
    mine, theirs = card_uuids(base), card_uuids(extra)
    other_card = bool(mine and theirs and not mine & theirs)
    if other_card and not allow_other_card:
        raise KvsimError("meta.reference_step", f"{name}: measured on {', '.join(sorted(theirs))}, the first profile "
                                                f"on {', '.join(sorted(mine))}; lent cards of one model differ by "
                                                "several percent: calibrate the block sizes in one call on one card, "
                                                "or pass --allow-other-card")
    overlap = sorted(set(block_sizes(base)) & set(block_sizes(extra)))
    if overlap:
        raise KvsimError("block_size", f"{name}: block size(s) {', '.join(map(str, overlap))} are in both "
                                       "profiles; keep one measurement per block size")
    out = json.loads(json.dumps(base))
    for key in block_keyed(extra):
        out.setdefault(key, {}).update(extra[key])
    if isinstance(em.get("reference_step"), dict):      # each block size's card speed, with its block size
        ref = out["meta"].get("reference_step")
        out["meta"]["reference_step"] = {**(ref if isinstance(ref, dict) else {}), **em["reference_step"]}
    merged = list(out["meta"].get("merged", []))
    merged.append({"block_sizes": block_sizes(extra),
                   **{k: em.get(k) for k in ("date", "git_commit", "command", "driver", "torch", "triton")},
                   **({"other_card": sorted(theirs)} if other_card else {})})
    out["meta"]["merged"] = merged
    out["meta"]["block_sizes_first"] = block_sizes(base)
    return out


def check_out(out: str) -> Path:
    """``--out`` for the merged profile: a new file, or an existing kvsim profile (replaced); never a folder or
    another file (one-line KvsimError naming --out)."""
    from kvsim.textio import read_json
    if not str(out).strip():
        raise KvsimError("--out", "empty path; give the merged profile's file name (e.g. merged.json)")
    path = Path(out)
    try:
        present = path.exists() or path.is_symlink()
        folder = path.is_dir()
    except OSError as e:                # e.g. a name longer than the file system allows
        raise KvsimError("--out", f"cannot use {str(out)[:60]}: {e.strerror or e}") from None
    if folder:
        raise KvsimError("--out", f"{out} is a folder; give the merged profile's file name")
    if present:
        try:
            doc = read_json(path, "--out", "profile JSON file")
        except KvsimError:
            doc = None
        from kvsim.cost.profile import FORMAT
        if not (isinstance(doc, dict) and doc.get("format") == FORMAT):
            raise KvsimError("--out", f"{out} exists and is not a kvsim profile; merge-profiles replaces only a "
                                      "profile, so give a new file name")
    return path


def cmd_merge(args) -> int:
    from kvsim.textio import read_json
    out_path = check_out(args.out)              # before any reading: a bad --out fails at once
    docs = []
    for p in args.profiles:
        doc = read_json(p, "profiles", "profile JSON file (kvsim calibrate)")
        if not isinstance(doc, dict) or not isinstance(doc.get("decode_attn"), dict) or not doc["decode_attn"]:
            raise KvsimError("profiles", f"{p}: not a kvsim profile (no decode_attn table keyed by block size)")
        docs.append(check_profile(doc, p, "profiles"))
    out = docs[0]
    for p, doc in zip(args.profiles[1:], docs[1:]):
        out = merge_profiles(out, doc, name=p, allow_other_card=args.allow_other_card)
    from kvsim.outdir import write_text
    write_text(out_path, json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}: {out.get('model')} block sizes {', '.join(map(str, block_sizes(out)))}")
    return 0


def add_parser(sub) -> None:
    m = sub.add_parser("merge-profiles", help="join profiles of one model and card measured at different block sizes")
    m.add_argument("profiles", nargs="+", help="profile JSON files (the first one's block-free tables are kept)")
    m.add_argument("--out", required=True, help="merged profile path")
    m.add_argument("--allow-other-card", action="store_true",
                   help="merge block sizes timed on another physical card (different GPU UUID; recorded in meta.merged)")
    m.set_defaults(func=cmd_merge)
