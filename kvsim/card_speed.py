"""Was the engine run on as fast a card as the profile? The reference step of both, side by side.

Engine runs record ``engine.reference_step`` and calibrations ``meta.reference_step[block size]``: the
same fixed decode step timed the same way (:mod:`kvsim.engine.reference_step`). Their ratio is how much
slower (> 1) or faster (< 1) the run's machine was than the profile's at the moment each started. It
is reported beside the validation errors, never used to correct a prediction: a simulator fast by 5% on
a run whose card was 5% slower than the profile's has found the card, not a modelling error. Newer records
also carry the card's UUID (``gpu_uuid``): the table says whether the run and the
profile used the same physical card, because lent machines of one model differ by several percent.

The host's speed moves too, from run to run on one machine (on the H200 VM the same serving workload's host
time per decode step ranged 0.27-0.47 ms over ten runs, and the GPU part moved with it:
``benchmarks/engine/results_H200/serving_1605/README.md``). Profiles whose serving fit recorded each row's host
time (``decode_serving[bs].host_s``, the median of the engine's ``cpu_s``) get a second ratio: the run's decode
steps' host time over the fit's at the same rows (:func:`host_ratio`), also only reported.

So does the engine's wake from its sleep when a request reaches it idle: newer profiles hold the calibration's
(``wake_overhead.latency_s``, the median of :func:`idle_waits` over its idle fit's lone prompts), which the
simulator waits out; :func:`wake_note` says when a run's own idle wakes were far from it.
"""
from __future__ import annotations


def reference_time(doc: dict | None) -> float | None:
    """``time_s`` of a ``reference_step`` record, or None when absent or malformed."""
    if not isinstance(doc, dict):
        return None
    t = doc.get("time_s")
    return float(t) if isinstance(t, (int, float)) and t > 0 else None


def card_of(doc: dict | None) -> str | None:
    """``gpu_uuid`` of a ``reference_step`` record, or None when absent or malformed."""
    u = doc.get("gpu_uuid") if isinstance(doc, dict) else None
    return u if isinstance(u, str) and u else None


def host_ratio(its, serving: dict | None) -> float | None:
    """Median over the run's decode-only steps (no copies, rows within the fit's) of the step's host time
    ``cpu_s`` over the serving fit's ``host_s`` at its rows (interpolated); None without either. Where both the
    run and the fit tell steps prepared ahead from stepped ones (``host_ahead``; the fit's ``stepped``), each is
    compared with its own kind."""
    import numpy as np
    rows, host = (serving or {}).get("num_seqs"), (serving or {}).get("host_s")
    stepped = (serving or {}).get("stepped") or {}
    if its is not None and "host_ahead" in its.columns and stepped.get("host_s"):
        parts = [(its[its.host_ahead == 1], rows, host), (its[its.host_ahead != 1], stepped["num_seqs"],
                                                          stepped["host_s"])]
        ratios = [r for r in (_ratios(d, x, y) for d, x, y in parts) if r is not None]
        return float(np.median(np.concatenate(ratios))) if ratios else None
    r = _ratios(its, rows, host)
    return None if r is None else float(np.median(r))


def _ratios(its, rows, host):
    """Each decode-only step's host time over the fit's at its rows (None: too few steps, or no data)."""
    import numpy as np
    need = {"cpu_s", "decode_seqs", "prefill_tokens"}
    if its is None or not rows or not host or len(rows) != len(host) or not need <= set(its.columns):
        return None
    sel = (its.prefill_tokens == 0) & (its.decode_seqs >= rows[0]) & (its.decode_seqs <= rows[-1])
    if "cow_copies" in its.columns:
        sel &= its.cow_copies == 0
    d = its[sel]
    if len(d) < 20:
        return None
    ref = np.interp(d.decode_seqs.to_numpy(float), np.asarray(rows, float), np.asarray(host, float))
    return d.cpu_s.to_numpy(float) / ref


def idle_waits(requests) -> list[float]:
    """Seconds from arrival to scheduling of each request that reached an idle engine (no earlier request
    unfinished, none waiting), in arrival order: the engine's wake from its sleep to its step's scheduling."""
    import numpy as np
    reqs = requests.sort_values("arrival_s", kind="stable")
    arrive = reqs.arrival_s.to_numpy(float)
    sched = reqs.first_scheduled_s.to_numpy(float)
    finish = reqs.finish_s.to_numpy(float)
    out, busy_until = [], float("-inf")
    for a, s, f in zip(arrive, sched, finish):
        if a > busy_until and np.isfinite(s):
            out.append(float(s - a))
        busy_until = max(busy_until, f if np.isfinite(f) else float("inf"))
    return out


WAKE_NOTE_S = 0.1e-3   # kvsim validate says so when a run's median idle wake is this far from the profile's
WAKE_NOTE_MIN = 3      # ... over at least this many requests that reached the idle engine


def wake_note(scenario: str, requests, latency_s: float | None) -> str | None:
    """The line ``kvsim validate`` prints when the run's idle wakes (:func:`idle_waits`, at least
    :data:`WAKE_NOTE_MIN`) had a median over :data:`WAKE_NOTE_S` away from the profile's ``latency_s`` (0 where
    the profile did not measure it), else None (reporting only)."""
    import numpy as np
    waits = idle_waits(requests) if requests is not None and len(requests) else []
    if len(waits) < WAKE_NOTE_MIN:
        return None
    run, prof = float(np.median(waits)), float(latency_s or 0.0)
    if abs(run - prof) <= WAKE_NOTE_S:
        return None
    said = f"the profile's {prof * 1e3:.3f} ms" if latency_s is not None else "the profile did not measure it"
    return (f"note: {scenario}: the engine took a median {run * 1e3:.3f} ms from an arrival at the idle engine to "
            f"its step ({len(waits)} requests; {said}); requests arriving within it share that step")


HOST_NOTE = 1.25     # kvsim validate says so when a run's host ratio is beyond this either way (reporting only)


def host_note(scenario: str, ratio: float | None) -> str | None:
    """The line ``kvsim validate`` prints when the run's host was much slower or faster than the
    calibration's (:func:`host_ratio` beyond :data:`HOST_NOTE` either way), else None."""
    if ratio is None or 1 / HOST_NOTE <= ratio <= HOST_NOTE:
        return None
    return (f"note: {scenario}: the engine's host time per decode step was {ratio:.2f}x the calibration's at the "
            "same rows (the host's speed moves from run to run); the errors below include it")


def speed_row(scenario: str, engine_info: dict | None, profile_meta: dict | None, block_size: int,
              engine_its=None, serving: dict | None = None) -> dict:
    """One table row: both reference times (ms), their ratio (engine / profile), whether both ran on the
    same card (``same_card``) and the host's ratio (:func:`host_ratio`; ``serving`` is the profile's
    ``decode_serving`` table of the block size), None where unknown."""
    eng_doc = (engine_info or {}).get("reference_step") if isinstance(engine_info, dict) else None
    refs = (profile_meta or {}).get("reference_step") if isinstance(profile_meta, dict) else None
    prof_doc = refs.get(str(block_size)) if isinstance(refs, dict) else None
    eng, prof = reference_time(eng_doc), reference_time(prof_doc)
    a, b = card_of(eng_doc), card_of(prof_doc)
    return {"scenario": scenario, "engine_ref_ms": None if eng is None else eng * 1e3,
            "profile_ref_ms": None if prof is None else prof * 1e3,
            "ratio": None if eng is None or prof is None else eng / prof,
            "same_card": None if a is None or b is None else a == b,
            "compiled": _compiled(engine_info), "host_ratio": host_ratio(engine_its, serving)}


def _compiled(engine_info) -> int | None:
    """Triton kernels the engine compiled while serving (:mod:`kvsim.engine.compile_log`), None if unrecorded."""
    n = engine_info.get("kernels_compiled_while_serving") if isinstance(engine_info, dict) else None
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 0 else None


def speed_markdown(rows: list[dict]) -> str:
    """A section for validation.md (empty when no row has either time: older runs and profiles)."""
    if not any(r["engine_ref_ms"] is not None or r["profile_ref_ms"] is not None for r in rows):
        return ""

    def f(v, fmt):
        return "–" if v is None else format(v, fmt)
    lines = ["", "## Card speed (reference decode step)", "",
             "The same fixed decode step timed before the engine run and in the calibration "
             "(`kvsim/engine/reference_step.py`); ratio > 1: the run's card was slower than the profile's. "
             "Same card: both recorded the same GPU UUID (a different card of the same model can differ by "
             "several percent in step time and host work). Compiles: Triton kernels the engine compiled while "
             "serving (none expected after warm-up; each one's step includes compiling). Host: the run's decode "
             "steps' host time (scheduling, inputs, bookkeeping) over the calibration's serving runs' at the "
             "same rows (`kvsim/card_speed.py`; the host's speed moves from run to run).", "",
             "| scenario | engine (ms) | profile (ms) | engine ÷ profile | same card | compiles | host ÷ profile |",
             "|---|---|---|---|---|---|---|"]
    yes = {True: "yes", False: "**no**", None: "–"}
    lines += [f"| {r['scenario']} | {f(r['engine_ref_ms'], '.3f')} | {f(r['profile_ref_ms'], '.3f')} | "
              f"{f(r['ratio'], '.3f')} | {yes[r.get('same_card')]} | {_compiles_cell(r.get('compiled'))} | "
              f"{f(r.get('host_ratio'), '.2f')} |"
              for r in rows]
    return "\n".join(lines) + "\n"


def _compiles_cell(n: int | None) -> str:
    return "–" if n is None else "0" if n == 0 else f"**{n}**"
