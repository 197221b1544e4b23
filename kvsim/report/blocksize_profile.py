"""The block-size report priced from a measured profile (``kvsim report block-size --profile P``).

With a profile, every block size the profile holds is simulated with the calibrated cost model
(``cost.model: calibrated``, ``cost.profile: P``): the simulator gives fragmentation and batch size, the
profile the kernel, copy and swap times measured on the card at that block size. Block sizes the
profile lacks are listed as not measured; they are not priced by the roofline behind the user's back.

Which effect decides, per block size ``B``, comes from a counterfactual run: the same search with a
*reference* profile in which ``B``'s kernel tables (decode / prefill attention, whole decode, prefill
and mixed steps) are the reference block's (16 when measured, else the smallest measured) and its copy
and swap curves are the reference block's per token (``n`` blocks of ``B`` cost what ``n x B / ref``
blocks of the reference cost). That run differs from the reference block only through memory
(fragmentation, hence batch size), and from the calibrated run at ``B`` only through the card's
block-size-dependent costs. So between the recommended block ``p`` and another ``o``::

    log(rate(p) / rate(o)) = log(mem(p) / mem(o))                            memory: fragmentation, batch
                           + log(rate(p) / mem(p)) - log(rate(o) / mem(o))    card: kernel, copy, swap cost

with ``mem(B)`` the counterfactual rate; the larger term (in magnitude) decides.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from kvsim.errors import KvsimError

KERNEL_TABLES = ("decode_attn", "prefill_attn", "decode_step", "decode_spread_step", "prefill_step", "mixed_step")
TRANSFER_TABLES = ("copy_block", "swap")


def load_checked(path: str, model: str, dtype: str, gpu: str) -> dict:
    """The profile JSON at ``path``, checked against the scenario (KvsimError naming the field)."""
    from kvsim.catalogue import get_model
    from kvsim.cost.profile_card import card_matches, chip_key
    from kvsim.cost.profile import Profile
    from kvsim.textio import read_json
    doc = read_json(path, "--profile", "profile JSON file (kvsim calibrate)")
    try:
        prof = Profile(doc, str(path))
        measured = get_model(prof.model).name     # a model the catalogue lacks is the profile's fault
    except KvsimError as e:
        raise KvsimError("--profile", e.message if e.field == "profile" else f"{path}: {e}") from None
    if measured != get_model(model).name:
        raise KvsimError("model", f"the scenario's model is {model}, {path} was measured for {prof.model}")
    if prof.dtype != dtype:
        raise KvsimError("dtype", f"the scenario uses {dtype}, {path} was measured in {prof.dtype}")
    card = str(prof.meta.get("gpu", ""))
    same = card_matches(card, gpu)      # the catalogue card where it knows it (as kvsim run checks), else the chip
    if same is False or same is None and chip_key(card) != chip_key(gpu):
        raise KvsimError("gpu", f"the scenario's GPU is {gpu}, {path} was measured on {card!r}; "
                                "--set gpu=... to the card it was measured on")
    return doc


def split_sizes(doc: dict, sizes: list[int]) -> tuple[list[int], list[int]]:
    """(measured, not measured) among ``sizes``: a block size needs decode and prefill tables."""
    have = {int(b) for b in doc["decode_attn"]} & {int(b) for b in doc["prefill_attn"]}
    return [b for b in sizes if b in have], [b for b in sizes if b not in have]


def reference_block(measured: list[int]) -> int:
    return 16 if 16 in measured else min(measured)


def reference_profile(doc: dict, ref: int, sizes: list[int]) -> dict:
    """``doc`` with every size's kernel tables the reference block's, transfers per token (module doc)."""
    out = json.loads(json.dumps(doc))
    r = str(ref)
    for key in KERNEL_TABLES:
        if r in out.get(key, {}):
            for b in sizes:
                out[key][str(b)] = out[key][r]
    for key in TRANSFER_TABLES:
        if r in out.get(key, {}):
            src = out[key][r]
            for b in sizes:
                out[key][str(b)] = dict(src, blocks=[x * ref / b for x in src["blocks"]])
    out["meta"] = dict(out["meta"], note=f"counterfactual: every block size priced with block {ref}'s kernels "
                                         f"(kvsim report block-size --profile)")
    return out


def write_reference(doc: dict, ref: int, sizes: list[int], folder: Path) -> Path:
    path = Path(folder) / f"reference-b{ref}.json"
    path.write_text(json.dumps(reference_profile(doc, ref, sizes)))
    return path


def attribute(rates: dict[int, float | None], mem_rates: dict[int, float | None], pick: int | None
              ) -> tuple[list[dict], str]:
    """Per block size, the log-rate gap to ``pick`` split into memory and card terms, and the sentence
    saying which decides (module doc). Sizes without a rate in both runs get no split."""
    rows = []
    if pick is None or not rates.get(pick) or not mem_rates.get(pick):
        return rows, "no attribution: the recommended block size has no rate in both runs"
    for b in sorted(rates):
        r, m = rates.get(b), mem_rates.get(b)
        row = {"block_size": b, "rate_req_s": r, "memory_only_rate_req_s": m,
               "card_effect": (r / m - 1) if r and m else None}
        if b != pick and r and m:
            row["gap_to_pick"] = math.log(rates[pick] / r)
            row["memory_term"] = math.log(mem_rates[pick] / m)
            row["card_term"] = row["gap_to_pick"] - row["memory_term"]
            row["decides"] = "memory" if abs(row["memory_term"]) >= abs(row["card_term"]) else "card"
        rows.append(row)
    split = [x for x in rows if "decides" in x]
    if not split:
        return rows, "no other block size has a rate in both runs to compare with"
    words = []
    for x in split:
        why = ("fragmentation / batch size (memory)" if x["decides"] == "memory"
               else "the card's kernel, copy and swap cost at this block size")
        words.append(f"vs block {x['block_size']} ({x['rate_req_s']:.3g} req/s, {-x['gap_to_pick']:+.1%} in log "
                     f"rate): memory {-x['memory_term']:+.1%}, card {-x['card_term']:+.1%} -> {why} decides")
    votes = [x["decides"] for x in split]
    mem, card = votes.count("memory"), votes.count("card")
    if mem == card:       # a tie is said as one (no side picked by the order a set happens to iterate in)
        head = f"memory and the card each decide against {mem} of {len(votes)} alternatives"
    else:
        head = ("memory (fragmentation and the batch it allows)" if mem > card
                else "the card (measured kernel, copy and swap cost per block size)")
        head += f" decides against {max(mem, card)} of {len(votes)} alternatives"
    return rows, f"{head}: " + "; ".join(words)
