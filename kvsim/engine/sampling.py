"""Sampling: greedy, temperature/top-p, parallel samples and beam search.

Beam search keeps ``k`` beams ranked by cumulative log-probability; each step
the ``k`` best continuations over all beams survive (no length penalty, no EOS:
every beam has the workload's output length). The parents it returns feed the
scheduler's ``complete_step(beam_parents=...)`` so the block manager forks and
frees exactly as the sampler decided.
"""
from __future__ import annotations

import torch


def sample_rows(logits: torch.Tensor, mode: str, temperature: float, top_p: float,
                generator: torch.Generator | None) -> list[int]:
    """One token per row of ``logits`` ``[N, V]`` (float32)."""
    if mode == "greedy":
        return logits.argmax(dim=-1).tolist()
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, idx = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(dim=-1) - sorted_p < top_p
        sorted_p = sorted_p * keep
        probs = torch.zeros_like(probs).scatter_(-1, idx, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1).tolist()


def beam_first_step(logits: torch.Tensor, k: int) -> tuple[list[int], list[float]]:
    """After the prompt: the ``k`` best first tokens (all beams share the prompt). ``logits`` is ``[V]``."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    top = torch.topk(lp, k)
    return top.indices.tolist(), top.values.tolist()


def beam_step(logits: torch.Tensor, scores: list[float]) -> tuple[list[int], list[int], list[float]]:
    """One beam step over ``k`` beams' logits ``[k, V]``: (parents, tokens, new scores), best first."""
    k, vocab = logits.shape
    lp = torch.log_softmax(logits.float(), dim=-1) + torch.tensor(scores, dtype=torch.float32,
                                                                   device=logits.device)[:, None]
    top = torch.topk(lp.reshape(-1), k)
    idx = top.indices.tolist()
    return [i // vocab for i in idx], [i % vocab for i in idx], top.values.tolist()
