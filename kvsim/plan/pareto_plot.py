"""``pareto.png``: every candidate in (objective, latency), the Pareto front drawn, the recommendation on it.

The x axis is the plan's objective (goodput per GPU, requests per dollar or
total rate) and y the normalized latency at the candidate's max rate. The front
is the planner's ``pareto`` column, computed in the same two quantities, so the
recommendation (best objective, ties to lower latency) is always one of its
points. Points are numbered; the numbers go where they overlap neither another
number nor a marker (candidate spots tried in rings around the point, in the
figure's pixels), coincident points share one number list, and a key beside the
axes spells out each number's configuration.
"""
from __future__ import annotations

import pandas as pd

from kvsim.labels import label, slo_words, words

OFFSETS = [(dx * r, dy * r) for r in (1, 2, 3, 4.5) for dx, dy in
           ((5, 5), (5, -11), (-11, 5), (-11, -11), (8, -3), (-16, -3), (-3, 9), (-3, -15))]


def candidate_name(row, keys: list[str], show_replicas: bool) -> str:
    parts = [f"{words(k)} {row[k]}" for k in keys if k in row]
    if show_replicas:
        parts.append(f"{int(row['replicas'])} replica(s)")
    return ", ".join(parts) or "the scenario as is"


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _overlaps(box, boxes) -> bool:
    return any(box.x0 < b.x1 and b.x0 < box.x1 and box.y0 < b.y1 and b.y0 < box.y1 for b in boxes)


def _place_numbers(ax, fig, groups: list[tuple[float, float, str]]) -> list:
    """Annotate each (x, y, text) where its box clears every placed box and every marker; returns the texts."""
    from matplotlib.transforms import Bbox
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    pix = [ax.transData.transform((x, y)) for x, y, _ in groups]
    taken = [Bbox.from_extents(px - 6, py - 6, px + 6, py + 6) for px, py in pix]   # the markers
    texts = []
    for (x, y, text) in groups:
        for dx, dy in OFFSETS:
            t = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=8)
            box = t.get_window_extent(renderer).expanded(1.05, 1.1)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not _overlaps(box, taken):
                taken.append(box)
                texts.append(t)
                break
            t.remove()
    return texts


def pareto_figure(res, keys: list[str], objective_col: str):
    """The figure (module doc) and the rows drawn, numbered from 1 in table order."""
    from kvsim.plots import plt
    t = res.table.dropna(subset=[objective_col, "normalized_latency_s"]).copy()
    t["number"] = range(1, len(t) + 1)
    show_rep = "replicas" in t and t.replicas.nunique() > 1
    names = [_short(f"{n}: {candidate_name(r, keys, show_rep)}") for n, (_, r) in zip(t.number, t.iterrows())]
    fig, (ax, kax) = plt.subplots(1, 2, figsize=(11, max(4.8, 0.17 * len(t) + 2.4)),
                                  gridspec_kw={"width_ratios": [3, 2]})
    ax.scatter(t[objective_col], t.normalized_latency_s, c="#999999", s=25, label="candidate", zorder=2)
    front = t[t.pareto].sort_values(objective_col)
    ax.plot(front[objective_col], front.normalized_latency_s, "o-", c="#d7191c", ms=5, label="Pareto front",
            zorder=3)
    rec = t[t.recommended] if "recommended" in t else t.iloc[:0]
    if len(rec):
        ax.scatter(rec[objective_col], rec.normalized_latency_s, marker="*", s=260, c="#fdae61", edgecolors="k",
                   zorder=5, label="recommended")
    pad = lambda lo, hi: (lo - 0.12 * (hi - lo or abs(hi) or 1), hi + 0.12 * (hi - lo or abs(hi) or 1))
    if len(t):
        ax.set_xlim(*pad(t[objective_col].min(), t[objective_col].max()))
        ax.set_ylim(*pad(t.normalized_latency_s.min(), t.normalized_latency_s.max()))
    ax.set(xlabel=label(objective_col), ylabel="normalized latency at that rate (s/token)")
    ax.set_title(f"{words(objective_col)[0].upper() + words(objective_col)[1:]} vs latency of each candidate\n"
                 f"at its max rate meeting {slo_words(res.slo)}", fontsize=10)
    kax.axis("off")
    handles, labels = ax.get_legend_handles_labels()
    kax.legend(handles, labels, loc="upper left", fontsize=8, frameon=False)
    kax.text(0.0, 0.80, "\n".join(names), va="top", ha="left", fontsize=7, family="monospace",
             transform=kax.transAxes)
    fig.tight_layout()
    groups = {}
    for n, (_, r) in zip(t.number, t.iterrows()):
        groups.setdefault((round(float(r[objective_col]), 12), round(float(r.normalized_latency_s), 12)), []).append(n)
    _place_numbers(ax, fig, [(x, y, ",".join(map(str, ns))) for (x, y), ns in groups.items()])
    return fig, t


def plot_pareto(res, keys: list[str], path, objective_col: str) -> None:
    from kvsim.plots import plt
    fig, _ = pareto_figure(res, keys, objective_col)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def front_points(table: pd.DataFrame, objective_col: str) -> set[tuple[float, float]]:
    """The (objective, latency) points of the drawn front."""
    f = table[table.pareto].dropna(subset=[objective_col, "normalized_latency_s"])
    return set(zip(f[objective_col].astype(float), f.normalized_latency_s.astype(float)))
