"""Figures of ``kvsim paper``: one PNG per paper figure, the paper's value in the title where known."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from kvsim.labels import label, words
from kvsim.plots import MEM_PARTS, log_scale, plt
from kvsim.report.paper_values import PAPER_VALUES


def _title(key: str, text: str) -> str:
    pv = PAPER_VALUES.get(key, {}).get("paper")
    return f"{text}\n(paper: {pv})" if pv else text


DATASET_WORDS = {"sharegpt": "ShareGPT-like", "alpaca": "Alpaca-like"}


def _lines(ax, df, x, y, by, logy=False):
    """One line per value of ``by``; axes in words with units (:mod:`kvsim.labels`)."""
    for k, g in df.groupby(by, sort=False):
        g = g.sort_values(x)
        ax.plot(g[x], g[y], "o-", label=DATASET_WORDS.get(str(k), str(k)))
    ax.set(xlabel=label(x), ylabel=label(y))
    if logy:
        log_scale(ax, "y")
    ax.legend(fontsize=7, title=words(by) if by in ("engine.allocator", "engine.enable_prefix_caching") else None,
              title_fontsize=7)


def draw_all(res: dict, out: Path, meas: dict | None = None) -> None:
    from kvsim.report import paper_v1, paper_window
    if "v1_parallel" in res:
        paper_v1.draw(res, out, (meas or {}).get("v1", {}).get("threshold_s", 0.1))
    if "window" in res:
        paper_window.draw(res, out)
    fig, ax = plt.subplots(figsize=(6, 4))
    f2 = res["fig2"].set_index("engine.allocator")
    bottom = pd.Series(0.0, index=f2.index)
    for col, label, color in MEM_PARTS:
        v = f2[{"mem_internal": "mem_internal_frag_frac", "mem_external": "mem_external_frag_frac"}.get(
            col, f"{col}_frac")]
        ax.bar(f2.index, v, bottom=bottom, label=label, color=color)
        bottom += v
    ax.set(xlabel="KV allocator", ylabel="KV cache (fraction)",
           title=_title("fig2", "Fig. 2: KV memory split while full (ShareGPT-like @ "
                                f"{res['fig2']['workload.rate_req_s'].iloc[0]:g} req/s)"))
    ax.legend(fontsize=7)
    _save(fig, out / "fig2.png")
    for ds in ("sharegpt", "alpaca"):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        df = res[f"fig12_{ds}"]
        _lines(axes[0], df, "workload.rate_req_s", "normalized_latency_s", "engine.allocator", logy=True)
        axes[0].set_title(_title("fig12", f"Fig. 12: {DATASET_WORDS[ds]} latency vs rate"))
        _lines(axes[1], df, "workload.rate_req_s", "avg_batched_requests", "engine.allocator")
        axes[1].set_title(_title("fig13", f"Fig. 13: {DATASET_WORDS[ds]} batched requests vs rate"))
        _save(fig, out / f"fig12_13_{ds}.png")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, col in ((axes[0], "fig14_parallel", "workload.n"), (axes[1], "fig14_beam", "workload.beam_width")):
        _lines(ax, res[key], col, "throughput_tok_s", "engine.allocator")
        ax.set_title(_title("fig14", f"Fig. 14: throughput vs {words(col)} @ 40 req/s (overload)"))
    _save(fig, out / "fig14.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, col, label in (("fig14_parallel", "workload.n", "parallel sampling"),
                            ("fig14_beam", "workload.beam_width", "beam search")):
        d = res[key][res[key]["engine.allocator"] == "paged"]
        ax.plot(d[col], d.sharing_saved_frac * 100, "o-", label=f"{label} (paper {PAPER_VALUES['fig15_' + key.split('_')[1]]['paper']})")
    ax.set(xlabel="n or beam width (sequences per request)", ylabel="KV saved by sharing (%)",
           title="Fig. 15: memory saved by sharing")
    ax.legend(fontsize=7)
    _save(fig, out / "fig15.png")
    if "fig16" in res:                     # absent when a profile holds another model than Fig. 16's
        fig, ax = plt.subplots(figsize=(6, 4))
        f16 = res["fig16"].assign(label=lambda d: d.shots + " caching=" + d["engine.enable_prefix_caching"].astype(str))
        _lines(ax, f16, "workload.rate_req_s", "normalized_latency_s", "label", logy=True)
        ax.set_title(_title("fig16", "Fig. 16: shared prefix, latency vs rate"))
        _save(fig, out / "fig16.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    _lines(ax, res["fig17"], "workload.rate_req_s", "normalized_latency_s", "engine.allocator", logy=True)
    ax.set_title(_title("fig17", "Fig. 17: chatbot (512-token history), latency vs rate"))
    _save(fig, out / "fig17.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    _lines(ax, res["fig18b"], "engine.block_size", "normalized_latency_s", "dataset", logy=True)
    log_scale(ax, "x", base=2)
    ax.set_title(_title("fig18b", "Fig. 18b: latency vs block size"), fontsize=8)
    _save(fig, out / "fig18b.png")
    if "fig19" not in res:                 # a profile with fewer than two of Fig. 19's block sizes
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    _lines(ax, res["fig19"], "engine.block_size", "normalized_latency_s", "mode", logy=True)
    log_scale(ax, "x", base=2)
    ax.set_title(_title("fig19", "Fig. 19: swap vs recompute, latency vs block size"), fontsize=8)
    _save(fig, out / "fig19.png")


def _save(fig, path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
