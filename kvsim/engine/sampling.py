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
    return draw_tensor(logits, mode, temperature, top_p, generator).tolist()


def draw_tensor(logits: torch.Tensor, mode: str, temperature: float, top_p: float,
                generator: torch.Generator | None) -> torch.Tensor:
    """:func:`sample_rows` left on the device (``[N]`` int64; the same draws from the same generator)."""
    if mode == "greedy":
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, idx = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(dim=-1) - sorted_p < top_p
        sorted_p = sorted_p * keep
        probs = torch.zeros_like(probs).scatter_(-1, idx, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def beam_first_steps(logits: torch.Tensor, k: int) -> tuple[list[list[int]], list[list[float]]]:
    """After the prompts of ``G`` beam groups of width ``k`` (all beams of a group share its prompt): each
    group's ``k`` best first tokens and their log-probabilities. ``logits`` is ``[G, V]``."""
    top = torch.topk(torch.log_softmax(logits.float(), dim=-1), k, dim=-1)
    return _to_host(top.indices, top.values)


def beam_steps(logits: torch.Tensor, scores: list[list[float]]
               ) -> tuple[list[list[int]], list[list[int]], list[list[float]]]:
    """One beam step of ``G`` groups of ``k`` beams each, in one batched call: ``logits`` ``[G * k, V]``
    (group after group), ``scores`` the groups' cumulative log-probabilities ``[G][k]``. Per group, best
    first: the surviving beams' parents (0..k-1), tokens and new scores."""
    g, k, vocab = len(scores), len(scores[0]), logits.shape[-1]
    # the scores are sent as the step's inputs are (non_blocking: staged, no wait): torch.tensor(..., device=...)
    # synchronised the stream, so the host waited for the whole forward pass before launching the top-k
    prior = torch.tensor(scores, dtype=torch.float32).to(logits.device, non_blocking=True)
    lp = torch.log_softmax(logits.float(), dim=-1).view(g, k, vocab) + prior[:, :, None]
    top = torch.topk(lp.reshape(g, k * vocab), k, dim=-1)
    idx, val = _to_host(top.indices, top.values)
    return [[i // vocab for i in row] for row in idx], [[i % vocab for i in row] for row in idx], val


def _to_host(indices: torch.Tensor, values: torch.Tensor) -> tuple[list[list[int]], list[list[float]]]:
    """Top-k indices and values in one device-to-host copy (one sync, not one per group and tensor);
    float64 holds both exactly (indices < 2**53, values float32)."""
    both = torch.stack([indices.double(), values.double()]).tolist()
    return [[int(i) for i in row] for row in both[0]], both[1]
