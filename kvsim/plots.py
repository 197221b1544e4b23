"""Plots for a run and for a sweep (matplotlib, headless); axes and titles in words with units (:mod:`kvsim.labels`)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
# Titles and labels carry user text (scenario names, grid values): draw it as typed, never as mathtext,
# so a name like "$\foo$" is a label, not a parse error.
matplotlib.rcParams["text.parse_math"] = False
matplotlib.rcParams["text.usetex"] = False
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from kvsim.labels import label, words  # noqa: E402
from kvsim.labels import title as chart_title  # noqa: E402

def log_scale(ax, axis: str = "x", base: int = 10) -> None:
    """A log axis whose tick labels are plain numbers (the default ones are mathtext, which is off here)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    for a in ((ax.xaxis,) if axis == "x" else (ax.yaxis,) if axis == "y" else (ax.xaxis, ax.yaxis)):
        (ax.set_xscale if a is ax.xaxis else ax.set_yscale)("log", base=base)
        a.set_major_locator(LogLocator(base=base, subs=(1.0, 2.0, 5.0) if base == 10 else (1.0,)))
        a.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        a.set_minor_formatter(NullFormatter())


MEM_PARTS = (("mem_used", "used", "#2c7bb6"), ("mem_reserved", "reserved", "#abd9e9"),
             ("mem_internal", "internal frag.", "#fdae61"), ("mem_external", "external frag.", "#d7191c"),
             ("mem_free", "free", "#eeeeee"))
RUN_PLOT_COLUMNS = ("start_s", "running", "waiting") + tuple(c for c, _, _ in MEM_PARTS)   # what plot_run reads


def run_figure(reqs: pd.DataFrame, its: pd.DataFrame, title: str):
    """Four panels: KV memory split over time, batch and queue over time, latency CDFs (s), normalized latency CDF."""
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    t = its.start_s.to_numpy()
    step = max(1, len(its) // 2000)          # thin very long runs for drawing
    ts = t[::step]
    total = sum(its[c].to_numpy() for c, _, _ in MEM_PARTS)
    total = np.where(total > 0, total, 1)
    axes[0].stackplot(ts, *[its[c].to_numpy()[::step] / total[::step] for c, _, _ in MEM_PARTS],
                      labels=[lbl for _, lbl, _ in MEM_PARTS], colors=[col for _, _, col in MEM_PARTS])
    axes[0].set(xlabel="simulated time (s)", ylabel="KV cache (fraction)", title="KV memory over time", ylim=(0, 1))
    axes[0].legend(loc="lower right", fontsize=7)
    axes[1].plot(ts, its.running.to_numpy()[::step], lw=0.8, label="running")
    axes[1].plot(ts, its.waiting.to_numpy()[::step], lw=0.8, label="waiting")
    axes[1].set(xlabel="simulated time (s)", ylabel="requests (count)", title="Batch and queue over time")
    axes[1].legend(fontsize=7)
    done = reqs[reqs.status == "finished"]
    share = np.arange(1, len(done) + 1) / max(1, len(done))
    for label, v in (("TTFT", done.first_token_s - done.arrival_s), ("end-to-end", done.finish_s - done.arrival_s)):
        axes[2].plot(np.sort(v.to_numpy()), share, label=label)
    axes[3].plot(np.sort(((done.finish_s - done.arrival_s) / done.output_len).to_numpy()), share)
    axes[2].set(xlabel="latency (s)", ylabel="finished requests (fraction)", title="Latency CDF")
    axes[3].set(xlabel="normalized latency (s/token)", ylabel="finished requests (fraction)",
                title="Normalized latency CDF")
    if len(done):
        log_scale(axes[2])
        log_scale(axes[3])
        axes[2].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_palette_png(fig, path, dpi: int) -> None:
    """``fig`` written to ``path`` as a PNG whose colours are reduced to a 256-entry palette (Pillow, which
    matplotlib needs anyway): a line chart looks the same at about a third of the bytes. For the plots a validation
    set commits per scenario (``overlay.png``, ``timeline.png``: 13 MB of the tree as full-colour PNGs)."""
    import io

    from PIL import Image
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    buf.seek(0)
    with Image.open(buf) as im:
        im.convert("RGB").quantize(colors=256).save(path, format="PNG", optimize=True)


def plot_run(reqs: pd.DataFrame, its: pd.DataFrame, title: str, path) -> None:
    fig = run_figure(reqs, its, title)
    fig.savefig(path, dpi=110)
    plt.close(fig)


SWEEP_METRICS = ("throughput_req_s", "normalized_latency_s", "avg_batched_requests", "preemptions")


def sweep_figure(df: pd.DataFrame, grid_keys: list[str], metrics=SWEEP_METRICS):
    """One panel per metric against the first grid key, one line per combination of the others; with
    replications (``<metric>_ci_lo/_ci_hi`` columns) the interval as error bars."""
    x = grid_keys[0]
    others = grid_keys[1:]
    metrics = [m for m in metrics if m in df]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics), 3.8), squeeze=False)
    axes = axes[0]
    numeric = pd.api.types.is_numeric_dtype(df[x])
    groups = df.groupby(others, sort=False) if others else [((), df)]
    for key, sub in groups:
        key = key if isinstance(key, tuple) else (key,)
        name = ", ".join(f"{words(k)} {v}" for k, v in zip(others, key)) or None
        sub = sub.sort_values(x) if numeric else sub
        xs = sub[x] if numeric else sub[x].astype(str)
        for ax, m in zip(axes, metrics):
            if f"{m}_ci_lo" in sub and f"{m}_ci_hi" in sub:
                err = np.vstack([(sub[m] - sub[f"{m}_ci_lo"]).clip(lower=0),
                                 (sub[f"{m}_ci_hi"] - sub[m]).clip(lower=0)])
                ax.errorbar(xs, sub[m], yerr=err, marker="o", capsize=3, label=name)
            else:
                ax.plot(xs, sub[m], marker="o", label=name)
    for ax, m in zip(axes, metrics):
        ax.set(xlabel=label(x), ylabel=label(m), title=chart_title(m, x))
        if m.startswith("normalized_latency"):
            log_scale(ax, "y")
    if others:
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_sweep(df: pd.DataFrame, grid_keys: list[str], path, metrics=SWEEP_METRICS) -> None:
    fig = sweep_figure(df, grid_keys, metrics)
    fig.savefig(path, dpi=110)
    plt.close(fig)
