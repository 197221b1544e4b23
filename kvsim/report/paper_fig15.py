"""Fig. 15: where the KV saved by sharing comes from, measured on the workload and the beam model.

Parallel sampling shares only the prompt's whole blocks (the partial last block is copied on the first
write), so on a step where each of ``n`` samples holds ``P + t`` token slots the saving is
``(n - 1) * S / (n * C(P + t))`` with ``S = floor(P / block) * block`` and ``C(x) = ceil(x / block) * block``
the slots of the blocks a sequence holds (the simulator's ``sharing_saved_frac`` counts block slots, not
tokens). Weighting every decode step of every request equally (``t = 0 .. O - 1``: the KV grows from
the prompt to its final ``P + O - 1`` slots) gives the workload's *prompt share*

    x = sum_r O_r * S_r / sum_r sum_t C(P_r + t)

(:func:`prompt_share`, from the scenario's own sampled lengths, no simulation) and the saving
``(n - 1) / n * x`` (:func:`parallel_saving`). Read backwards, a stated saving at width ``n`` implies
``x = saving * n / (n - 1)`` (:func:`implied_share`), so the paper's 6.1% (n = 2) and 9.8% (n = 6)
can be set beside the workload's ``x``.

Beam search also shares the output history that beams inherit from each other; how much is set by the
beam model's ``engine.beam_keep_prob`` (an assumption, not a measurement), so :func:`beam_keep_grid`
lists the values :mod:`kvsim.paper` sweeps to show how much the beam saving depends on it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

BEAM_KEEP_PROBS = [0.25, 0.5, 0.75]          # the default 0.5 and one step either side
BEAM_KEEP_WIDTH = 6


def prompt_share(prompt_lens, output_lens, block: int) -> float:
    """Share of a sequence's KV blocks' slots in whole prompt blocks, every decode step weighted equally."""
    p = np.asarray(prompt_lens, dtype=np.float64)
    o = np.asarray(output_lens, dtype=np.float64)
    if p.shape != o.shape or len(p) == 0 or block < 1:
        raise ValueError("prompt_share needs equal-length, non-empty length arrays and block >= 1")
    shared = np.floor(p / block) * block
    den = (_block_slots(p + o - 1, block) - _block_slots(p - 1, block)).sum()
    return float((o * shared).sum() / den) if den > 0 else 0.0


def _block_slots(n: np.ndarray, block: int) -> np.ndarray:
    """``sum_{x=1..n} ceil(x / block) * block``: the block-rounded slots of sequences of 1 .. n tokens."""
    q, r = np.floor(n / block), np.mod(n, block)
    return block * block * q * (q + 1) / 2 + r * (q + 1) * block


def parallel_saving(share: float, n: int) -> float:
    """KV saved by ``n`` samples sharing the prompt blocks, given the prompt share."""
    return (n - 1) / n * share if n >= 1 else 0.0


def implied_share(saving: float, n: int) -> float:
    """The prompt share that a saving at width ``n`` implies (inverse of :func:`parallel_saving`)."""
    return saving * n / (n - 1) if n > 1 else float("nan")


def workload_share(scenario, overrides: list[str]) -> dict:
    """Prompt share of ``scenario``'s sampled requests (with ``overrides``), its block size and length means."""
    from kvsim.build import setup_run
    from kvsim.config import load_scenario
    s = setup_run(load_scenario(scenario, list(overrides)), simulator=False)
    p = np.array([r.prompt_len for r in s.requests])
    o = np.array([r.output_len for r in s.requests])
    b = s.scenario.engine.block_size
    return {"share": prompt_share(p, o, b), "block_size": b, "mean_prompt": float(p.mean()),
            "mean_output": float(o.mean()), "prompt_ge_block_frac": float((p >= b).mean()),
            "requests": int(len(p))}


def fig15_table(widths, share: dict, measured: pd.Series) -> pd.DataFrame:
    """Per width: the simulated saving beside the prompt-share prediction."""
    rows = [{"n": int(n), "simulated": float(measured[n]), "predicted": parallel_saving(share["share"], int(n)),
             "implied_share": implied_share(float(measured[n]), int(n))} for n in widths if n in measured.index]
    return pd.DataFrame(rows).assign(**{k: v for k, v in share.items()})


def beam_keep_grid() -> dict:
    """The sweep grid of the beam model's keep probability (see module doc)."""
    return {"engine.beam_keep_prob": BEAM_KEEP_PROBS, "workload.beam_width": [BEAM_KEEP_WIDTH]}
