"""Capacity planning: SLOs, the max-rate search, candidate configurations and their outputs.

    from kvsim.plan import find_max_rate, plan, parse_slo
    r = find_max_rate("scenarios/examples/quickstart.yaml", parse_slo(["normalized_latency_s=0.1"]))
    r.max_rate                               # highest rate meeting every SLO (req/s)
    p = plan("scenario.yaml", {"ttft_p99_s": 5}, {"engine.block_size": [16, 32]}, replicas=[1, 2])
    p.table, p.recommended, p.pareto()
"""
from kvsim.plan.planner import OBJECTIVES, PlanResult, pareto_mask, plan
from kvsim.plan.search import ProbeCache, SearchResult, find_max_rate, run_at
from kvsim.plan.slo import SLO_KEYS, meets, parse_slo, violations

__all__ = ["OBJECTIVES", "PlanResult", "ProbeCache", "SLO_KEYS", "SearchResult", "find_max_rate", "meets",
           "pareto_mask", "parse_slo", "plan", "run_at", "violations"]
