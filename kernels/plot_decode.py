"""Plots for bench_decode.py's CSV (runs on the GPU box or anywhere with pandas + matplotlib).

    python kernels/plot_decode.py results_H100/decode_bench.csv results_H100/

Writes ``decode_latency.png`` (per model: latency vs context for each batch, paged vs
contiguous vs SDPA vs FlexAttention, plus achieved bandwidth as % of the measured copy
bandwidth) and ``decode_blocksize.png`` (kernel-level Fig. 18b: latency vs block size);
:func:`summary` prints bench_decode.py's closing table.
"""
from __future__ import annotations

import os
import sys


def plot(csv_path: str, out_dir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.read_csv(csv_path)
    # kernel time: CUDA-graph replay where measured (no launch overhead), else the do_bench median;
    # repeated rows (column rep) are averaged
    if "graph_ms" in df:
        df["ms"] = df["graph_ms"].fillna(df["ms"])
    df = df[df["ms"].notna()]
    keys = [c for c in ("section", "model", "batch", "ctx", "block_size", "impl") if c in df]
    df = df.groupby(keys, dropna=False, as_index=False).agg(ms=("ms", "mean"), bytes=("bytes", "first"))
    copy = df[df["impl"] == "d2d_copy"]
    copy_gbps = float(copy["bytes"].iloc[0] / copy["ms"].iloc[0] / 1e6) if len(copy) else float("nan")
    df["pct_copy"] = 100 * df["bytes"] / df["ms"] / 1e6 / copy_gbps
    grid = df[df["section"] == "grid"]
    models = list(dict.fromkeys(grid["model"]))
    written = []
    if len(grid):
        fig, axes = plt.subplots(2, len(models), figsize=(6 * len(models), 8), squeeze=False)
        styles = {"paged": "-o", "contiguous": "--s", "sdpa": ":^", "flex_paged": "-.x"}
        for j, model in enumerate(models):
            g = grid[grid["model"] == model]
            ax = axes[0][j]
            for (impl, batch), s in g.groupby(["impl", "batch"]):
                if impl in styles:
                    s = s.sort_values("ctx")
                    ax.plot(s["ctx"], s["ms"] * 1e3, styles[impl], label=f"{impl} B={batch}")
            ax.set(xscale="log", yscale="log", xlabel="context tokens", ylabel="kernel time (us, graph replay)",
                   title=model)
            ax.legend(fontsize=6, ncol=2)
            ax = axes[1][j]
            for batch, s in g[g["impl"] == "paged"].groupby("batch"):
                s = s.sort_values("ctx")
                ax.plot(s["ctx"], s["pct_copy"], "-o", label=f"paged B={batch}")
            ax.axhline(80, color="gray", lw=0.8, ls="--")
            ax.set(xscale="log", xlabel="context tokens", ylabel="% of d2d copy bandwidth", ylim=(0, 110))
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(out_dir, "decode_latency.png")
        fig.savefig(path, dpi=110)
        written.append(path)
    sweep = df[df["section"] == "blocksize"]
    if len(sweep):
        fig, ax = plt.subplots(figsize=(6, 4))
        for model, s in sweep.groupby("model"):
            p = s[s["impl"] == "paged"].sort_values("block_size")
            line = ax.plot(p["block_size"], p["ms"] * 1e3, "-o", label=f"paged {model}")
            c = s[s["impl"] == "contiguous"]
            if len(c):
                ax.axhline(float(c["ms"].iloc[0]) * 1e3, color=line[0].get_color(), ls="--", lw=0.8,
                           label=f"contiguous {model}")
        b = sweep.iloc[0]
        ax.set(xscale="log", xlabel="block size (tokens)", ylabel="kernel time (us)",
               title=f"decode vs block size (B={b['batch']}, ctx={b['ctx']})")
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(out_dir, "decode_blocksize.png")
        fig.savefig(path, dpi=110)
        written.append(path)
    return written


def summary(b, pytest_summary, models, batches, ctxs, card):
    """Kernel times from CUDA-graph replays (launch overhead excluded); do_bench medians in the CSV."""
    get, spread = {}, []
    for r in b.rows:
        if r["section"] != "grid":
            continue
        key = (r["model"], r["batch"], r["ctx"], r["impl"])
        if key in get and r.get("graph_ms") and get[key].get("graph_ms"):
            a, c = get[key]["graph_ms"], r["graph_ms"]
            spread.append(abs(a - c) / (a + c) * 2)
            r = dict(r, graph_ms=(a + c) / 2, ms=(get[key]["ms"] + r["ms"]) / 2)
            r["pct_copy_graph"] = round(100 * r["bytes"] / r["graph_ms"] / 1e6 / b.copy_gbps, 1)
        get[key] = r
    print(f"\n== {card} | copy {b.copy_gbps:.0f} GB/s | pytest: {pytest_summary}")
    print("times in us from CUDA-graph replays; %cp = K+V bytes / time / copy bandwidth; ovh = paged/contig-1;"
          " db = paged do_bench median (with launch overhead)")
    print(f"{'model':9}{'B':>4}{'ctx':>6}{'paged':>8}{'%cp':>6}{'contig':>8}{'ovh%':>6}{'nosplit':>8}"
          f"{'sdpa':>8}{'flex':>8}{'db':>8}")

    def us(model, batch, ctx, impl, key="graph_ms"):
        v = get.get((model, batch, ctx, impl), {}).get(key)
        return v * 1e3 if v else float("nan")
    for model in models:
        for batch in batches:
            for ctx in ctxs:
                p, c = us(model, batch, ctx, "paged"), us(model, batch, ctx, "contiguous")
                pct = get.get((model, batch, ctx, "paged"), {}).get("pct_copy_graph", float("nan"))
                print(f"{model[:8]:9}{batch:>4}{ctx:>6}{p:8.1f}{pct:6.1f}{c:8.1f}{100 * (p / c - 1):6.1f}"
                      f"{us(model, batch, ctx, 'paged_nosplit'):8.1f}{us(model, batch, ctx, 'sdpa'):8.1f}"
                      f"{us(model, batch, ctx, 'flex_paged'):8.1f}{us(model, batch, ctx, 'paged', 'ms'):8.1f}")
    for model in models:
        sw = [r for r in b.rows if r["section"] == "blocksize" and r["model"] == model and r.get("graph_ms")]
        print(f"blocksize {model[:8]} (us): " + " ".join(
            f"{r['block_size'] if r['impl'] == 'paged' else 'C'}:{r['graph_ms'] * 1e3:.0f}" for r in sw))
    if spread:
        spread.sort()
        print(f"repeat spread |a-b|/mean over {len(spread)} pairs: median {100 * spread[len(spread) // 2]:.1f}%,"
              f" max {100 * spread[-1]:.1f}%")
    print("paged configs:", {m: str(c) for m, c in b.best.items()})
    print("contiguous configs:", {m: str(c) for m, c in b.best_contig.items()})



if __name__ == "__main__":
    print(plot(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else os.path.dirname(sys.argv[1])))
