"""``kvsim run``'s ``report.html``: the verdict on the offered load, the run's plots and its numbers.

The headline says whether the configuration kept up with the load, from what
the run measured (:func:`verdict`):

* a rate-driven run (Poisson / gamma, open loop) is *overloaded* when its
  waiting queue grows: the time-averaged number of waiting requests over the
  last third of the arrival window is at least ``GROWN`` (5) and at least twice
  that over the first third. Throughput over the whole run is not the test: a
  short run's drain at the end lowers it even when the queue is stable;
* a burst or closed-loop run has no offered rate to keep up with: the headline
  is the throughput it sustained;
* unfinished and rejected requests are always named.
"""
from __future__ import annotations

import pandas as pd

from kvsim.queue_thirds import QUEUE_COLUMNS, QueueThirds, rate_driven
from kvsim.report.htmlkit import esc, key_values, page, png, table
from kvsim.runtext import ROWS

GROWN = 5.0


REPORT_COLUMNS = QUEUE_COLUMNS     # what verdict (waiting_thirds) reads


def waiting_thirds(reqs: pd.DataFrame, its) -> tuple[float, float]:
    """Time-averaged waiting requests over the first and the last third of the arrival window. ``its`` is the
    iteration frame or an iterable of consecutive pieces of it (a long run's log read chunk by chunk, so the
    whole frame is never held); :class:`kvsim.queue_thirds.QueueThirds` sums them."""
    pieces = [its] if isinstance(its, pd.DataFrame) else its
    q = QueueThirds(reqs.arrival_s)
    if q.windows:
        for x in pieces:
            q.add(x)
    return q.averages()


def verdict(sc, summary: dict, reqs: pd.DataFrame, its: pd.DataFrame, measured: bool = False,
            thirds: tuple[float, float] | None = None) -> tuple[str, str]:
    """(headline, reason) for one run (module doc); ``thirds``: :func:`waiting_thirds`' values where the caller
    has them already (the simulator gathers them in its summary pass), else read from ``its``."""
    w = sc.workload
    thr, total = summary.get("throughput_req_s") or 0.0, summary.get("requests_total") or 0
    done, rej = summary.get("requests_finished") or 0, summary.get("requests_rejected") or 0
    lat = summary.get("normalized_latency_s")
    facts = (f"{done} of {total} requests finished; mean normalized latency {lat:.3g} s/token, TTFT p99 "
             f"{summary.get('ttft_p99_s') or float('nan'):.3g} s." if lat is not None
             else f"{done} of {total} requests finished.")
    if rej:
        facts += f" {rej} were rejected (longer than the model or the KV cache allows)."
    if total - done - rej:
        facts += (f" {total - done - rej} were still unfinished when the run stopped "
                  f"({'runtime.max_wall_s' if measured else 'max_time_s'}).")
    if rate_driven(w):
        offered = float(w.rate_req_s)
        first, last = thirds if thirds is not None else waiting_thirds(reqs, its)
        queue = (f"Waiting requests averaged {first:.1f} over the first third of the arrivals and {last:.1f} over "
                 f"the last third")
        served = f"throughput over the whole run, drain included, is {thr:.3g} req/s"
        if last >= GROWN and last >= 2 * first:
            return (f"Overloaded at {offered:.3g} req/s offered",
                    f"{queue}: the queue grows, and latency with the run's length; lower the rate or find the "
                    f"capacity with kvsim plan ({served}). {facts}")
        return (f"Keeps up with {offered:.3g} req/s offered",
                f"{queue}: the queue does not grow ({served}). {facts}")
    how = (f"closed loop, at most {w.max_concurrency} requests in flight" if w.max_concurrency
           else "all requests at t=0" if w.arrival == "burst" else "the trace's own arrival times")
    return f"Sustained {thr:.3g} req/s ({how})", facts


def _summary_pairs(summary: dict, measured: bool = False) -> list[tuple[str, str]]:
    pairs = []
    for lbl, keys, fmt in ROWS:
        if measured and lbl:
            lbl = lbl.replace("simulated time", "wall time")
        keys = keys if isinstance(keys, tuple) else (keys,)
        vals = [summary.get(k) for k in keys]
        pairs.append((lbl or "throughput (tokens)", "n/a" if any(v is None for v in vals) else fmt.format(*vals)))
    return pairs


def _replications(summaries: list[dict], confidence: float) -> str:
    from kvsim.replicate import REPORTED
    from kvsim.stats import interval
    rows = []
    for lbl, key, fmt in REPORTED:
        iv = interval([s.get(key) for s in summaries], confidence)
        rows.append({"metric": lbl, "mean": iv.mean, "interval low": iv.lo, "interval high": iv.hi, "runs": iv.n})
    return (f"<p>Mean and {confidence:.0%} Student-t interval over {len(summaries)} runs (seeds); the plots and "
            f"the tables above are the first seed's.</p>" + table(pd.DataFrame(rows), words=False))


def _engine_pairs(info: dict) -> list[tuple[str, str]]:
    """The engine's device, versions and timing split (``EngineResult.info``), one line per scalar entry."""
    pairs = []
    for k, v in info.items():
        if isinstance(v, float):
            v = f"{v:.6g}"
        elif isinstance(v, (list, tuple)):
            v = ", ".join(map(str, v)) or "none"
        elif isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items()) or "none"
        pairs.append((k.replace("_", " "), str(v)))
    return pairs


def render_run(res, arrivals: str, *, replications: list[dict] | None = None, confidence: float = 0.95,
               percentiles: list[float] | None = None, goodput_slo: dict | None = None,
               engine: dict | None = None, metrics: list[str] | None = None) -> str:
    """The whole ``report.html`` of one run (and its replications). ``engine`` (``EngineResult.info``) makes it
    the report of a run measured on the real engine (``kvsim engine``): the device it ran on instead of the
    simulated card, and the engine's device, versions and timing split as a section."""
    from kvsim.latency import ITL_COLUMNS, goodput, latency_table
    from kvsim.output import iteration_frame
    from kvsim.plots import RUN_PLOT_COLUMNS, run_figure
    setup = res.setup
    sc = setup.scenario
    e = sc.engine
    its = iteration_frame(res, REPORT_COLUMNS + ITL_COLUMNS + RUN_PLOT_COLUMNS)   # only what the report reads
    head, why = verdict(sc, res.summary, res.requests, its, measured=engine is not None)
    alloc = e.allocator + (f" (block {e.block_size})" if e.allocator == "paged" else "")
    if engine is None:
        sub = (f"{setup.model.name} on {setup.gpu.name} x{sc.tensor_parallel}, {alloc}, {e.scheduler} scheduler. "
               f"Arrivals: {arrivals}. {setup.budget.summary()}")
    else:
        dev = engine.get("device", "?")
        sub = (f"Measured engine run (kvsim engine), not a simulation: {setup.model.name} on {dev} "
               f"({engine.get('attention_backend', '?')} attention, weights {engine.get('weights', '?')}), {alloc}, "
               f"{e.scheduler} scheduler, KV blocks {engine.get('kv_blocks', '?')} (simulator: "
               f"{engine.get('simulator_blocks', '?')}). Arrivals: {arrivals}.")
    lat = latency_table(res.requests, its, percentiles or [50.0, 90.0, 99.0], metrics)
    sections = [
        ("Memory, batch and latency over the run", png(run_figure(res.requests, its, sc.name),
                                                        "run plots")),
        ("Summary", key_values(_summary_pairs(res.summary, measured=engine is not None))),
        ("Per-request latency (ms, as vllm bench reports it)",
         table(lat, words=False) + '<p class="note">ITL = gaps between a request\'s decode steps '
         "(kvsim/latency.py).</p>"),
    ]
    if goodput_slo:
        g = goodput(res.requests, goodput_slo)
        slo = ", ".join(f"{k} &le; {v * 1e3:g} ms" for k, v in goodput_slo.items())
        sections.append(("Goodput", f"<p>{slo}: {g['good_requests']} of {len(res.requests)} requests "
                                    f"({g['goodput_frac']:.1%}), {g['goodput_req_s']:.3f} req/s.</p>"))
    if replications and len(replications) > 1:
        sections.append(("Across seeds", _replications(replications, confidence)))
    if engine is not None:
        sections.append((f"Engine (measured on {engine.get('device', '?')})", key_values(_engine_pairs(engine))))
    sections.append(("Scenario", f"<pre>{esc(_yaml(sc.to_dict()))}</pre>"))
    title = (f"kvsim run: {sc.name}" if engine is None
             else f"kvsim engine: {sc.name} (measured on {engine.get('device', '?')})")
    return page(title, sub, head, why, sections)


def _yaml(doc: dict) -> str:
    import yaml
    return yaml.safe_dump(doc, sort_keys=False, width=100)
