"""Prompt/output length samplers and the capping rule.

Synthetic datasets (``sharegpt_like``, ``alpaca_like``)
-------------------------------------------------------
These are length *distributions* like the datasets', not the datasets: the real
ShareGPT conversation lengths are the trace ``scenarios/traces/sharegpt_llama3_1000.csv``
(``dataset: trace``) or vLLM's JSON file (``dataset: sharegpt_json``). The old
names ``sharegpt`` / ``alpaca`` select the same distributions.

The PagedAttention paper (Kwon et al., SOSP'23, Fig. 11) reports only the means
of its two datasets: ShareGPT has 161.31 input / 337.99 output tokens on
average, Alpaca 19.31 / 58.45. We model each length as an independent
lognormal ``exp(mu + sigma * Z)``, rounded to the nearest integer and floored
at 1, then capped to the model's max length by :func:`cap_lengths`.

``sigma`` is an *assumption* (the paper gives no spread), chosen for the shape
the paper's histograms show:

* ShareGPT: heavy tail, CV ≈ 1.1 — ``sigma_prompt = 0.9`` (input CV 1.09),
  ``sigma_output = 1.0`` (output CV 1.07 after capping; p99 ≈ 1,900 tokens,
  about 1.6 % of outputs hit the 2,048-token cap).
* Alpaca: short, narrower — ``sigma_prompt = 0.5`` (CV 0.53),
  ``sigma_output = 0.7`` (CV 0.80).

``mu`` was then fitted by bisection on 4 M common-random-number samples so the
sample means *after rounding and capping to max length 2,048* equal the paper's
means (to 0.01 token). With another max length the means drift (for ShareGPT,
a smaller cap lowers the output mean). ``tests/test_workload.py`` checks the
means within 3 % on 10,000 samples for several seeds.

Capping rule (:func:`cap_lengths`)
----------------------------------
First ``prompt_len`` is capped to ``max_len - 1`` (so at least one output token
fits), then ``output_len`` to ``max_len - prompt_len``. Hence
``prompt_len + output_len <= max_len`` always, and both stay ``>= 1``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvsim.errors import KvsimError


@dataclass(frozen=True)
class LognormalLengths:
    """Lognormal parameters (of the natural log of the token count) for one dataset."""

    name: str
    prompt_mu: float
    prompt_sigma: float
    output_mu: float
    output_sigma: float
    paper_mean_prompt_tokens: float
    paper_mean_output_tokens: float


SHAREGPT = LognormalLengths("sharegpt", 4.6807, 0.9, 5.3672, 1.0, 161.31, 337.99)
ALPACA = LognormalLengths("alpaca", 2.8356, 0.5, 3.8233, 0.7, 19.31, 58.45)
SYNTHETIC = {d.name: d for d in (SHAREGPT, ALPACA)}
# The dataset names that select them: ``*_like`` (the current names: synthetic lengths *like* the real
# datasets) and the old bare names, kept working (``sharegpt`` prints a note: vLLM means the real file).
SYNTHETIC_NAMES = {"sharegpt_like": SHAREGPT, "alpaca_like": ALPACA, "sharegpt": SHAREGPT, "alpaca": ALPACA}


def lognormal_lengths(rng: np.random.Generator, mu: float, sigma: float, size: int) -> np.ndarray:
    """``size`` integer lengths ``max(1, rint(exp(mu + sigma*Z)))`` as int64."""
    x = np.rint(np.exp(mu + sigma * rng.standard_normal(size)))
    # Clip in float space first so an astronomically large draw cannot overflow int64.
    return np.clip(x, 1, 1e12).astype(np.int64)


def sample_synthetic(rng: np.random.Generator, dataset: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Uncapped (prompt_lens, output_lens) for a synthetic dataset (a key of ``SYNTHETIC_NAMES``:
    "sharegpt_like" = "sharegpt", "alpaca_like" = "alpaca").

    Draw order: all prompts, then all outputs (part of the determinism contract).
    """
    if dataset not in SYNTHETIC_NAMES:
        raise KvsimError("workload.dataset", f"{dataset!r} is not a synthetic dataset; allowed: "
                         f"{', '.join(SYNTHETIC_NAMES)}")
    d = SYNTHETIC_NAMES[dataset]
    prompt = lognormal_lengths(rng, d.prompt_mu, d.prompt_sigma, size)
    output = lognormal_lengths(rng, d.output_mu, d.output_sigma, size)
    return prompt, output


def sample_fixed(prompt_len: int, output_len: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every request has exactly ``prompt_len`` / ``output_len`` tokens (no draws)."""
    return np.full(size, prompt_len, dtype=np.int64), np.full(size, output_len, dtype=np.int64)


def sample_uniform(
    rng: np.random.Generator, prompt_range: list[int], output_range: list[int], size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Lengths uniform on the inclusive integer ranges ``[min, max]``; prompts drawn first."""
    prompt = rng.integers(prompt_range[0], prompt_range[1], size=size, endpoint=True, dtype=np.int64)
    output = rng.integers(output_range[0], output_range[1], size=size, endpoint=True, dtype=np.int64)
    return prompt, output


def cap_lengths(prompt: np.ndarray, output: np.ndarray, max_len_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Apply the capping rule: prompt to ``max_len-1`` first, then output to ``max_len - prompt``.

    Invariant on return: ``1 <= prompt``, ``1 <= output``, ``prompt + output <= max_len_tokens``.
    Requires ``max_len_tokens >= 2`` and inputs ``>= 1``.
    """
    if max_len_tokens < 2:
        raise KvsimError("workload.max_len_tokens", f"{max_len_tokens} is too small; allowed: >= 2")
    p = np.minimum(np.asarray(prompt, dtype=np.int64), max_len_tokens - 1)
    o = np.minimum(np.asarray(output, dtype=np.int64), max_len_tokens - p)
    return p, o
