"""The block-size report checked on the real engine (``benchmarks/engine/blocksize_check.sh``).

The script runs the report's best block size and two others end to end on the same workload at a few
request rates (and seeds). From the engine's requests frames this module computes, per block size, the
**throughput at the SLO**: the highest offered rate whose run meets the SLO, judged as the planner's
search judges a probe (every request finished and the mean normalized latency within the bound), linearly
interpolated on the metric between the last passing and the first failing rate. It compares that with the
report's predicted rate per block size (``block_size.csv``'s ``max_rate_req_s``) and says whether the
predicted ordering holds, the error per block size (done when within 5%), the measured margin of the best
over the others and, with several seeds, the noise (half the range of the per-seed rates).

``python -m kvsim.report.engine_check RUNS_DIR REPORT_CSV [--slo normalized_latency_s=0.1]`` reads
``RUNS_DIR/b<B>_r<RATE>_s<SEED>/requests.csv`` and writes ``engine_check.csv`` and ``engine_check.md``.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pandas as pd

from kvsim.errors import KvsimError

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
        rows.append({"block_size": int(b), "engine_rate_req_s": float(np.mean(got)) if got else None,
                     "engine_noise_req_s": float((max(got) - min(got)) / 2) if len(got) > 1 else None,
                     "seeds": len(per_seed), "rates_run": ",".join(f"{r:g}" for r in sorted(set(g.rate)))})
    return pd.DataFrame(rows)


def compare(engine: pd.DataFrame, predicted: dict[int, float]) -> tuple[pd.DataFrame, list[str]]:
    """The table the report prints, and its verdict lines (module doc)."""
    t = engine.copy()
    t["predicted_rate_req_s"] = [predicted.get(int(b)) for b in t.block_size]
    t["error"] = [(e / p - 1) if e and p else None for e, p in zip(t.engine_rate_req_s, t.predicted_rate_req_s)]
    lines = []
    ok = t.dropna(subset=["engine_rate_req_s", "predicted_rate_req_s"])
    if len(ok) < 2:
        return t, ["fewer than two block sizes have both a predicted and an engine SLO rate: no ordering check"]
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
    rows = []
    for d in sorted(Path(folder).iterdir()):
        m = RUN_DIR.match(d.name)
        if m and (d / "requests.csv").exists():
            rows.append({"block_size": int(m[1]), "rate": float(m[2]), "seed": int(m[3]),
                         "metric": run_metric(pd.read_csv(d / "requests.csv"), key)})
    if not rows:
        raise KvsimError("runs", f"no b<B>_r<RATE>_s<SEED>/requests.csv under {folder}")
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs")
    ap.add_argument("report_csv", help="block_size.csv of kvsim report block-size --profile")
    ap.add_argument("--slo", default="normalized_latency_s=0.1")
    a = ap.parse_args(argv)
    key, _, val = a.slo.partition("=")
    runs = load_runs(Path(a.runs), key)
    pred = pd.read_csv(a.report_csv)
    table, lines = compare(engine_rates(runs, float(val)),
                           {int(b): r for b, r in zip(pred.block_size, pred.max_rate_req_s) if r == r})
    out = Path(a.runs)
    runs.to_csv(out / "engine_runs.csv", index=False)
    table.to_csv(out / "engine_check.csv", index=False)
    text = table.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-") + "\n\n" + "\n".join(lines)
    (out / "engine_check.md").write_text(f"SLO {a.slo}\n\n```\n{text}\n```\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
