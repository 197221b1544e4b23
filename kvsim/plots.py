"""Plots for a run and for a sweep (matplotlib, headless)."""
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

MEM_PARTS = (("mem_used", "used", "#2c7bb6"), ("mem_reserved", "reserved", "#abd9e9"),
             ("mem_internal", "internal frag.", "#fdae61"), ("mem_external", "external frag.", "#d7191c"),
             ("mem_free", "free", "#eeeeee"))
RUN_PLOT_COLUMNS = ("start_s", "running", "waiting") + tuple(c for c, _, _ in MEM_PARTS)   # what plot_run reads


def plot_run(reqs: pd.DataFrame, its: pd.DataFrame, title: str, path) -> None:
    """Three panels: KV memory split over time, batch size over time, latency CDFs."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    t = its.start_s.to_numpy()
    step = max(1, len(its) // 2000)          # thin very long runs for drawing
    ts = t[::step]
    total = sum(its[c].to_numpy() for c, _, _ in MEM_PARTS)
    total = np.where(total > 0, total, 1)
    axes[0].stackplot(ts, *[its[c].to_numpy()[::step] / total[::step] for c, _, _ in MEM_PARTS],
                      labels=[lbl for _, lbl, _ in MEM_PARTS], colors=[col for _, _, col in MEM_PARTS])
    axes[0].set(xlabel="time (s)", ylabel="fraction of KV cache", title="KV memory", ylim=(0, 1))
    axes[0].legend(loc="lower right", fontsize=7)
    axes[1].plot(ts, its.running.to_numpy()[::step], lw=0.8, label="running requests")
    axes[1].plot(ts, its.waiting.to_numpy()[::step], lw=0.8, label="waiting")
    axes[1].set(xlabel="time (s)", ylabel="requests", title="Batch and queue")
    axes[1].legend(fontsize=7)
    done = reqs[reqs.status == "finished"]
    if len(done):
        for label, v in (("normalized latency (s/token)", (done.finish_s - done.arrival_s) / done.output_len),
                         ("TTFT (s)", done.first_token_s - done.arrival_s)):
            x = np.sort(v.to_numpy())
            axes[2].plot(x, np.arange(1, len(x) + 1) / len(x), label=label)
        axes[2].set_xscale("log")
    axes[2].set(xlabel="seconds", ylabel="CDF", title="Latency")
    axes[2].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sweep(df: pd.DataFrame, grid_keys: list[str], path,
               metrics=("throughput_req_s", "normalized_latency_s", "avg_batched_requests",
                        "preemptions")) -> None:
    """One panel per metric against the first grid key, one line per combination of the others."""
    x = grid_keys[0]
    others = grid_keys[1:]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6))
    groups = df.groupby(others, sort=False) if others else [((), df)]
    for key, sub in groups:
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{k}={v}" for k, v in zip(others, key)) or None
        sub = sub.sort_values(x) if pd.api.types.is_numeric_dtype(sub[x]) else sub
        for ax, m in zip(axes, metrics):
            ax.plot(sub[x].astype(str) if not pd.api.types.is_numeric_dtype(sub[x]) else sub[x],
                    sub[m], marker="o", label=label)
    for ax, m in zip(axes, metrics):
        ax.set(xlabel=x, title=m)
        if m.startswith("normalized_latency"):
            ax.set_yscale("log")
    if others:
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
