"""Was the engine run on as fast a card as the profile? The reference step of both, side by side.

Engine runs record ``engine.reference_step`` and calibrations ``meta.reference_step[block size]``: the
same fixed decode step timed the same way (:mod:`kvsim.engine.reference_step`). Their ratio is how much
slower (> 1) or faster (< 1) the run's machine was than the profile's at the moment each started. It
is reported beside the validation errors, never used to correct a prediction: a simulator fast by 5% on
a run whose card was 5% slower than the profile's has found the card, not a modelling error.
"""
from __future__ import annotations


def reference_time(doc: dict | None) -> float | None:
    """``time_s`` of a ``reference_step`` record, or None when absent or malformed."""
    if not isinstance(doc, dict):
        return None
    t = doc.get("time_s")
    return float(t) if isinstance(t, (int, float)) and t > 0 else None


def speed_row(scenario: str, engine_info: dict | None, profile_meta: dict | None, block_size: int) -> dict:
    """One table row: both reference times (ms) and their ratio (engine / profile), None where unknown."""
    eng = reference_time((engine_info or {}).get("reference_step")) if isinstance(engine_info, dict) else None
    refs = (profile_meta or {}).get("reference_step") if isinstance(profile_meta, dict) else None
    prof = reference_time(refs.get(str(block_size))) if isinstance(refs, dict) else None
    return {"scenario": scenario, "engine_ref_ms": None if eng is None else eng * 1e3,
            "profile_ref_ms": None if prof is None else prof * 1e3,
            "ratio": None if eng is None or prof is None else eng / prof}


def speed_markdown(rows: list[dict]) -> str:
    """A section for validation.md (empty when no row has either time: older runs and profiles)."""
    if not any(r["engine_ref_ms"] is not None or r["profile_ref_ms"] is not None for r in rows):
        return ""

    def f(v, fmt):
        return "–" if v is None else format(v, fmt)
    lines = ["", "## Card speed (reference decode step)", "",
             "The same fixed decode step timed before the engine run and in the calibration "
             "(`kvsim/engine/reference_step.py`); ratio > 1: the run's card was slower than the profile's.", "",
             "| scenario | engine (ms) | profile (ms) | engine ÷ profile |", "|---|---|---|---|"]
    lines += [f"| {r['scenario']} | {f(r['engine_ref_ms'], '.3f')} | {f(r['profile_ref_ms'], '.3f')} | "
              f"{f(r['ratio'], '.3f')} |" for r in rows]
    return "\n".join(lines) + "\n"
