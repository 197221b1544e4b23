"""The block-size report checked on the real engine (``benchmarks/engine/blocksize_check.sh``).

The script runs the report's best block size and two others end to end on the same workload at a few
request rates (and seeds). From the engine's requests frames this module computes, per block size, the
**throughput at the SLO**: the highest offered rate whose run meets the SLO, judged as the planner's
search judges a probe (every request finished and the mean normalized latency within the bound), linearly
interpolated on the metric between the last passing and the first failing rate. It compares that with the
report's predicted rate per block size (``block_size.csv``'s ``max_rate_req_s``) and says whether the
predicted ordering holds, the error per block size (done when within 5%), the measured margin of the best
over the others and, with several seeds, the noise (half the range of the per-seed rates).

A block size whose every rate met the SLO has only a lower bound (``engine_bound`` "at least"; one whose no rate
met it "below"): its error and ordering are then not measured, and the verdict says so.

With ``--profile P`` each engine run is also simulated as it ran (the scenario its ``summary.json`` records,
priced by ``P`` at the CUDA-graph sizes the run captured and skipped) and the two SLO metrics are set side by side
per run (``engine_check_runs.csv``): how close the prediction is where the SLO rates cannot say it, and whether
the engine runs were the workload the report priced (the report's probes hold at least 600 requests and 60 s of
arrivals, ``kvsim.plan.search.probe_requests``; shorter runs never reach its steady state), and the SLO rate is
found from the simulated runs as from the engine's: the simulator's error on exactly those workloads, apart from
the report's own search.

``python -m kvsim.report.engine_check RUNS_DIR REPORT_CSV [--slo normalized_latency_s=0.1] [--profile P]`` reads
``RUNS_DIR/b<B>_r<RATE>_s<SEED>/requests.csv`` (or ``requests.csv.gz``) and writes ``engine_check.csv`` and
``engine_check.md``.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pandas as pd

from kvsim.errors import KvsimError
from kvsim.validate_records import record_file

RUN_DIR = re.compile(r"^b(\d+)_r([0-9.]+)_s(\d+)$")
DONE_TOL = 0.05          # predicted vs engine SLO rate: the 5%


def run_metric(reqs: pd.DataFrame, key: str = "normalized_latency_s") -> float:
    """The SLO metric of one engine run; inf when a request did not finish (the run fails)."""
    if not len(reqs) or (reqs.status != "finished").any():
        return float("inf")
    done = reqs
    if key == "normalized_latency_s":
        return float(((done.finish_s - done.arrival_s) / done.output_len).mean())
    if key == "ttft_p99_s":
        return float(np.percentile(done.first_token_s - done.arrival_s, 99))
    raise KvsimError("--slo", f"the engine check supports normalized_latency_s and ttft_p99_s, not {key}")


def censored(points: list[tuple[float, float]], bound: float) -> str:
    """``"at least"`` when every rate run met the SLO, ``"below"`` when none did, else ``""``."""
    ok = [m <= bound for _, m in points]
    return "at least" if ok and all(ok) else "below" if ok and not any(ok) else ""


def slo_rate(points: list[tuple[float, float]], bound: float) -> float | None:
    """Highest rate meeting ``metric <= bound``, interpolated to the crossing (module doc); None if none passes."""
    pts = sorted(points)
    best = None
    for i, (rate, m) in enumerate(pts):
        if m > bound:
            if best is not None and i > 0 and np.isfinite(m):
                r0, m0 = pts[i - 1]
                return r0 + (rate - r0) * (bound - m0) / (m - m0)
            return best
        best = rate
    return best


def engine_rates(runs: pd.DataFrame, bound: float) -> pd.DataFrame:
    """``runs`` (block_size, rate, seed, metric) -> per block size: the SLO rate per seed, mean and noise."""
    rows = []
    for b, g in runs.groupby("block_size"):
        per_seed = [slo_rate(list(zip(s.rate, s.metric)), bound) for _, s in g.groupby("seed")]
        got = [r for r in per_seed if r is not None]
        edge = {censored(list(zip(s.rate, s.metric)), bound) for _, s in g.groupby("seed")} - {""}
        rows.append({"block_size": int(b), "engine_rate_req_s": float(np.mean(got)) if got else None,
                     "engine_bound": ",".join(sorted(edge)),
                     "engine_noise_req_s": float((max(got) - min(got)) / 2) if len(got) > 1 else None,
                     "seeds": len(per_seed), "rates_run": ",".join(f"{r:g}" for r in sorted(set(g.rate)))})
    return pd.DataFrame(rows)


def compare(engine: pd.DataFrame, predicted: dict[int, float]) -> tuple[pd.DataFrame, list[str]]:
    """The table the report prints, and its verdict lines (module doc)."""
    t = engine.copy()
    if "engine_bound" not in t:
        t["engine_bound"] = ""
    t["predicted_rate_req_s"] = [predicted.get(int(b)) for b in t.block_size]
    has = lambda v: v is not None and bool(pd.notna(v)) and v > 0            # noqa: E731
    measured = [has(e) and has(p) and not c for e, p, c in zip(t.engine_rate_req_s, t.predicted_rate_req_s, t.engine_bound)]
    t["error"] = [(e / p - 1) if m else None for e, p, m in zip(t.engine_rate_req_s, t.predicted_rate_req_s, measured)]
    lines = []
    bounds = [f"{int(r.block_size)} ({r.engine_bound} {r.engine_rate_req_s:.3g} req/s)" if has(r.engine_rate_req_s)
              else f"{int(r.block_size)} (no rate met the SLO)" for r in t.itertuples() if r.engine_bound]
    if bounds:
        lines.append("not bracketed: every rate run met the SLO, or none did, at block " + ", ".join(bounds)
                     + ": those SLO rates are bounds, not measurements (run rates on both sides of them)")
    ok = t[measured]
    if len(ok) < 2:
        return t, lines + ["fewer than two block sizes have both a predicted and a measured engine SLO rate: no "
                           "ordering check"]
    pred_best = int(ok.loc[ok.predicted_rate_req_s.idxmax(), "block_size"])
    eng_best = ok.loc[ok.engine_rate_req_s.idxmax()]
    noise = float(ok.engine_noise_req_s.fillna(0).max())
    pred_order = list(ok.sort_values("predicted_rate_req_s", ascending=False).block_size)
    eng_order = list(ok.sort_values("engine_rate_req_s", ascending=False).block_size)
    lines.append(f"predicted order {pred_order}, engine order {eng_order}: "
                 + ("the same" if pred_order == eng_order else "different"))
    mine = float(ok.loc[ok.block_size == pred_best, "engine_rate_req_s"].iloc[0])
    gap = float(eng_best.engine_rate_req_s) - mine
    lines.append(f"report's best block {pred_best}: engine {mine:.3g} req/s; engine's best block "
                 f"{int(eng_best.block_size)} at {eng_best.engine_rate_req_s:.3g} req/s "
                 + ("(the same block)" if int(eng_best.block_size) == pred_best else
                    f"({gap:.3g} req/s higher; measured noise {noise:.3g} req/s: "
                    + ("within the noise)" if gap <= noise else "outside the noise)")))
    for _, r in ok.iterrows():
        if int(r.block_size) != pred_best:
            lines.append(f"measured margin of block {pred_best} over block {int(r.block_size)}: "
                         f"{mine / r.engine_rate_req_s - 1:+.1%} (predicted "
                         f"{predicted[pred_best] / r.predicted_rate_req_s - 1:+.1%})")
    worst = float(ok.error.abs().max())
    lines.append(f"largest |engine / predicted - 1| = {worst:.1%}: " + ("within" if worst <= DONE_TOL else "outside")
                 + f" the {DONE_TOL:.0%} target")
    return t, lines


def load_runs(folder: Path, key: str) -> pd.DataFrame:
    if not Path(folder).is_dir():
        raise KvsimError("runs", f"{folder} is not a folder")
    rows = []
    for d in sorted(Path(folder).iterdir()):
        m, reqs = RUN_DIR.match(d.name), record_file(d, "requests.csv")
        if m and reqs.exists():
            rows.append({"block_size": int(m[1]), "rate": float(m[2]), "seed": int(m[3]),
                         "metric": run_metric(pd.read_csv(reqs), key)})
    if not rows:
        raise KvsimError("runs", f"no b<B>_r<RATE>_s<SEED>/requests.csv under {folder}")
    return pd.DataFrame(rows)


PROBE_DEFAULTS = (600, 60.0)
"""The report's probe length where its ``block_size.csv`` does not record it (``kvsim report block-size``'s
``--requests`` default and the search's ``min_duration_s``)."""


def probe_length(report: pd.DataFrame, block: int) -> tuple[int, float]:
    """(requests, seconds of arrivals) at least, per probe of ``block`` in the report (its recorded columns, reports
    from 2026-12-06 on, else :data:`PROBE_DEFAULTS`)."""
    row = report.loc[report.block_size == int(block)]
    req = row.probe_requests.iloc[0] if "probe_requests" in report and len(row) else None
    dur = row.probe_min_duration_s.iloc[0] if "probe_min_duration_s" in report and len(row) else None
    return (int(req) if req is not None and pd.notna(req) else PROBE_DEFAULTS[0],
            float(dur) if dur is not None and pd.notna(dur) else PROBE_DEFAULTS[1])


def probe_runs(report: pd.DataFrame, blocks: list[int], fracs: list[float], seeds: list[int]) -> list[str]:
    """``B:RATE:REQUESTS:SEED`` of each engine run (``benchmarks/engine/blocksize_runs.py``'s ``--run``): every
    block at each fraction of its own predicted SLO rate, as long as the report's probes
    (:func:`kvsim.plan.search.probe_requests`), seeds outermost."""
    from kvsim.plan.search import probe_requests
    out = []
    for seed in seeds:
        for frac in fracs:
            for b in blocks:
                pred = float(report.loc[report.block_size == int(b), "max_rate_req_s"].iloc[0])
                rate = round(pred * float(frac), 3)
                req, dur = probe_length(report, b)
                out.append(f"{int(b)}:{rate:g}:{probe_requests(req, rate, dur)}:{int(seed)}")
    return out


def next_fraction(measured: dict[float, float], bound: float, step: float, max_rounds: int) -> float | None:
    """The next fraction of a block size's predicted SLO rate to run at, from the SLO metric measured at the
    fractions run so far (``{fraction: metric}``): 1.0 first; None once one run met ``metric <= bound`` and another
    did not (the SLO rate is bracketed) or after ``max_rounds`` steps from 1.0; else ``step`` beyond the runs on the
    side the crossing lies (above the highest when every run met the SLO, below the lowest when none did). Two runs
    bracket a prediction within ``step``, where a fixed set of three fractions spends a third run regardless
    (``benchmarks/engine/blocksize_runs.py --bracket``)."""
    if not measured:
        return 1.0
    ok = [m <= bound for m in measured.values()]
    if any(ok) and not all(ok):
        return None
    nxt = round(max(measured) + step, 6) if all(ok) else round(min(measured) - step, 6)
    return nxt if nxt > 0 and abs(nxt - 1.0) <= max_rounds * step + 1e-9 else None


def predicted_runs(folder: Path, profile: str, key: str, report: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each engine run beside its simulation (module doc): block size, rate, seed, requests, whether it had the
    report's probe length (``report``'s, else :data:`PROBE_DEFAULTS`), and the SLO metric measured and predicted."""
    import json

    import kvsim
    from kvsim.plan.search import probe_requests
    from kvsim.validate_settings import replay_sets
    from kvsim.workload import config as wc
    rows = []
    for d in sorted(Path(folder).iterdir()):
        m, reqs = RUN_DIR.match(d.name), record_file(d, "requests.csv")
        if not (m and reqs.exists() and (d / "summary.json").exists()):
            continue
        doc = json.loads((d / "summary.json").read_text())
        kept, wc.deferred = wc.deferred, []      # the record names every field: no "has no effect" notes
        try:
            sc = kvsim.load_scenario(doc["scenario"], ["cost.model=calibrated", f"cost.profile={profile}"]
                                     + replay_sets(doc))
            sim = kvsim.simulate(sc).requests
        finally:
            wc.deferred = kept
        eng = pd.read_csv(reqs)
        rate = float(m[2])
        req, dur = probe_length(report, int(m[1])) if report is not None else PROBE_DEFAULTS
        rows.append({"block_size": int(m[1]), "rate": rate, "seed": int(m[3]), "requests": len(eng),
                     "report_probe_length": len(eng) >= probe_requests(req, rate, dur),
                     "engine": run_metric(eng, key), "predicted": run_metric(sim, key)})
    t = pd.DataFrame(rows)
    if len(t):
        t["error"] = t.predicted / t.engine - 1
    return t


def same_runs_text(per_run: pd.DataFrame, engine: pd.DataFrame, bound: float) -> str:
    """The SLO rate per block size found the same way from the simulated runs as from the engine's (the same
    rates, seeds and requests), beside the engine's: the simulator's error on exactly these workloads, apart from
    the report's own search (its probes' seeds and rates)."""
    if not len(per_run):
        return "no run to simulate"
    sim = engine_rates(per_run.rename(columns={"predicted": "metric"})[["block_size", "rate", "seed", "metric"]], bound)
    eng = engine.set_index("block_size")
    parts = []
    for r in sim.itertuples():
        e = eng.engine_rate_req_s.get(r.block_size)
        ebound, sbound = eng.engine_bound.get(r.block_size, ""), r.engine_bound
        if r.engine_rate_req_s is None or pd.isna(r.engine_rate_req_s) or e is None or pd.isna(e):
            parts.append(f"block {r.block_size}: no SLO rate on one side")
        elif ebound or sbound:
            parts.append(f"block {r.block_size}: simulated {sbound + ' ' if sbound else ''}{r.engine_rate_req_s:.3g}, "
                         f"engine {ebound + ' ' if ebound else ''}{e:.3g} req/s (bounds)")
        else:
            parts.append(f"block {r.block_size}: simulated {r.engine_rate_req_s:.3g}, engine {e:.3g} req/s "
                         f"({r.engine_rate_req_s / e - 1:+.1%})")
    return "the same runs simulated, SLO rate: " + "; ".join(parts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs")
    ap.add_argument("report_csv", help="block_size.csv of kvsim report block-size --profile")
    ap.add_argument("--slo", default="normalized_latency_s=0.1")
    ap.add_argument("--profile", default=None, help="also simulate each engine run with this profile (module doc)")
    a = ap.parse_args(argv)
    key, _, val = a.slo.partition("=")
    try:
        bound = float(val)
    except ValueError:
        raise KvsimError("--slo", f"expected KEY=NUMBER, got {a.slo!r}") from None
    runs = load_runs(Path(a.runs), key)
    if not Path(a.report_csv).is_file():
        raise KvsimError("report_csv", f"{a.report_csv} is not a file (block_size.csv of kvsim report block-size)")
    pred = pd.read_csv(a.report_csv)
    table, lines = compare(engine_rates(runs, bound),
                           {int(b): r for b, r in zip(pred.block_size, pred.max_rate_req_s) if r == r})
    out = Path(a.runs)
    runs.to_csv(out / "engine_runs.csv", index=False)
    table.to_csv(out / "engine_check.csv", index=False)
    text = table.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-") + "\n\n" + "\n".join(lines)
    if a.profile:
        per_run = predicted_runs(out, a.profile, key, pred)
        per_run.to_csv(out / "engine_check_runs.csv", index=False)
        short = int((~per_run.report_probe_length).sum()) if len(per_run) else 0
        text += (f"\n\neach run simulated with {a.profile} ({key}, predicted / engine - 1: median "
                 f"{per_run.error.abs().median():.1%}, largest {per_run.error.abs().max():.1%}"
                 + (f"; {short} of {len(per_run)} runs shorter than the report's probes, which its SLO rates "
                    f"do not describe" if short else "") + ")\n"
                 + same_runs_text(per_run, table, bound) + "\n"
                 + per_run.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    (out / "engine_check.md").write_text(f"SLO {a.slo}\n\n```\n{text}\n```\n")
    print(text)
    return 0


def _main(argv=None) -> int:
    import sys
    try:
        return main(argv)
    except KvsimError as e:               # a bad folder, CSV or profile: one line, exit 2
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(_main())
