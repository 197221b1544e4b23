"""Words and units for column names, so that no plot or report shows a raw name like ``throughput_req_s``.

:func:`label` gives ``"throughput (req/s)"`` for a metric or a scenario field;
:func:`words` the words alone, :func:`unit` the unit alone (``None`` for a
categorical field such as ``engine.allocator``). Names not in the tables get
words from the name (last dotted part, underscores as spaces) and a unit from
its suffix (``_req_s`` req/s, ``_tok_s`` tokens/s, ``_ms`` ms, ``_s`` s,
``_frac`` fraction, ``_gib`` GiB); ``<name>_ci_lo`` / ``_ci_hi`` / ``_mean``
(replicated metrics) are ``<name>``'s words with "interval low" / "interval
high" / "mean" after them.
"""
from __future__ import annotations

# ``vllm bench serve``'s latency metric names (kvsim.latency computes them; here so that building the CLI's
# parser does not import pandas)
LATENCY_METRICS = ("ttft", "tpot", "itl", "e2el")
GOODPUT_METRICS = ("ttft", "tpot", "e2el")

NAMES: dict[str, tuple[str, str | None]] = {
    # run metrics
    "throughput_req_s": ("throughput", "req/s"),
    "throughput_tok_s": ("throughput", "tokens/s"),
    "normalized_latency_s": ("mean normalized latency", "s/token"),
    "ttft_p50_s": ("TTFT p50", "s"), "ttft_p99_s": ("TTFT p99", "s"),
    "tpot_p50_s": ("TPOT p50", "s"), "tpot_p99_s": ("TPOT p99", "s"),
    "itl_p50_s": ("ITL p50", "s"), "itl_p99_s": ("ITL p99", "s"),
    "latency_p50_s": ("end-to-end latency p50", "s"), "latency_p99_s": ("end-to-end latency p99", "s"),
    "avg_batched_requests": ("mean batched requests", "requests"),
    "preemptions": ("preemptions", "count"),
    "preemption_rate": ("preemptions per request", "count/request"),
    "mem_used_frac": ("KV used", "fraction"), "mem_reserved_frac": ("KV reserved", "fraction"),
    "mem_internal_frag_frac": ("KV internal fragmentation", "fraction"),
    "mem_external_frag_frac": ("KV external fragmentation", "fraction"),
    "sharing_saved_frac": ("KV saved by sharing", "fraction"),
    "goodput_miss_frac": ("requests missing a per-request SLO", "fraction"),
    # plan columns
    "max_rate_req_s": ("max rate meeting the SLOs, per replica", "req/s"),
    "total_rate_req_s": ("max rate meeting the SLOs, all replicas", "req/s"),
    "goodput_per_gpu": ("goodput per GPU", "req/s per GPU"),
    "requests_per_usd": ("requests per dollar", "requests/$"),
    "price_per_hour_usd": ("GPU price", "$/hour"),
    # scenario fields
    "workload.rate_req_s": ("arrival rate", "req/s"),
    "workload.num_requests": ("requests", "count"),
    "workload.max_concurrency": ("max concurrency", "requests in flight"),
    "workload.n": ("parallel samples per request", "sequences"),
    "workload.beam_width": ("beam width", "beams"),
    "workload.prefix_len": ("shared prefix", "tokens"),
    "workload.cv": ("inter-arrival CV", "ratio"),
    "workload.burstiness": ("burstiness (gamma shape)", "ratio"),
    "engine.block_size": ("KV block size", "tokens"),
    "engine.max_num_seqs": ("max sequences per batch", "sequences"),
    "engine.max_num_batched_tokens": ("max tokens per iteration", "tokens"),
    "engine.gpu_memory_utilization": ("GPU memory utilization", "fraction"),
    "engine.swap_space_gib": ("CPU swap space", "GiB"),
    "engine.watermark": ("free-block watermark", "fraction"),
    "tensor_parallel": ("tensor-parallel degree", "GPUs"),
    "replicas": ("replicas", "count"),
    "engine.allocator": ("KV allocator", None), "engine.scheduler": ("scheduler", None),
    "engine.preemption_mode": ("preemption mode", None), "engine.placement": ("placement", None),
    "engine.enable_prefix_caching": ("prefix caching", None), "workload.dataset": ("dataset", None),
    "workload.arrival": ("arrival process", None), "gpu": ("GPU", None), "model": ("model", None),
    "dtype": ("dtype", None), "seed": ("seed", None),
}
SUFFIXES = (("_req_s", "req/s"), ("_tok_s", "tokens/s"), ("_ms", "ms"), ("_s", "s"), ("_frac", "fraction"),
            ("_gib", "GiB"))


def _split(name: str) -> tuple[str, str | None]:
    if name in NAMES:
        return NAMES[name]
    for end, what in (("_ci_lo", "interval low"), ("_ci_hi", "interval high"), ("_mean", "mean")):
        if str(name).endswith(end) and len(name) > len(end):
            w, u = _split(name[: -len(end)])
            return f"{w}, {what}", u
    last = str(name).split(".")[-1]
    for suffix, u in SUFFIXES:
        if last.endswith(suffix) and len(last) > len(suffix):
            return last[: -len(suffix)].replace("_", " "), u
    return last.replace("_", " "), None


def words(name: str) -> str:
    return _split(name)[0]


def unit(name: str) -> str | None:
    return _split(name)[1]


def label(name: str) -> str:
    """``"words (unit)"``, or the words alone when the column has no unit."""
    w, u = _split(name)
    return f"{w} ({u})" if u else w


def title(y: str, x: str) -> str:
    """A plot title in words: ``"Throughput vs arrival rate"``."""
    text = f"{words(y)} vs {words(x)}"
    return text[0].upper() + text[1:]


def slo_words(slo: dict) -> str:
    """``{"normalized_latency_s": 0.1}`` -> ``"normalized latency (mean) <= 0.1 s/token"`` (``and`` between)."""
    parts = []
    for key, bound in slo.items():
        u = unit(key)
        parts.append(f"{words(key)} <= {bound:g}" + (f" {u}" if u and u not in ("fraction", "count") else ""))
    return " and ".join(parts) or "no SLO"
