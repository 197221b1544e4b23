"""Service-level objectives: parse ``--slo key=value`` and check a run's summary against them.

Supported SLOs (all upper bounds):

* ``normalized_latency_s`` — mean end-to-end latency ÷ output length (s/token);
* ``ttft_p99_s`` — 99th-percentile time to first token (s);
* ``tpot_p99_s`` — 99th-percentile time per output token after the first (s);
* ``preemption_rate`` — preemptions per request;
* ``goodput_miss_frac`` — the share of requests that miss the per-request
  SLOs of ``--goodput ttft:ms tpot:ms e2el:ms`` (vLLM bench's goodput; an
  unfinished request misses). ``--goodput`` alone means ``goodput_miss_frac <= 0.01``.

A run with unfinished requests (the simulation stopped before serving every
request, e.g. at ``max_time_s``) violates every SLO: an overloaded rate must not
pass because its slowest requests were never measured. Rejected requests (ones
that can never fit in the KV cache at any rate) are reported but do not depend
on the rate, so they do not count.
"""
from __future__ import annotations

import math

import yaml

from kvsim.errors import KvsimError

SLO_KEYS = {
    "normalized_latency_s": "mean normalized latency (s/token)",
    "ttft_p99_s": "p99 time to first token (s)",
    "tpot_p99_s": "p99 time per output token (s)",
    "preemption_rate": "preemptions per request",
    "goodput_miss_frac": "share of requests missing the --goodput per-request SLOs",
}
DEFAULT_SLO = {"normalized_latency_s": 0.1}


def parse_slo(items: list[str] | dict | None, default: dict | None = None) -> dict[str, float]:
    """``["ttft_p99_s=2", "normalized_latency_s=0.1"]`` (or a dict) -> validated ``{key: bound}``."""
    if not items:
        return dict(DEFAULT_SLO if default is None else default)
    pairs = items.items() if isinstance(items, dict) else [_split(i) for i in items]
    slo: dict[str, float] = {}
    for key, raw in pairs:
        if key not in SLO_KEYS:
            raise KvsimError("--slo", f"unknown SLO {key!r}; allowed: {', '.join(SLO_KEYS)}")
        if key in slo:
            raise KvsimError("--slo", f"{key} is given twice; give each SLO once")
        try:
            parsed = yaml.safe_load(raw) if isinstance(raw, str) else raw
            if isinstance(parsed, bool):
                raise TypeError(parsed)
            value = float(parsed)
        except (TypeError, ValueError, yaml.YAMLError):
            raise KvsimError("--slo", f"{key}={raw!r} is not a number") from None
        if not value > 0 or math.isinf(value):
            raise KvsimError("--slo", f"{key}={raw!r}; allowed: a finite number > 0")
        if key == "goodput_miss_frac" and not value < 1:      # a share: 1 or more can never be missed
            raise KvsimError("--slo", f"{key}={raw!r}; allowed: a share of requests in (0, 1)")
        slo[key] = value
    return slo


def with_goodput(slo: dict[str, float], goodput: dict | None, slo_given: bool) -> dict[str, float]:
    """The SLOs once ``--goodput`` is known: it adds ``goodput_miss_frac <= 0.01`` (replacing the default
    SLO when no --slo was given); ``goodput_miss_frac`` without ``--goodput`` is an error."""
    if not goodput:
        if "goodput_miss_frac" in slo:
            raise KvsimError("--slo", "goodput_miss_frac needs the per-request SLOs: --goodput ttft:MS tpot:MS ...")
        return slo
    out = dict(slo) if slo_given else {}
    out.setdefault("goodput_miss_frac", 0.01)
    return out


def _split(item: str) -> tuple[str, str]:
    if not isinstance(item, str) or "=" not in item:
        raise KvsimError("--slo", f"expected key=value, got {item!r}")
    k, v = item.split("=", 1)
    return k.strip(), v.strip()


def slo_value(summary: dict, key: str) -> float:
    """The measured value of SLO ``key`` in a run summary (NaN when nothing finished)."""
    if key == "preemption_rate":
        total = summary.get("requests_total") or 0
        return (summary.get("preemptions") or 0) / total if total else float("nan")
    v = summary.get(key)
    return float("nan") if v is None else float(v)


def violations(summary: dict, slo: dict[str, float]) -> list[str]:
    """Human-readable reasons the run misses the SLOs; empty when every SLO is met."""
    out = []
    unfinished = summary.get("requests_unfinished") or 0
    if unfinished:
        out.append(f"{unfinished} requests unfinished")
    if not summary.get("requests_finished"):
        out.append("no request finished")
    for key, bound in slo.items():
        v = slo_value(summary, key)
        if math.isnan(v) or v > bound:
            out.append(f"{key} {v:.4g} > {bound:g}")
    return out


def meets(summary: dict, slo: dict[str, float]) -> bool:
    return not violations(summary, slo)


def format_slo(slo: dict[str, float]) -> str:
    return ", ".join(f"{k} <= {v:g}" for k, v in slo.items())
