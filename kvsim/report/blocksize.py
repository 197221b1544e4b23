"""Block-size analysis: what each KV block size costs and sustains for one workload, and which to use.

For every block size ``B`` (and both preemption modes, the scenario's and
``swap``) :func:`analyse` runs the planner's max-rate search
(:func:`kvsim.plan.find_max_rate`) and records:

* the highest rate meeting the SLOs, and normalized latency vs rate (the probes);
* memory: internal fragmentation — the unused tail of each sequence's last
  block, ``ceil(L/B) x B - L`` slots at the sequence's final length ``L``, and
  as the simulator measured it over time at the max rate — and block-table
  overhead: ``ceil(L/B)`` entries x 4 bytes (int32, as vLLM's block tables)
  vs the ``L x kv_bytes_per_token`` bytes of KV they map;
* kernel cost: one decode step of the typical batch priced by the scenario's
  cost model at block size ``B``. The roofline model has **no block-size term
  in attention** (it reads ``sum(ctx)`` KV bytes whatever the blocking), so
  this is flat unless a calibrated profile (``kvsim.cost.calibrated``) adds one;
* swap vs recompute: the modelled time to swap a mean-length sequence out and
  back (per-block, per-layer transfers) vs recomputing it, and the max rate
  under each preemption mode;
* prefix-cache hit rate: ``sum(cached_tokens) / sum(prompt_len)`` from the
  requests frame with prefix caching on (the workload's shared prefix, or an
  80-token what-if prefix — the paper's 1-shot — when it has none).

:func:`choose` picks the block size: the largest ``B`` whose best rate (over
both preemption modes) is within ``tie_tol`` of the best of all sizes. The
tolerance defaults to twice the search's resolution (two rates closer than that
are indistinguishable). Ties go to the larger block because every per-block
cost the model prices falls with ``B`` (swap transfers, block-table entries)
and none rises; the simulator charges smaller blocks nothing for the kernel
inefficiency the paper measured (Fig. 18a), so this tie-break is the honest
direction, not a thumb on the scale.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kvsim.build import setup_run
from kvsim.config import load_scenario, read_yaml
from kvsim.core.plan import StepPlan
from kvsim.configtools import check_number
from kvsim.errors import KvsimError
from kvsim.limits import MAX_BLOCK_SIZE
from kvsim.plan.search import SearchResult, check_rate_driven, find_max_rate, probe_overrides

DEFAULT_BLOCK_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
WHAT_IF_PREFIX_TOKENS = 80
BLOCK_TABLE_ENTRY_BYTES = 4


@dataclass
class BlockSizeAnalysis:
    scenario: str
    slo: dict
    block_sizes: list[int]
    modes: list[str]
    table: pd.DataFrame                          # one row per block size
    curves: dict = field(default_factory=dict)   # (B, mode) -> [(rate, normalized latency)]
    rel_tol: float = 0.02
    tie_tol: float = 0.04
    prefix_note: str = ""
    cost_note: str = ""
    v1_reason: str = ""                          # set by compare_v1 (kvsim.report.blocksize_v1)
    block_size: int | None = None
    reason: str = ""
    pricing: str = ""                            # what priced the steps: the roofline model or a measured profile
    not_measured: list = field(default_factory=list)   # --profile: requested sizes the profile lacks
    attribution: pd.DataFrame | None = None      # --profile: memory vs card terms per block size
    decides: str = ""                            # --profile: which effect decides the choice
    mem_rates: dict = field(default_factory=dict)  # --profile: block size -> rate with the reference's kernels

    def table_text(self) -> str:
        cols = ["block_size", "max_rate_req_s", "best_mode", "max_rate_v1", "internal_frag_frac",
                "sim_internal_frag_frac", "block_table_frac", "decode_step_ms", "swap_roundtrip_ms", "prefix_hit_frac"]
        return self.table[[c for c in cols if c in self.table]].to_string(
            index=False, float_format=lambda x: f"{x:.4g}", na_rep="-")


def _modes(sc) -> list[str]:
    mode = sc.engine.preemption_mode
    if sc.engine.swap_space_gib <= 0 or mode == "swap" or sc.engine.policy == "v1":   # v1 has no swap
        return [mode]
    return [mode, "swap"]


def _search(args) -> tuple[int, str, SearchResult | None]:
    data, overrides, b, mode, slo, kw = args
    try:
        return b, mode, find_max_rate(data, slo, overrides + [f"engine.block_size={b}",
                                                              f"engine.preemption_mode={mode}"], **kw)
    except KvsimError as e:                  # one impossible size must not sink the report
        return b, mode, SearchResult(None, None, None, note=str(e))


def _static_costs(data: dict, overrides: list[str], b: int, batch: int) -> dict:
    """Memory split and cost-model numbers for block size ``b`` (no simulation)."""
    s = setup_run(load_scenario(data, overrides + [f"engine.block_size={b}"]))
    lens = np.array([r.total_len for r in s.requests], dtype=np.float64)
    seqs = np.array([r.num_seqs for r in s.requests], dtype=np.float64)
    blocks = np.ceil(lens / b)
    slots = (blocks * b * seqs).sum()
    kv_bytes = (lens * seqs).sum() * s.kv_bytes_per_token
    mean_len = int(round(lens.mean()))
    n_blocks = math.ceil(mean_len / b)
    ctx = [mean_len // 2 or 1] * batch
    step = s.cost.step_time(StepPlan(decode_group_ids=list(range(batch)), decode_context_tokens=ctx))
    swap = 2 * s.cost.swap_time(n_blocks, s.budget.block_bytes)
    recompute = s.cost.step_time(StepPlan(prefill_group_ids=[0], prefill_new_tokens=[mean_len],
                                          prefill_cached_tokens=[0]))
    return {"block_size": b, "num_gpu_blocks": s.budget.num_gpu_blocks, "mean_seq_tokens": mean_len,
            "internal_frag_frac": float(((blocks * b - lens) * seqs).sum() / slots),
            "block_table_frac": float((blocks * seqs).sum() * BLOCK_TABLE_ENTRY_BYTES / kv_bytes),
            "decode_step_ms": step * 1e3, "swap_roundtrip_ms": swap * 1e3, "recompute_ms": recompute * 1e3,
            "cost_model": type(s.cost).__name__}


def _prefix_hit(args) -> tuple[int, float]:
    data, overrides, b, rate, requests = args
    s = load_scenario(data, overrides)
    extra = [f"engine.block_size={b}", "engine.enable_prefix_caching=true"]
    if s.workload.prefix_len == 0:
        extra.append(f"workload.prefix_len={WHAT_IF_PREFIX_TOKENS}")
    from kvsim.sim import simulate
    try:
        sc = load_scenario(data, probe_overrides(overrides, requests) + extra + [f"workload.rate_req_s={rate!r}"])
        reqs = simulate(sc).requests
    except KvsimError:                       # an impossible size: no hit rate (its row says why)
        return b, None
    done = reqs[reqs.status == "finished"]
    return b, float(done.cached_tokens.sum() / max(1, done.prompt_len.sum()))


def analyse(source, slo: dict, *, overrides: list[str] | None = None, block_sizes=None,
            requests: int | None = 600, rel_tol: float = 0.02, tie_tol: float | None = None,
            jobs: int | None = None, progress: bool = False, compare_v1: bool = False, profile: str | None = None,
            min_duration_s: float | None = 60.0) -> BlockSizeAnalysis:
    """Run every block size (module doc); ``choose`` is applied to the result. With ``profile`` the
    steps are priced from that measured profile (:mod:`kvsim.report.blocksize_profile`).

    ``compare_v1`` runs each size's search again under ``engine.policy=v1`` and adds its columns
    (:mod:`kvsim.report.blocksize_v1`); the choice stays the scenario's own policy's.
    """
    if profile is None:
        return _analyse(source, slo, overrides, block_sizes, requests, rel_tol, tie_tol, jobs, progress,
                        min_duration_s=min_duration_s, compare_v1=compare_v1)
    import tempfile
    from kvsim.report import blocksize_profile as BP
    data = source if isinstance(source, dict) else read_yaml(source)
    sc = load_scenario(data, probe_overrides(overrides, requests))
    doc = BP.load_checked(profile, sc.model, sc.dtype, sc.gpu)
    wanted = _sizes(block_sizes)
    measured, missing = BP.split_sizes(doc, wanted)
    if not measured:
        have = BP.split_sizes(doc, list(range(1, MAX_BLOCK_SIZE + 1)))[0]
        raise KvsimError("--block-sizes", f"none of {wanted} is in {profile} (measured: {have})")
    base = list(overrides or []) + ["cost.model=calibrated", f"cost.profile={profile}"]
    ref = BP.reference_block(measured)
    with tempfile.TemporaryDirectory(prefix="kvsim-bs-") as tmp:
        ref_path = BP.write_reference(doc, ref, measured, Path(tmp))
        a = _analyse(data, slo, base, measured, requests, rel_tol, tie_tol, jobs, progress, min_duration_s=min_duration_s,
                     counterfactual=list(overrides or []) + ["cost.model=calibrated", f"cost.profile={ref_path}"])
    a.not_measured = missing
    card = doc["meta"].get("gpu", "?")
    a.pricing = (f"measured profile {profile} ({doc['model']}, {doc['dtype']}, {card}, {doc['meta'].get('date', '?')}); "
                 f"block sizes not in it: {', '.join(map(str, missing)) or 'none'} (not measured, not priced)")
    rates = {int(r.block_size): r.max_rate_req_s for r in a.table.itertuples()}
    rows, a.decides = BP.attribute(rates, a.mem_rates, a.block_size)
    a.attribution = pd.DataFrame(rows)
    a.decides = f"reference block {ref}: " + a.decides
    return a


def _sizes(block_sizes) -> list[int]:
    if block_sizes is not None and not isinstance(block_sizes, (list, tuple, set)):
        raise KvsimError("--block-sizes", f"got {block_sizes!r}, expected a list of integers")
    if block_sizes is not None and not block_sizes:
        raise KvsimError("--block-sizes", "no block sizes given; expected integers like 8,16,32")
    return sorted(set(check_number("--block-sizes", b, int, (1, MAX_BLOCK_SIZE, False, False))
                      for b in (block_sizes or DEFAULT_BLOCK_SIZES)))


def _analyse(source, slo, overrides, block_sizes, requests, rel_tol, tie_tol, jobs, progress,
             counterfactual: list[str] | None = None, min_duration_s: float | None = 60.0,
             compare_v1: bool = False) -> BlockSizeAnalysis:
    data = source if isinstance(source, dict) else read_yaml(source)
    overrides = list(overrides or [])
    sc = load_scenario(data, probe_overrides(overrides, requests))
    check_rate_driven(data, probe_overrides(overrides, requests))
    sizes = _sizes(block_sizes)
    modes = _modes(sc)
    if compare_v1 and sc.engine.policy == "v1":
        raise KvsimError("--compare-v1", "the scenario already runs engine.policy v1; compare from a v0 scenario")
    kw = dict(requests=requests, rel_tol=rel_tol, min_duration_s=min_duration_s)
    tasks = [(data, overrides, b, m, slo, kw) for b in sizes for m in modes]
    if counterfactual is not None:           # the memory-only runs (kvsim.report.blocksize_profile)
        tasks += [(data, counterfactual, b, m, slo, kw) for b in sizes for m in modes]
    from kvsim.report import blocksize_v1 as bv1
    v1_tasks = [(data, overrides, b, slo, kw) for b in sizes] if compare_v1 else []
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(tasks)))
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(tasks) + len(v1_tasks) + len(sizes), desc="block sizes", unit="search")
    with ProcessPoolExecutor(max_workers=jobs) as ex:
        found = []
        for r in ex.map(_search, tasks):
            found.append(r)
            bar and bar.update()
        res = {(b, m): r for b, m, r in found[:len(sizes) * len(modes)]}
        mem = {}
        for b, m, r in found[len(sizes) * len(modes):]:
            mem[b] = max(mem.get(b) or 0.0, r.max_rate or 0.0) or None
        res_v1 = {}
        for b, r in ex.map(bv1.search_v1, v1_tasks):
            res_v1[b] = r
            bar and bar.update()
        best_rate = max((r.max_rate for r in res.values() if r.max_rate), default=sc.workload.rate_req_s)
        hit_tasks = [(data, overrides, b, 0.8 * best_rate, requests) for b in sizes]
        hits = {}
        for b, h in ex.map(_prefix_hit, hit_tasks):
            hits[b] = h
            bar and bar.update()
    if bar:
        bar.close()
    base = res[(sizes[0], modes[0])].summary or {}
    batch = max(1, int(round(base.get("avg_batched_requests") or 16)))
    rows, curves = [], {}
    for b in sizes:
        try:
            row = _static_costs(data, overrides, b, batch)
        except KvsimError as e:              # an impossible size keeps its row, with the reason
            row = {"block_size": b, "error": str(e)}
        for m in modes:
            r = res[(b, m)]
            row[f"max_rate_{m}"] = r.max_rate
            row[f"preemptions_per_req_{m}"] = (None if not r.summary else
                                                r.summary["preemptions"] / max(1, r.summary["requests_total"]))
            curves[(b, m)] = [(rate, s.get("normalized_latency_s")) for rate, s in r.curve()]
        rates = {m: row[f"max_rate_{m}"] or 0.0 for m in modes}
        row["best_mode"] = max(rates, key=rates.get)
        row["max_rate_req_s"] = rates[row["best_mode"]] or None
        best = res[(b, row["best_mode"])].summary or {}
        row["sim_internal_frag_frac"] = best.get("mem_internal_frag_frac")
        row["normalized_latency_at_max_s"] = best.get("normalized_latency_s")
        row["prefix_hit_frac"] = hits.get(b)
        # the probes' length, for a check that must run the same workload (benchmarks/engine/blocksize_check.sh)
        row["probe_requests"], row["probe_min_duration_s"] = requests, min_duration_s
        if compare_v1:
            bv1.add_columns(row, res[(b, row["best_mode"])], res_v1[b], sc.workload.n)
        rows.append(row)
    out = BlockSizeAnalysis(sc.name, dict(slo), sizes, modes, pd.DataFrame(rows), curves, rel_tol,
                            2 * rel_tol if tie_tol is None else tie_tol)
    out.prefix_note = (f"the workload's {sc.workload.prefix_len}-token shared prefix" if sc.workload.prefix_len
                       else f"a what-if {WHAT_IF_PREFIX_TOKENS}-token shared prefix (the workload has none)")
    if all(r.get("error") for r in rows):
        raise KvsimError("--block-sizes", f"no block size can run; the first: {rows[0]['error']}")
    out.cost_note = next(r["cost_model"] for r in rows if not r.get("error"))
    out.pricing = ("roofline model (analytical, from the catalogue's GPU and model specs): a model, not a "
                   "measurement; for a measured card use --profile" if out.cost_note == "RooflineCostModel"
                   else f"scenario cost model {out.cost_note}")
    out.mem_rates = mem
    out.block_size, out.reason = choose(out)
    if compare_v1:
        out.v1_reason = bv1.v1_reason(out.table)
    return out


def choose(a: BlockSizeAnalysis) -> tuple[int | None, str]:
    """The largest block size within ``tie_tol`` of the best max rate, and why (module doc)."""
    t = a.table.dropna(subset=["max_rate_req_s"])
    if not len(t):
        return None, "no block size meets the SLOs at any rate tried"
    best = t.loc[t.max_rate_req_s.idxmax()]
    tied = t[t.max_rate_req_s >= (1 - a.tie_tol) * best.max_rate_req_s]
    pick = tied.loc[tied.block_size.idxmax()]
    bigger = t[t.block_size > pick.block_size]
    mean_len = int(pick.mean_seq_tokens)
    parts = [f"block {int(pick.block_size)} sustains {pick.max_rate_req_s:.3g} req/s ({pick.best_mode}) within "
             f"the SLOs, within {a.tie_tol:.0%} of the best ({best.max_rate_req_s:.3g} req/s at block "
             f"{int(best.block_size)}; {a.tie_tol:.0%} = twice the search's {a.rel_tol:.0%} resolution)"]
    if len(bigger) and a.mem_rates:         # --profile: what decides comes from the attribution, not assumed
        nxt = bigger.iloc[0]
        parts.append(f"block {int(nxt.block_size)} drops to {nxt.max_rate_req_s:.3g} req/s "
                     f"({nxt.max_rate_req_s / best.max_rate_req_s - 1:+.0%}); memory vs card: see what decides")
    elif len(bigger):
        nxt = bigger.iloc[0]
        parts.append(f"block {int(nxt.block_size)} drops to {nxt.max_rate_req_s:.3g} req/s "
                     f"({nxt.max_rate_req_s / best.max_rate_req_s - 1:+.0%}) because internal fragmentation of "
                     f"{mean_len}-token mean sequences grows to {nxt.internal_frag_frac:.1%} of the allocated KV "
                     f"(vs {pick.internal_frag_frac:.1%}), so fewer requests fit in a batch")
    small = t[t.block_size == t.block_size.min()].iloc[0]
    if len(tied) > 1:
        parts.append(f"smaller blocks (down to {int(tied.block_size.min())}) sustain about the same rate; the larger "
                     f"is preferred because it swaps a mean sequence out and back in {pick.swap_roundtrip_ms:.0f} ms vs "
                     f"{small.swap_roundtrip_ms:.0f} ms at block {int(small.block_size)} and needs fewer block-table "
                     f"entries" + (f", while the {a.cost_note} charges no attention-kernel cost for large blocks "
                                   f"(decode step {pick.decode_step_ms:.2f} ms at every size)"
                                   if t.decode_step_ms.nunique() == 1 else
                                   f"; the {a.cost_note} prices its decode step at {pick.decode_step_ms:.2f} ms vs "
                                   f"{small.decode_step_ms:.2f} ms at block {int(small.block_size)}"))
    return int(pick.block_size), "; ".join(parts) + "."
