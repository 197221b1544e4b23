"""The engine stepped against overlapped (``runtime.async_scheduling``) on the same scenarios, alternating in one
process on one card (GPU machine; CPU works with tiny models): throughput, mean normalized latency, decode-only
step time and its host / device parts by rows, how many steps overlapped and how many arrivals joined a step
late. Each run is a fresh engine on one loaded model.

usage: python benchmarks/engine/async_overlap.py scenarios/validation/v21_*.yaml [...] --repeats 2 --out DIR
           [--set runtime.max_wall_s=40]
"""
from __future__ import annotations

import argparse
import json
import pathlib

import pandas as pd
from host_split import summary      # decode-only steps by rows (this folder's host_split.py)


def run(path: str, overlap: bool, sets: list[str], model=None):
    import kvsim
    from kvsim.engine.engine import RealEngine
    sc = kvsim.load_scenario(path, list(sets) + [f"runtime.async_scheduling={str(overlap).lower()}"])
    eng = RealEngine(sc, model=model)
    return eng.run(), eng.model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenarios", nargs="+")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", required=True)
    ap.add_argument("--set", action="append", default=[])
    a = ap.parse_args()
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, model = [], None
    for path in a.scenarios:
        name = pathlib.Path(path).stem
        for r in range(a.repeats):
            for overlap in (False, True):
                res, model = run(path, overlap, a.set, model)
                s, info = res.summary, res.info
                tag = f"{name}_{'overlap' if overlap else 'stepped'}_{r}"
                res.iterations.to_csv(out / f"{tag}.iterations.csv", index=False)
                dec = summary(res.iterations, ("duration_s", "gpu_s", "cpu_s"))
                rows.append({"scenario": name, "repeat": r, "overlap": overlap,
                             "throughput_req_s": s["throughput_req_s"], "mean_norm_latency_s": s["normalized_latency_s"],
                             "tpot_p50_s": s["tpot_p50_s"], "steps": len(res.iterations),
                             "steps_overlapped": info.get("steps_overlapped"), "arrivals_deferred": info.get("arrivals_deferred"),
                             "decode_step_ms_median": float(res.iterations[(res.iterations.prefill_tokens == 0)].duration_s.median() * 1e3),
                             "cpu_ms_mean": float(res.iterations.cpu_s.mean() * 1e3), "gpu_ms_mean": float(res.iterations.gpu_s.mean() * 1e3),
                             "reference_step_ms": ((info.get("reference_step") or {}).get("time_s") or 0) * 1e3})
                print(f"## {tag}: {json.dumps(rows[-1])}\n{dec.to_string()}", flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "async_overlap.csv", index=False)
    print(df.to_string(index=False))


if __name__ == "__main__":
    main()
