"""The block-size report as one self-contained HTML file: PNG plots inlined as base64, no external assets."""
from __future__ import annotations

import html
import importlib.util
from datetime import datetime, timezone

from kvsim.labels import slo_words
from kvsim.plan.slo import format_slo
from kvsim.report.blocksize import BLOCK_TABLE_ENTRY_BYTES, BlockSizeAnalysis
from kvsim.report.htmlkit import CSS
from kvsim.report.htmlkit import png as _png


def _figures(a: BlockSizeAnalysis) -> dict[str, str]:
    from kvsim.plots import log_scale, plt
    t = a.table
    x = [str(b) for b in t.block_size]
    figs = {}
    fig, ax = plt.subplots(figsize=(8, 3.6))
    w = 0.8 / len(a.modes)
    for i, m in enumerate(a.modes):
        ax.bar([j + (i - (len(a.modes) - 1) / 2) * w for j in range(len(x))],
               t[f"max_rate_{m}"].fillna(0), w, label=f"preemption: {m}")
    if "max_rate_v1" in t:
        ax.plot(range(len(x)), t["max_rate_v1"].fillna(0), "kD--", ms=5, label="policy v1 (recompute only)")
    ax.set_xticks(range(len(x)), x)
    ax.set(xlabel="KV block size (tokens)", ylabel="max rate meeting the SLOs (req/s)",
           title=f"Max rate meeting {slo_words(a.slo)}")
    ax.axvline(x.index(str(a.block_size)), color="k", ls=":", lw=1) if a.block_size else None
    ax.legend(fontsize=8)
    figs["rate"] = _png(fig)
    fig, ax = plt.subplots(figsize=(8, 3.8))
    cmap = plt.get_cmap("viridis")
    for i, b in enumerate(a.block_sizes):
        pts = [(r, v) for r, v in a.curves.get((b, a.modes[0]), []) if v is not None]
        if pts:
            ax.plot(*zip(*pts), "o-", ms=3, color=cmap(i / max(1, len(a.block_sizes) - 1)), label=f"B={b}")
    if "normalized_latency_s" in a.slo:
        ax.axhline(a.slo["normalized_latency_s"], color="r", ls="--", lw=1, label="SLO")
    log_scale(ax, "y")
    ax.set(xlabel="request rate (req/s)", ylabel="normalized latency (s/token)",
           title=f"Normalized latency vs rate (search probes, preemption {a.modes[0]})")
    ax.legend(fontsize=7, ncol=3)
    figs["latency"] = _png(fig)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    axes[0].plot(x, t.internal_frag_frac * 100, "o-", label="at final length (workload)")
    axes[0].plot(x, t.sim_internal_frag_frac * 100, "s-", label="time-averaged (simulated, at max rate)")
    axes[0].set(xlabel="KV block size (tokens)", ylabel="internal fragmentation (% of KV)",
                title="Internal fragmentation")
    axes[0].legend(fontsize=8)
    axes[1].plot(x, t.block_table_frac * 100, "o-", color="#7b3294")
    log_scale(axes[1], "y")
    axes[1].set(xlabel="KV block size (tokens)", ylabel="block table (% of KV bytes)",
                title="Block-table overhead")
    figs["memory"] = _png(fig)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    axes[0].plot(x, t.decode_step_ms, "o-")
    axes[0].set(xlabel="KV block size (tokens)", ylabel="decode step time (ms)", title=f"Decode step ({a.cost_note})",
                ylim=(0, 1.2 * t.decode_step_ms.max()))
    axes[1].plot(x, t.swap_roundtrip_ms, "o-", label="swap out + in")
    axes[1].plot(x, t.recompute_ms, "s--", label="recompute (prefill)")
    log_scale(axes[1], "y")
    axes[1].set(xlabel="KV block size (tokens)", ylabel="time per mean-length sequence (ms)",
                title="Swap vs recompute cost (cost model)")
    axes[1].legend(fontsize=8)
    figs["kernel"] = _png(fig)
    fig, ax = plt.subplots(figsize=(8, 3.4))
    ax.plot(x, t.prefix_hit_frac * 100, "o-", color="#1a9641")
    ax.set(xlabel="KV block size (tokens)", ylabel="prefix-cache hits (% of prompt tokens)", ylim=(0, 100),
           title="Prefix-cache hit rate")
    figs["prefix"] = _png(fig)
    return figs


def render(a: BlockSizeAnalysis, scenario_desc: str = "") -> str:
    figs = _figures(a)
    has_cal = importlib.util.find_spec("kvsim.cost.calibrated") is not None
    cal = ("<code>kvsim.cost.calibrated</code> exists: when the scenario's <code>cost.model</code> selects a "
           "calibrated profile, this panel is priced by it and shows the measured per-block-size kernel time "
           f"(this report used {html.escape(a.cost_note)})." if has_cal else
           "No calibrated profile is available (<code>kvsim/cost/calibrated.py</code> does not exist yet); "
           "with one, this panel would show the measured attention-kernel time per block size — the paper "
           "measured small blocks (&lt; 16) as slower because each thread block reads too little KV (Fig. 18a).")
    table = '<div class="fit">' + a.table.drop(columns=["cost_model"], errors="ignore").to_html(
        index=False, float_format=lambda v: f"{v:.4g}", na_rep="-") + "</div>"
    e = html.escape
    measured = ""
    if a.attribution is not None:
        att = a.attribution.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-")
        measured = (f"<h2>What decides: memory or the card</h2><p>{e(a.decides)}</p><div class=\"fit\">{att}</div>"
                    "<p><code>memory_only_rate_req_s</code>: the same search with every block size priced by the "
                    "reference block's measured kernels (copies and swaps per token), so it differs from the "
                    "reference only through fragmentation and batch size. <code>memory_term</code> and "
                    "<code>card_term</code> split the log-rate gap to the recommended block "
                    "(<code>kvsim/report/blocksize_profile.py</code>).</p>")
        if a.not_measured:
            measured += (f"<p>Not measured (not in the profile, not priced): block sizes "
                         f"{e(', '.join(map(str, a.not_measured)))}.</p>")
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>kvsim block-size report: {e(a.scenario)}</title>
<style>{CSS}</style></head><body>
<h1>Block-size report: {e(a.scenario)}</h1>
<p>{e(scenario_desc)}<br>SLO: <b>{e(format_slo(a.slo))}</b>. Block sizes {e(', '.join(map(str, a.block_sizes)))};
preemption modes {e(', '.join(a.modes))}. Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by kvsim.</p>
<p>Priced by: <b>{e(a.pricing)}</b>.</p>
<div class="rec"><h2>Recommendation: block size {a.block_size}</h2><p>{e(a.reason)}</p></div>
{measured}
<h2>Throughput at the SLO</h2>{figs['rate']}
<p>Highest Poisson rate meeting the SLOs, from the planner's search (bracket by doubling, then bisection to
{a.rel_tol:.0%}); a run with unfinished requests fails. Each probe has at least 600 requests and 60 s of arrivals.</p>
<h2>Normalized latency vs rate</h2>{figs['latency']}
<h2>Memory split</h2>{figs['memory']}
<p><b>Internal fragmentation</b> (left): the unused tail of each sequence's last block,
<code>ceil(L/B)&middot;B &minus; L</code> slots, as a share of the allocated slots — once for the workload's
sequences at their final length <code>L</code> (prompt + output), and as the simulator measured it, time-averaged
over the run at the max rate (sequences are shorter on average while they grow, so it is lower).
<b>Block-table overhead</b> (right): <code>ceil(L/B)</code> entries &times; {BLOCK_TABLE_ENTRY_BYTES} bytes (int32) per
sequence, divided by the KV bytes it maps (<code>L &times; kv_bytes_per_token</code>); it is negligible at every
size because one token's KV is hundreds of KB.</p>
<h2>Kernel cost</h2>{figs['kernel']}
<p>Left: one decode step of the typical batch (the average batch at the max rate, contexts at half the mean
length) priced by the scenario's cost model ({e(a.cost_note)}) at each block size. <b>The roofline cost model has
no block-size term in attention</b>: it charges the KV bytes read, whatever the blocking, so the line is flat and
block size acts only through memory (fragmentation, swap). {cal}
Right: swapping a mean-length sequence out and back costs one host-device transfer per block, layer and K/V
(vLLM's <code>swap_blocks</code>), so small blocks swap slowly (paper Fig. 19a); recomputing it is one prefill.</p>
<h2>Swap vs recompute</h2>
<p>The bars of the first plot compare the preemption modes at each block size under the memory pressure of the max
rate (preemptions happen there). Preemptions per request at the max rate are in the table.</p>
{f'<h2>vLLM V0 vs V1</h2><p>{e(a.v1_reason)}</p>' if a.v1_reason else ''}
<h2>Prefix caching</h2>{figs['prefix']}
<p>Hit rate = &sum; <code>cached_tokens</code> / &sum; <code>prompt_len</code> over finished requests, from the
requests frame, with prefix caching on and {e(a.prefix_note)}, at 80% of the best max rate. Only full blocks are
cached, so a prefix that is not a multiple of the block size loses its last partial block; hits also include a
request's own blocks found again after a preemption by recompute.</p>
<h2>All numbers</h2>{table}
</body></html>
"""
