"""Build the request list of a workload: arrivals, lengths, shared prefixes, caps.

``build_workload`` is the one entry point. Order of random draws (part of the
determinism contract — same config, same max length, same seed → identical
list): arrival gaps, then prompt lengths, then output lengths (or the
ShareGPT sample), then prefix ids.

Rules
-----
* Number of requests: ``num_requests`` and/or ``duration_s`` end the arrival
  process, whichever comes first. A trace (dataset ``trace``) replays its own
  arrival times by default, every row; a given ``num_requests`` / ``duration_s``
  *truncates* it (first rows, arrivals ``<= duration_s``).
* Dataset ``trace`` with ``retime_trace: true`` and arrival poisson/gamma/burst re-times the
  trace: the trace's rows (in arrival order) keep their lengths, n, beam width
  and prefix, and get the new arrival times; one request per row unless
  ``num_requests`` asks for more (then rows cycle). The run header says so.
* Shared prefix (non-trace datasets): each request draws ``prefix_id`` uniformly
  from ``0..num_prefixes-1`` and its prompt is ``prefix_len`` + the sampled
  length, so every request has at least one unique prompt token. Traces carry
  their own prefix columns.
* Max length: ``min(max_len_tokens argument, cfg.max_len_tokens)``; lengths are
  capped by :func:`kvsim.workload.lengths.cap_lengths` (prompt to max−1 first,
  then output to max − prompt), which also applies to traces and ShareGPT.
  ``prefix_len <= max_len − 2`` is required so a capped prompt keeps a unique
  token; a trace row whose prefix would not fit is an error.
* Invariants of every returned RequestSpec: ``request_id`` = position (0..N−1,
  arrivals non-decreasing), ``1 <= prompt_len``, ``1 <= output_len``,
  ``prompt_len + output_len <= max_len``, ``0 <= prefix_len <= prompt_len − 1``,
  ``prefix_id == -1`` iff ``prefix_len == 0``, ``n == 1`` when ``beam_width > 1``.
* A duration so short that no request arrives gives an empty list.
"""
from __future__ import annotations

import numpy as np

from kvsim.core.request import RequestSpec
from kvsim.errors import KvsimError
from kvsim.workload.arrivals import burst_arrivals, gamma_arrivals, poisson_arrivals
from kvsim.workload.config import WorkloadConfig
from kvsim.workload.lengths import SYNTHETIC_NAMES, cap_lengths, sample_fixed, sample_synthetic, sample_uniform
from kvsim.workload.sharegpt import load_sharegpt, sample_sharegpt
from kvsim.workload.trace import Trace, read_trace


def effective_max_len(cfg: WorkloadConfig, max_len_tokens: int) -> int:
    """The cap on prompt+output: the model's max length, lowered by ``cfg.max_len_tokens``."""
    m = int(max_len_tokens) if cfg.max_len_tokens is None else min(int(max_len_tokens), cfg.max_len_tokens)
    if m < 2:
        raise KvsimError("workload.max_len_tokens", f"effective max length {m} is too small; allowed: >= 2")
    return m


def _arrivals(cfg: WorkloadConfig, rng: np.random.Generator, trace: Trace | None) -> np.ndarray:
    if cfg.arrival == "trace":
        t = trace.arrival_s
        if cfg.num_requests is not None:
            t = t[: cfg.num_requests]
        if cfg.duration_s is not None:
            t = t[t <= cfg.duration_s]
        return t
    n = cfg.num_requests
    if n is None and trace is not None and cfg.duration_s is None:
        n = len(trace)                   # a re-timed trace: one request per row unless num_requests says
    if cfg.arrival == "poisson":
        return poisson_arrivals(rng, cfg.rate_req_s, n=n, duration=cfg.duration_s)
    if cfg.arrival == "gamma":
        return gamma_arrivals(rng, cfg.rate_req_s, cfg.cv, n=n, duration=cfg.duration_s)
    return burst_arrivals(n if n is not None else len(trace))


def build_workload(cfg: WorkloadConfig, *, max_len_tokens: int, rng: np.random.Generator) -> list[RequestSpec]:
    """The workload's requests in arrival order; see the module docstring for the rules."""
    cfg.validate("workload")
    max_len = effective_max_len(cfg, max_len_tokens)
    if cfg.prefix_len > max_len - 2:
        raise KvsimError("workload.prefix_len", f"{cfg.prefix_len} leaves no room for a unique prompt token and an "
                         f"output token within max length {max_len}; allowed: <= {max_len - 2}")
    trace = read_trace(cfg.path) if cfg.dataset == "trace" else None
    pool = None
    if cfg.dataset == "sharegpt_json":
        pool = load_sharegpt(cfg.path, tokens_per_char=cfg.tokens_per_char, tokenizer=cfg.tokenizer)

    arrival = _arrivals(cfg, rng, trace)
    size = len(arrival)
    n = np.full(size, cfg.n, dtype=np.int64)
    beam = np.full(size, cfg.beam_width, dtype=np.int64)
    prefix_id = np.full(size, -1, dtype=np.int64)
    prefix_len = np.zeros(size, dtype=np.int64)

    if cfg.dataset in SYNTHETIC_NAMES:
        prompt, output = sample_synthetic(rng, cfg.dataset, size)
    elif cfg.dataset == "sharegpt_json":
        prompt, output = sample_sharegpt(rng, pool[0], pool[1], size)
    elif cfg.dataset == "fixed":
        prompt, output = sample_fixed(cfg.prompt_len, cfg.output_len, size)
    elif cfg.dataset == "uniform":
        prompt, output = sample_uniform(rng, cfg.prompt_len_range, cfg.output_len_range, size)
    else:  # trace: rows in arrival order, cycling when re-timed with more requests than rows
        idx = np.arange(size) % len(trace)
        prompt, output = trace.prompt_len[idx], trace.output_len[idx]
        for name, arr in (("n", n), ("beam_width", beam), ("prefix_id", prefix_id), ("prefix_len", prefix_len)):
            col = getattr(trace, name)
            if col is not None:
                arr[:] = col[idx]
        both = (beam > 1) & (n != 1)
        if both.any():
            raise KvsimError("workload.n", f"{cfg.n} from the config with beam_width > 1 in the trace; allowed: n = 1")

    if cfg.prefix_len > 0:
        prefix_id = rng.integers(0, cfg.num_prefixes, size=size, dtype=np.int64)
        prefix_len[:] = cfg.prefix_len
        prompt = prompt + cfg.prefix_len

    prompt, output = cap_lengths(prompt, output, max_len)
    bad = prefix_len >= prompt
    if bad.any():
        i = int(np.argmax(bad))
        raise KvsimError("workload.path", f"{cfg.path}: request at arrival_s={arrival[i]:g} has prefix_len "
                         f"{int(prefix_len[i])} >= its prompt_len {int(prompt[i])} after capping to max length "
                         f"{max_len}; allowed: prefix_len <= {max_len - 2}")

    return [
        RequestSpec(i, a, p, o, nn, b, pid, pl)
        for i, (a, p, o, nn, b, pid, pl) in enumerate(zip(
            arrival.tolist(), prompt.tolist(), output.tolist(), n.tolist(), beam.tolist(),
            prefix_id.tolist(), prefix_len.tolist(),
        ))
    ]
