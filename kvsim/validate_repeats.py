"""Engine repeats in a validation: the same scenario run on the engine several times, and the simulator's
prediction set against the spread of those runs, not against one of them.

Why: one engine run is a sample. On the lent H200s the engine's host time per decode step moves by up to 1.7×
from one run to the next, and a scenario near saturation turns that into tens of percent of latency: v13
(Llama-3-8B, prefill-first, paged) run three times back to back on one card gave mean normalized latency
9.05 / 10.54 / 9.88 ms per token (``benchmarks/engine/results_H200/calib_1817/README.md``). An error figure
against one run cannot tell the model's error from the engine's own spread.

``kvsim validate --repeats N`` runs the engine N times per scenario and keeps every run's records
(``<scenario>/engine/`` for the first, ``engine_r2/`` ... ``engine_rN/`` for the others); ``--replay`` reads
every repeat it finds. Per metric, *measured* is the runs' median (:func:`statistics.median`: with an even
number of runs, the mean of the middle two; ``median_low`` would take the lower one, so two runs would always be
judged against the faster run's latency and the slower run's throughput), the error is against it, and ``measured_min`` / ``measured_max`` give the runs' range;
``in_range`` says whether the prediction falls inside it (with one run: whether it equals it). The step-kind,
size and timeline views and the card-speed row use the first run.
"""
from __future__ import annotations

import math
import re
import statistics
from pathlib import Path

REPEAT_DIR = re.compile(r"^engine_r(\d+)$")


def repeat_dir(scenario_dir: Path, r: int) -> Path:
    """Where repeat ``r`` (1-based) of a scenario's engine run is kept."""
    return scenario_dir / ("engine" if r == 1 else f"engine_r{r}")


def engine_dirs(scenario_dir: Path) -> list[Path]:
    """The scenario's saved engine runs: ``engine/`` then ``engine_r2/``, ``engine_r3/``, ... in order (those
    holding a summary.json; ``engine/`` is always first, whether or not it exists, for the caller's error)."""
    extra = []
    if scenario_dir.is_dir():
        for p in scenario_dir.iterdir():
            m = REPEAT_DIR.match(p.name)
            if m and int(m.group(1)) >= 2 and (p / "summary.json").is_file():
                extra.append((int(m.group(1)), p))
    return [scenario_dir / "engine"] + [p for _, p in sorted(extra)]


def _number(x) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or (isinstance(x, float) and math.isnan(x)):
        return None
    return x


def measured_stats(summaries: list[dict], metric: str) -> tuple[float | None, float | None, float | None, int]:
    """(the runs' median, min, max, runs with a value) of ``metric`` over the repeats' summaries."""
    vals = [v for v in (_number(s.get(metric)) for s in summaries) if v is not None]
    if not vals:
        return None, None, None, 0
    return statistics.median(vals), min(vals), max(vals), len(vals)


def in_range(predicted, lo, hi) -> bool | None:
    """Whether the prediction lies within the runs' range (None when either side is missing)."""
    p = _number(predicted)
    if p is None or lo is None or hi is None:
        return None
    return bool(lo <= p <= hi)


def repeats_markdown(df) -> str:
    """A section on the scenarios run more than once: per scenario and headline metric, the runs' range and
    whether the prediction is inside it; empty when every scenario ran once."""
    if "repeats" not in df.columns or not (df.repeats > 1).any():
        return ""
    keep = ("throughput_req_s", "normalized_latency_s", "normalized_latency_p99_s", "tpot_p50_s", "ttft_p50_s")
    rows = df[(df.repeats > 1) & df.metric.isin(keep)]
    lines = ["", "## Engine repeats", "",
             "Scenarios whose engine ran more than once (`--repeats`): measured is the runs' median (two runs: their mean), the "
             "error is against it; the range is the runs' lowest to highest (`kvsim/validate_repeats.py`).", "",
             "| scenario | metric | runs | predicted | measured (median) | range | spread | error | in range |",
             "|---|---|---|---|---|---|---|---|---|"]
    for _, r in rows.iterrows():
        spread = (r.measured_max - r.measured_min) / r.measured if r.measured else float("nan")
        inside = {True: "yes", False: "no"}.get(r.in_range, "–")
        lines.append(f"| {r.scenario} | {r.metric} | {int(r.repeats)} | {r.predicted:.4g} | {r.measured:.4g} | "
                     f"{r.measured_min:.4g}–{r.measured_max:.4g} | {spread:.1%} | {r.rel_error:+.1%} | {inside} |")
    return "\n".join(lines) + "\n"
