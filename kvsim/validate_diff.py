"""Differential validation: where, and in which kind of step, the simulator departs from the engine.

``kvsim validate`` (live and ``--replay``) calls :func:`write_diff` per scenario, which writes into
the scenario's folder:

* ``step_kinds.csv`` / ``step_kinds.md`` — steps grouped by kind, with count, mean, p50 and p90 step
  duration predicted (simulator iterations) vs measured (engine iterations) and the relative error of
  the mean. Kinds are exclusive and taken in this order: ``swap`` (any swap-in/out blocks), ``copy``
  (any copy-on-write block copies), then by tokens: ``mixed`` (prefill tokens and decode sequences in
  one step), ``prefill-only``, ``decode-only``. A step with neither prefill nor decode work is
  ``other`` (listed only when there is one). A kind whose columns a record set lacks is reported as
  absent (no counts), not guessed; that side's steps of the absent kind then count under their
  token kind. Where the engine's records hold them, each kind's mean host time on the critical path
  (``cpu_s``: the simulator prices it inside the step) and the share of its steps prepared while the step
  before flew (``host_ahead``, overlapped scheduling) are listed too: a kind priced fast because its host
  work was on the critical path shows there (mixed steps before ``runtime.async_prompt_steps``).
* ``step_sizes.csv`` / ``step_sizes.md`` — the same steps cut by size (decode rows, prompt tokens):
  :mod:`kvsim.validate_sizes`.
* ``timeline.csv`` / ``timeline.png`` — the scheduler's decisions of both runs on one time grid
  (``bins`` equal bins from the first step start to the last step end; a step falls in the bin of its
  start): batch size (duration-weighted mean of ``batched_requests``), scheduled tokens (sum of
  ``batched_tokens``), KV blocks in use (max of ``blocks_in_use``) and cumulative preemptions.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

KINDS = ("decode-only", "prefill-only", "mixed", "swap", "copy")
KIND_COLUMNS = {                     # the iteration columns each kind's test reads
    "swap": ("swap_in_blocks", "swap_out_blocks"),
    "copy": ("cow_copies",),
    "mixed": ("prefill_tokens", "decode_seqs"),
    "prefill-only": ("prefill_tokens", "decode_seqs"),
    "decode-only": ("prefill_tokens", "decode_seqs"),
}
STEP_COLUMNS = ("kind", "available", "steps_predicted", "steps_measured", "mean_predicted_s",
                "mean_measured_s", "p50_predicted_s", "p50_measured_s", "p90_predicted_s",
                "p90_measured_s", "rel_error_mean", "host_measured_s", "ahead_measured")
TIMELINE_QUANTITIES = (("batch", "batch size\n(requests)"), ("tokens", "scheduled tokens\n(tokens per bin)"),
                       ("blocks_max", "KV blocks in use\n(blocks, bin's max)"),
                       ("preemptions_cum", "preemptions\n(count, cumulative)"))


def has_columns(its: pd.DataFrame, kind: str) -> bool:
    return all(c in its.columns for c in KIND_COLUMNS[kind])


def classify_steps(its: pd.DataFrame) -> pd.Series:
    """The kind of every step (index as ``its``); ``None`` where a needed column is missing."""
    kind = pd.Series([None] * len(its), index=its.index, dtype=object)
    if has_columns(its, "decode-only"):
        pre, dec = its.prefill_tokens > 0, its.decode_seqs > 0
        kind[~pre & ~dec] = "other"
        kind[~pre & dec] = "decode-only"
        kind[pre & ~dec] = "prefill-only"
        kind[pre & dec] = "mixed"
    if has_columns(its, "copy"):                     # later assignments take precedence
        kind[its.cow_copies > 0] = "copy"
    if has_columns(its, "swap"):
        kind[(its.swap_in_blocks + its.swap_out_blocks) > 0] = "swap"
    return kind


def rel_err(pred, meas) -> float:
    """(predicted - measured) / |measured|; NaN if either is missing, inf for a miss of a measured 0."""
    if pred is None or meas is None:
        return float("nan")
    if meas == 0:
        return 0.0 if pred == 0 else float("inf")
    return (pred - meas) / abs(meas)


def _pct(x: np.ndarray, q: float) -> float:
    return float(np.percentile(x, q)) if len(x) else float("nan")


def step_kind_table(sim_its: pd.DataFrame, eng_its: pd.DataFrame) -> pd.DataFrame:
    sim_kind, eng_kind = classify_steps(sim_its), classify_steps(eng_its)
    kinds = list(KINDS) + (["other"] if (sim_kind == "other").any() or (eng_kind == "other").any() else [])
    rows = []
    for k in kinds:
        available = k == "other" or (has_columns(sim_its, k) and has_columns(eng_its, k))
        if not available:
            rows.append({"kind": k, "available": False})
            continue
        p = sim_its.duration_s[sim_kind == k].to_numpy(dtype=float)
        m = eng_its.duration_s[eng_kind == k].to_numpy(dtype=float)
        mp = float(p.mean()) if len(p) else float("nan")
        mm = float(m.mean()) if len(m) else float("nan")
        mine = eng_kind == k
        host = {c: float(eng_its[col][mine].mean()) if col in eng_its.columns and mine.any() else float("nan")
                for c, col in (("host_measured_s", "cpu_s"), ("ahead_measured", "host_ahead"))}
        rows.append({"kind": k, "available": True, "steps_predicted": len(p), "steps_measured": len(m), **host,
                     "mean_predicted_s": mp, "mean_measured_s": mm,
                     "p50_predicted_s": _pct(p, 50), "p50_measured_s": _pct(m, 50),
                     "p90_predicted_s": _pct(p, 90), "p90_measured_s": _pct(m, 90),
                     "rel_error_mean": rel_err(mp, mm) if len(p) and len(m) else float("nan")})
    return pd.DataFrame(rows, columns=list(STEP_COLUMNS))


def step_kind_markdown(name: str, table: pd.DataFrame) -> str:
    def ms(x) -> str:
        return "–" if pd.isna(x) else f"{1e3 * x:.2f}"

    host = bool("host_measured_s" in table.columns and table.host_measured_s.notna().any())
    ahead = bool("ahead_measured" in table.columns and table.ahead_measured.notna().any())
    extra = (" host eng |" if host else "") + (" ahead eng |" if ahead else "")
    lines = [f"# Step kinds: {name}", "", "Step duration in ms, simulator (sim) vs engine (eng)."
             + (" host eng: the engine's mean host time on the critical path (inside its step time)." if host else "")
             + (" ahead eng: the share of its steps prepared while the step before flew." if ahead else ""), "",
             "| kind | steps sim | steps eng | mean sim | mean eng | mean error | p50 sim | p50 eng "
             "| p90 sim | p90 eng |" + extra, "|---|---|---|---|---|---|---|---|---|---|" + "---|" * (host + ahead)]
    for _, r in table.iterrows():
        if not r.available:
            lines.append(f"| {r.kind} | absent (column missing) |||||||||" + "|" * (host + ahead))
            continue
        err = "–" if pd.isna(r.rel_error_mean) else f"{r.rel_error_mean:+.1%}"
        share = "–" if pd.isna(r.ahead_measured) else f"{r.ahead_measured:.2f}"
        tail = (f" {ms(r.host_measured_s)} |" if host else "") + (f" {share} |" if ahead else "")
        lines.append(f"| {r.kind} | {int(r.steps_predicted)} | {int(r.steps_measured)} | "
                     f"{ms(r.mean_predicted_s)} | {ms(r.mean_measured_s)} | {err} | {ms(r.p50_predicted_s)} | "
                     f"{ms(r.p50_measured_s)} | {ms(r.p90_predicted_s)} | {ms(r.p90_measured_s)} |" + tail)
    if not table.available.all():
        lines += ["", "Absent kinds: their steps count under their token kind (decode-only, ...)."]
    return "\n".join(lines) + "\n"


def _bin_one(its: pd.DataFrame, edges: np.ndarray) -> dict[str, np.ndarray]:
    n = len(edges) - 1
    idx = np.clip(np.searchsorted(edges, its.start_s.to_numpy(dtype=float), side="right") - 1, 0, n - 1)
    w = np.maximum(its.duration_s.to_numpy(dtype=float), 1e-12)
    steps = np.bincount(idx, minlength=n)
    wsum = np.bincount(idx, weights=w, minlength=n)
    batch = np.bincount(idx, weights=w * its.batched_requests.to_numpy(dtype=float), minlength=n)
    blocks = np.full(n, -np.inf)
    np.maximum.at(blocks, idx, its.blocks_in_use.to_numpy(dtype=float))
    pre = np.zeros(n)
    np.add.at(pre, idx, its.preempted.to_numpy(dtype=float))
    return {"steps": steps,
            "batch": np.where(steps > 0, batch / np.where(wsum > 0, wsum, 1), np.nan),
            "tokens": np.bincount(idx, weights=its.batched_tokens.to_numpy(dtype=float), minlength=n),
            "blocks_max": np.where(steps > 0, blocks, np.nan),
            "preemptions_cum": np.cumsum(pre)}


def timeline(sim_its: pd.DataFrame, eng_its: pd.DataFrame, bins: int = 100) -> pd.DataFrame:
    """Both runs' scheduler quantities on one grid of ``bins`` equal bins (empty bins: NaN batch/blocks)."""
    both = [d for d in (sim_its, eng_its) if len(d)]
    t0 = min(float(d.start_s.min()) for d in both) if both else 0.0
    t1 = max(float((d.start_s + d.duration_s).max()) for d in both) if both else 1.0
    edges = np.linspace(t0, max(t1, t0 + 1e-9), bins + 1)
    out = {"bin": np.arange(bins), "t_start_s": edges[:-1], "t_end_s": edges[1:]}
    for side, its in (("sim", sim_its), ("eng", eng_its)):
        for q, v in _bin_one(its, edges).items():
            out[f"{side}_{q}"] = v
    return pd.DataFrame(out)


def plot_timeline(name: str, tl: pd.DataFrame, path: Path) -> None:
    from matplotlib.ticker import MaxNLocator

    from kvsim.plots import plt, save_palette_png
    fig, axes = plt.subplots(len(TIMELINE_QUANTITIES), 1, figsize=(10, 9), sharex=True)
    t = (tl.t_start_s + tl.t_end_s) / 2
    for ax, (q, label) in zip(axes, TIMELINE_QUANTITIES):
        for side, lbl in (("sim", "simulator"), ("eng", "engine")):
            ax.step(t, tl[f"{side}_{q}"], where="mid", lw=0.9, label=lbl)
        ax.set(ylabel=label)
        if q == "preemptions_cum":      # counts: whole numbers from 0 (a run without any reads 0 to 1, not ±0.04)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylim(0, max(1.0, float(tl[["sim_" + q, "eng_" + q]].max().max())) * 1.05)
        ax.legend(fontsize=7, loc="best")
    axes[-1].set(xlabel="time (s)")
    fig.align_ylabels(axes)
    fig.suptitle(f"{name}: scheduler decisions, simulator vs engine")
    fig.tight_layout()
    save_palette_png(fig, path, dpi=100)
    plt.close(fig)


def write_diff(name: str, sim_its: pd.DataFrame, eng_its: pd.DataFrame, d: Path, bins: int = 100,
               note: str | None = None) -> None:
    """Write step_kinds.{csv,md}, step_sizes.{csv,md} (with the outlier steps, also step_outliers.csv) and
    timeline.{csv,png} for one scenario into ``d``; ``note``: a line after the step kinds' table."""
    from kvsim.outdir import atomic_write, write_csv, write_text
    from kvsim.validate_sizes import outlier_markdown, outlier_steps, step_size_markdown, step_size_table
    d.mkdir(parents=True, exist_ok=True)
    table = step_kind_table(sim_its, eng_its)
    write_csv(d / "step_kinds.csv", table)
    write_text(d / "step_kinds.md", step_kind_markdown(name, table) + (f"\n{note}\n" if note else ""))
    sizes = step_size_table(sim_its, eng_its)
    write_csv(d / "step_sizes.csv", sizes)
    outliers = outlier_steps(sim_its, eng_its)
    write_csv(d / "step_outliers.csv", outliers)
    write_text(d / "step_sizes.md", step_size_markdown(name, sizes) + "\n" + outlier_markdown(outliers))
    tl = timeline(sim_its, eng_its, bins)
    write_csv(d / "timeline.csv", tl)
    try:
        atomic_write(d / "timeline.png", lambda t: plot_timeline(name, tl, t))
    except ImportError:
        pass                         # no matplotlib (GPU image): re-plot later with --replay


def links_markdown(names: list[str]) -> str:
    lines = ["", "## Differential views", "", "| scenario | step kinds | step sizes | timeline |", "|---|---|---|---|"]
    lines += [f"| {n} | [step_kinds.md]({n}/step_kinds.md) | [step_sizes.md]({n}/step_sizes.md) | [timeline.png]({n}/timeline.png) "
              f"([csv]({n}/timeline.csv)) |" for n in names]
    return "\n".join(lines) + "\n"
