"""``vllm bench serve``'s load flags on ``kvsim run``, ``sweep`` and ``plan``.

A vLLM-bench user types ``--request-rate inf --burstiness 0.5 --max-concurrency 8``;
each flag is the scenario field of the same meaning, applied after every
``--set`` (so the flag wins):

========================  ==============================================
``--request-rate R``      ``workload.rate_req_s=R`` (``inf``: burst at t=0)
``--burstiness K``        ``workload.burstiness=K`` (gamma shape, cv 1/sqrt(K))
``--max-concurrency N``   ``workload.max_concurrency=N`` (closed loop)
========================  ==============================================

``--percentile-metrics ttft,tpot,itl,e2el`` (``run``) picks the rows of the
latency table, as vllm bench's flag picks the metrics it prints.
"""
from __future__ import annotations

from kvsim.errors import KvsimError
from kvsim.latency import LATENCY_METRICS

FLAGS = (("request_rate", "--request-rate", "workload.rate_req_s", "R",
          "vllm bench's --request-rate: workload.rate_req_s (inf = every request at t=0)"),
         ("burstiness", "--burstiness", "workload.burstiness", "K",
          "vllm bench's --burstiness: gamma shape of the inter-arrival times (1 = Poisson, < 1 burstier); "
          "workload.burstiness"),
         ("max_concurrency", "--max-concurrency", "workload.max_concurrency", "N",
          "vllm bench's --max-concurrency: at most N requests in flight (closed loop); workload.max_concurrency"))


def add_bench_args(p, percentile_metrics: bool = False) -> None:
    for dest, flag, _, metavar, text in FLAGS:
        p.add_argument(flag, dest=dest, default=None, metavar=metavar, help=text)
    if percentile_metrics:
        p.add_argument("--percentile-metrics", default=None, metavar="M1,M2,...",
                       help=f"latency metrics to print ({','.join(LATENCY_METRICS)}; default all), as vllm "
                            "bench's; with --metric-percentiles")


def bench_overrides(args) -> list[str]:
    """The ``--set`` items the vLLM-bench flags given in ``args`` stand for (they are YAML values, checked by the
    scenario's own validation, so a bad one names the flag's field)."""
    out = []
    for dest, flag, key, _, _ in FLAGS:
        raw = getattr(args, dest, None)
        if raw is None:
            continue
        if not str(raw).strip():
            raise KvsimError(flag, "got an empty value")
        out.append(f"{key}={str(raw).strip()}")
    return out


def parse_metrics(raw) -> list[str] | None:
    """``"ttft,e2el"`` -> ["ttft", "e2el"] (None when not given: all of them)."""
    if raw is None:
        return None
    names = [x.strip().lower() for x in str(raw).split(",")]
    bad = [x for x in names if x not in LATENCY_METRICS]
    if not names or bad:
        raise KvsimError("--percentile-metrics", f"got {raw!r}; allowed: comma-separated "
                                                 f"{', '.join(LATENCY_METRICS)}")
    return list(dict.fromkeys(names))
