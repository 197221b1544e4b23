"""How much a scenario's figures move with the step times: ``kvsim validate --sensitivity``.

A scenario near saturation turns a small error in step time into a large one in latency (the queue grows with
the service time), so a table of errors alone cannot tell a wrong cost model from a scenario whose figures the
engine's own noise moves by as much. For each scenario the simulation is run twice more with every time in the
profile multiplied by ``1 - STEP`` and ``1 + STEP`` (a calibrated step's price is built from those tables by
interpolation, sums, maxima and least squares, so it scales by the same factor), and per metric

* ``elasticity``: the relative change of the prediction per relative change of the step times, the central
  difference of the two runs (1: the metric moves as the step times do; 7: a 1% faster card makes it 7% smaller;
  near saturation it grows with the step, so it is a local figure);
* ``implied_step_error``: the scenario's error over its elasticity, the uniform step-time error that alone would
  account for it (compare it with the step tables, ``step_kinds.md``).

On the H200's Llama-3-8B runs of 2026-12-06 (``validation/H200-1206/sensitivity-replay.md`` at commit 040af3a), Orca-Max near
saturation (v19) had an elasticity of about 7 on mean normalized latency: its −21% error is a step-time error
of about −3%, near its decode steps' −2.3% on the mean (step_kinds.md)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

STEP = 0.02                  # the change of every step time: large enough to move a search's results past noise
KEYS = ("time_s", "extra_s", "mean_time_s", "top_time_s")   # the profile's timings: every table's times, the
#                                                          serving fits' extras, the spread grid's twins
REPORTED = ("throughput_req_s", "normalized_latency_s", "normalized_latency_p99_s", "ttft_p50_s", "tpot_p50_s")


def scaled(doc, k: float, key: str = ""):
    """``doc`` (a profile) with every number under a timing key (:data:`KEYS`) multiplied by ``k``; ``meta``
    unchanged (its reference step says which card measured it)."""
    if isinstance(doc, dict):
        return {kk: (v if kk == "meta" and not key else scaled(v, k, kk)) for kk, v in doc.items()}
    if isinstance(doc, list):
        return [scaled(v, k, key) for v in doc]
    if key in KEYS and isinstance(doc, (int, float)) and not isinstance(doc, bool):
        return doc * k
    return doc


NOTE_ONLY_META = ("partial", "serving_fit_skipped", "serving_fit_skipped_at")   # read by kvsim.build.partial_note only


def write_scaled(profile: str, out_dir: Path, k: float) -> str:
    """The profile at ``profile`` scaled by ``k`` (:func:`scaled`), written under ``out_dir``; its path. The copy
    leaves out the meta that only makes notes (a calibration cut short: :func:`kvsim.build.partial_note`): the
    prediction with the profile itself has said them once, and each temporary copy would say them again."""
    doc = json.loads(Path(profile).read_text())
    if isinstance(doc.get("meta"), dict):
        doc["meta"] = {k_: v for k_, v in doc["meta"].items() if k_ not in NOTE_ONLY_META}
    path = out_dir / f"{Path(profile).stem}_x{k:g}.json"
    path.write_text(json.dumps(scaled(doc, k)))
    return str(path)


def rows_for(name: str, base: dict, low: dict, high: dict, errors: dict) -> list[dict]:
    """Per metric of :data:`REPORTED`: the elasticity of ``base``'s prediction (``low`` / ``high``: with the step
    times scaled by ``1 -/+ STEP``) and the step-time error its error implies (None where the metric is absent or
    does not move)."""
    out = []
    for m in REPORTED:
        a, lo, hi, err = base.get(m), low.get(m), high.get(m), errors.get(m)
        ok = all(isinstance(x, (int, float)) and math.isfinite(x) for x in (a, lo, hi)) and a
        el = (hi - lo) / a / (2 * STEP) if ok else None
        implied = err / el if el is not None and abs(el) >= 0.05 and err is not None and math.isfinite(err) else None
        out.append({"scenario": name, "metric": m, "elasticity": el, "rel_error": err, "implied_step_error": implied})
    return out


def scenario_rows(name: str, path: str, profile: str, sets: list[str], summary: dict, rows: list[dict]) -> list[dict]:
    """:func:`rows_for` of one scenario: simulated again (``sets``: the settings its prediction ran with) with the
    profile's times scaled by ``1 -/+ STEP``; ``rows`` are its comparison rows (:func:`kvsim.validate.compare`)."""
    import tempfile

    from kvsim.validate import simulate_with_profile
    with tempfile.TemporaryDirectory(prefix="kvsim-sens-") as tmp:
        low, high = (simulate_with_profile(path, write_scaled(profile, Path(tmp), k), sets)[1].summary
                     for k in (1 - STEP, 1 + STEP))
    return rows_for(name, summary, low, high, {r["metric"]: r["rel_error"] for r in rows})


def markdown(df: pd.DataFrame) -> str:
    """A table per scenario: each metric's error, elasticity and implied step-time error."""
    if df.empty:
        return ""
    lines = ["# Sensitivity to the step times", "",
             f"Each scenario simulated again with every profile time x{1 - STEP:g} and x{1 + STEP:g}: the elasticity "
             "is the relative change of a prediction per relative change of the step times (central difference); the "
             "implied step error is the error over the elasticity (the uniform step-time error that alone would "
             "explain it). `kvsim/validate_sensitivity.py`.", "",
             "| scenario | metric | error | elasticity | implied step error |", "|---|---|---|---|---|"]
    f = lambda v, pct: "–" if v is None or (isinstance(v, float) and math.isnan(v)) else (  # noqa: E731
        f"{v:+.1%}" if pct else f"{v:+.2f}")
    for r in df.itertuples():
        lines.append(f"| {r.scenario} | {r.metric} | {f(r.rel_error, True)} | {f(r.elasticity, False)} | "
                     f"{f(r.implied_step_error, True)} |")
    return "\n".join(lines) + "\n"
