"""Every plot is titled in words with units on both axes (issue #13), and pareto.png's numbers never overlap
and its recommended point lies on the drawn front."""
from __future__ import annotations

import itertools
import re
from pathlib import Path

import matplotlib.category
import numpy as np
import pandas as pd
import pytest

import kvsim
from kvsim.labels import NAMES, label, slo_words
from kvsim.plan.pareto_plot import front_points, pareto_figure
from kvsim.plan.planner import PlanResult, pareto_mask
from kvsim.plots import plt, run_figure, sweep_figure

ROOT = Path(__file__).resolve().parents[1]
Q = str(ROOT / "scenarios" / "examples" / "quickstart.yaml")
RAW = re.compile("|".join(re.escape(k) for k in sorted(NAMES, key=len, reverse=True) if "_" in k or "." in k))
UNIT = re.compile(r"\([^()]*[A-Za-z%$/][^()]*\)\s*$")


def _has_data(ax) -> bool:
    return bool(ax.lines or ax.collections or ax.patches or ax.images)


def check_figure(fig) -> int:
    """Assert the labelling rules on every drawn axes; returns how many axes were checked."""
    checked = 0
    for ax in fig.axes:
        if not ax.axison or not _has_data(ax):
            continue
        checked += 1
        title = ax.get_title() or (fig._suptitle.get_text() if fig._suptitle else "")
        assert title.strip(), "untitled plot"
        assert not RAW.search(ax.get_title()), f"raw column name in title {ax.get_title()!r}"
        for axis, text in ((ax.xaxis, ax.get_xlabel()), (ax.yaxis, ax.get_ylabel())):
            if not text and axis is ax.xaxis:
                siblings = ax.get_shared_x_axes().get_siblings(ax)
                if any(s.get_xlabel() for s in siblings if s is not ax):
                    continue                        # stacked panels: the bottom one carries the label
            assert text.strip(), f"unlabelled axis in {title!r}"
            assert not RAW.search(text) and "_" not in text, f"raw name in axis label {text!r}"
            if not isinstance(axis.get_units(), matplotlib.category.UnitData):
                assert UNIT.search(text), f"no unit in {text!r} ({title!r})"
        for t in ax.get_xticklabels() + ax.get_yticklabels():
            assert "$" not in t.get_text(), f"mathtext tick label {t.get_text()!r}"
    return checked


@pytest.fixture(scope="module")
def run():
    return kvsim.simulate(kvsim.load_scenario(Q, ["workload.num_requests=120"]))


def test_labels_have_words_and_units():
    assert label("throughput_req_s") == "throughput (req/s)"
    assert label("engine.block_size") == "KV block size (tokens)"
    assert label("engine.allocator") == "KV allocator"
    assert label("queue_wait_ms") == "queue wait (ms)"                     # suffix rule for unknown names
    assert slo_words({"normalized_latency_s": 0.1, "ttft_p99_s": 2}) == (
        "mean normalized latency <= 0.1 s/token and TTFT p99 <= 2 s")


def test_run_figure(run):
    fig = run_figure(run.requests, run.iterations, "a_name_with_underscores")
    assert check_figure(fig) == 4
    plt.close(fig)


def test_sweep_figure_with_and_without_intervals():
    df = pd.DataFrame([{"workload.rate_req_s": r, "engine.allocator": a, "throughput_req_s": r * k,
                        "normalized_latency_s": 0.02 * r, "avg_batched_requests": 3 * r, "preemptions": 0}
                       for r in (0.5, 1, 2) for a, k in (("paged", 0.9), ("orca_max", 0.5))])
    fig = sweep_figure(df, ["workload.rate_req_s", "engine.allocator"])
    assert check_figure(fig) == 4
    plt.close(fig)
    for m in ("throughput_req_s", "normalized_latency_s"):
        df[f"{m}_ci_lo"], df[f"{m}_ci_hi"] = df[m] * 0.9, df[m] * 1.1
    fig = sweep_figure(df, ["engine.allocator", "workload.rate_req_s"])
    assert check_figure(fig) == 4
    assert any(c.__class__.__name__ == "LineCollection" for c in fig.axes[0].collections)   # error bars drawn
    plt.close(fig)


def test_paper_figures(monkeypatch, tmp_path):
    """kvsim paper's figures, drawn from stand-in sweep results (the labelling, not the numbers, is tested)."""
    import kvsim.paper as paper
    import kvsim.report.blocksize as blocksize
    from kvsim.report.paper_figs import draw_all
    rng = np.random.default_rng(0)

    def fake_sweep(path, grid, overrides=None, **kw):
        rows = [dict(zip(grid, vals)) for vals in itertools.product(*grid.values())]
        df = pd.DataFrame(rows)
        for c in ("throughput_req_s", "throughput_tok_s", "normalized_latency_s", "avg_batched_requests",
                  "sharing_saved_frac", "mem_used_frac", "mem_reserved_frac", "mem_internal_frag_frac",
                  "mem_external_frag_frac", "mem_free_frac"):
            df[c] = rng.uniform(0.1, 1.0, len(df))
        return df

    class FakeAnalysis:
        block_size = 32
        table = pd.DataFrame({"block_size": [16, 32], "max_rate_req_s": [1.0, 1.1]})

    monkeypatch.setattr(paper, "sweep", fake_sweep)
    monkeypatch.setattr(blocksize, "analyse", lambda *a, **k: FakeAnalysis())
    import kvsim.report.paper_window as paper_window
    monkeypatch.setattr(paper_window, "experiments", lambda quick, jobs, overrides=(): {"window": pd.DataFrame(
        [{"model": m, "workload.rate_req_s": r, "normalized_latency_s": rng.uniform(0.01, 1)}
         for m in paper_window.MODELS for r in (0.5, 1.0)])})
    res = paper.experiments(quick=True, jobs=1, progress=False)
    seen = []
    real_save = plt.Figure.savefig

    def save(fig, path, *a, **k):
        seen.append((Path(path).name, check_figure(fig)))
        return real_save(fig, path, *a, **k)
    monkeypatch.setattr(plt.Figure, "savefig", save)
    draw_all(res, tmp_path)
    assert len(seen) >= 11 and all(n >= 1 for _, n in seen), seen
    assert {"v0_vs_v1.png", "window.png"} <= {name for name, _ in seen}


def test_validation_overlay_and_timeline(run, monkeypatch, tmp_path):
    from kvsim.validate import plot_overlay
    from kvsim.validate_diff import plot_timeline, timeline
    seen = []
    real_save = plt.Figure.savefig
    monkeypatch.setattr(plt.Figure, "savefig", lambda fig, p, *a, **k: (seen.append(check_figure(fig)),
                                                                        real_save(fig, p, *a, **k)))
    plot_overlay("v", run, run.requests, run.iterations, tmp_path / "o.png")
    plot_timeline("v", timeline(run.iterations, run.iterations), tmp_path / "t.png")
    assert seen == [3, 4]


def test_validation_plots_are_palette_pngs_a_fraction_of_full_colour(run, tmp_path):
    """The per-scenario plots a validation set commits are written with a 256-colour palette: the same size in
    pixels as matplotlib's full-colour PNG of the figure, a fraction of its bytes."""
    from PIL import Image

    from kvsim.plots import save_palette_png
    from kvsim.validate_diff import plot_timeline, timeline
    plot_timeline("v", timeline(run.iterations, run.iterations), tmp_path / "t.png")
    fig, ax = plt.subplots(2, 1, figsize=(10, 9))
    for a in ax:
        a.plot(run.iterations.start_s, run.iterations.running, lw=0.7, label="running")
        a.legend()
    fig.savefig(tmp_path / "full.png", dpi=100)
    save_palette_png(fig, tmp_path / "palette.png", dpi=100)
    plt.close(fig)
    with Image.open(tmp_path / "t.png") as t, Image.open(tmp_path / "palette.png") as pal, \
            Image.open(tmp_path / "full.png") as full:
        assert t.mode == "P" and t.size == (1000, 900)
        assert pal.mode == "P" and pal.size == full.size and full.mode in ("RGB", "RGBA")
    assert (tmp_path / "palette.png").stat().st_size < 0.6 * (tmp_path / "full.png").stat().st_size


# ---------------------------------------------------------------- pareto.png

def crowded_plan(objective: str = "gpu", seed: int = 1) -> PlanResult:
    """24 candidates crowded into a small region, some coincident (replicas), as a plan's table."""
    rng = np.random.default_rng(seed)
    rows = []
    for bs, gpu in itertools.product((8, 16, 32, 64), ("a100-40gb", "a100-80gb", "h100-80gb")):
        g = float(rng.uniform(1.0, 1.2))
        lat = float(rng.uniform(0.080, 0.085))
        for rep in (1, 2):
            rows.append({"engine.block_size": bs, "gpu": gpu, "replicas": rep, "max_rate_req_s": g,
                         "total_rate_req_s": g * rep, "goodput_per_gpu": g, "requests_per_usd": g * 3600 / 2,
                         "normalized_latency_s": lat, "tensor_parallel": 1})
    t = pd.DataFrame(rows)
    col = {"gpu": "goodput_per_gpu", "rate": "total_rate_req_s", "usd": "requests_per_usd"}[objective]
    t["pareto"] = pareto_mask(t[col], t.normalized_latency_s)
    best = t.sort_values([col, "normalized_latency_s"], ascending=[False, True]).index[0]
    t["recommended"] = t.index == best
    return PlanResult(t, {"normalized_latency_s": 0.1}, objective, t.loc[best].to_dict(), [])


@pytest.mark.parametrize("objective", ["gpu", "rate", "usd"])
@pytest.mark.parametrize("seed", [1, 2])
def test_pareto_numbers_do_not_overlap_and_the_recommendation_is_on_the_front(objective, seed):
    res = crowded_plan(objective, seed)
    col = {"gpu": "goodput_per_gpu", "rate": "total_rate_req_s", "usd": "requests_per_usd"}[objective]
    fig, drawn = pareto_figure(res, ["engine.block_size", "gpu"], col)
    assert check_figure(fig) == 1
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    texts = [t for t in ax.texts if t.get_text()]
    boxes = [t.get_window_extent(renderer) for t in texts]
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), "two point labels overlap"
    numbers = sorted(int(n) for t in texts for n in t.get_text().split(","))
    assert numbers == list(range(1, len(drawn) + 1)), "a point lost its number"
    front_line = next(line for line in ax.lines if line.get_label() == "Pareto front")
    drawn_front = set(zip(map(float, front_line.get_xdata()), map(float, front_line.get_ydata())))
    assert drawn_front == front_points(res.table, col)
    r = res.recommended
    assert (float(r[col]), float(r["normalized_latency_s"])) in drawn_front
    plt.close(fig)
