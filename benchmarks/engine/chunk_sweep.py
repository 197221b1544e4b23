"""How a mixed step's time grows with its chunk, between the points the calibration's mixed grid measures.

The mixed grid (``kvsim.calibrate.steps``: decode rows x context x chunk tokens 16, 64, 256, 512, 1,024, 1,792)
is interpolated linearly along the chunk. The engine runs a mixed step as the CUDA graph of its padded token
count (chunk + decode rows on the prefill ladder), and the GEMMs' time is not linear in that count: the library's
kernel choice makes some counts slow (Llama-3-8B on an H100: prefill steps of 448 and 832 tokens took 17.0 and
23.9 ms against 12.8 at 480 and 22.8 at 960). The replays of the H100 and H200 chunked traces do not tell which
interpolation is right: pricing along the prefill grid's shape (the prefill grid at the padded count plus the
mixed grid's excess over it) cut the mixed-step error on the H200 traces, whose profile timed its two grids in
different ways, and raised it on the H100 ones (closing note of 2026-12-06). This measures it.

``--measure`` (GPU): the calibration's own ``measure_steps`` (same graphs, same timer, same idle gap before each
step: ``--grid-idle``, default 1 as ``kvsim calibrate``) with the mixed grid's chunk axis replaced by a dense one
(every 32 tokens by default) at a few row counts and one context, and every captured prefill token count. Writes
``OUT/chunk_sweep.json`` (the two grids as the profile would hold them, plus the card).

``--analyze JSON --profile P`` (CPU): prices each measured mixed point from the profile's grids both ways —
linear along the profile's chunks, and along its prefill grid — and prints the error of each against the
measurement, by chunk range. Use a profile calibrated on the same card in the same lease.

``--no-route``: the graphs replay every captured size (no ``runtime.cuda_graph_prefill_route``), for a before/after.

usage:
    python benchmarks/engine/chunk_sweep.py --measure --model llama-3-8b --out DIR [--rows 1,8,32] [--ctx 1024] [--no-route]
    python benchmarks/engine/chunk_sweep.py --analyze DIR/chunk_sweep.json --profile calibrate/profiles/H100/llama-3-8b-1206.json
"""
from __future__ import annotations

import argparse
import bisect
import json
import sys
from pathlib import Path

import numpy as np


def measure(a) -> None:
    import torch

    from kvsim.calibrate import measure as M
    from kvsim.calibrate import steps as S
    from kvsim.catalogue import get_model
    from kvsim.engine.models import build_model
    M.GRID_IDLE = float(a.grid_idle)
    spec = get_model(a.model)
    dev = torch.device("cuda")
    model = build_model(spec, dtype=torch.float16, device=dev, weights="dummy")
    rows = [int(x) for x in a.rows.split(",")]
    chunks = list(range(a.step, S.GRAPH_PREFILL_MAX_TOKENS - max(rows) + 1, a.step))
    grid = {"batch": [16], "ctx": [512], "spread": [512], "prefill": None, "prefill_batch": None,
            "prefill_cached": None, "mix": (rows, [a.ctx], chunks)}
    _, _, prefill, mixed, _, _, _ = S.measure_steps(model, a.block_size, dev, grid=grid, route=not a.no_route)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"model": spec.name, "gpu": torch.cuda.get_device_name(), "block_size": a.block_size,
           "grid_idle": M.GRID_IDLE, "route": not a.no_route, "prefill_step": prefill, "mixed_step": mixed,
           "command": " ".join(sys.argv)}
    name = "chunk_sweep_noroute.json" if a.no_route else "chunk_sweep.json"
    (out / name).write_text(json.dumps(doc, indent=1))
    print(f"wrote {out / name}: {len(rows)} rows x {len(mixed['chunk'])} chunks, "
          f"{len(prefill['tokens'])} prefill sizes, routed past {prefill.get('graph_skip', [])}")


def _padded(n: int, sizes: list[int]) -> int:
    i = bisect.bisect_left(sizes, n)
    return sizes[i] if i < len(sizes) else n


def price_both(doc: dict, profile: str) -> list[dict]:
    """Each measured (rows, chunk range): the mean and mean absolute error of the profile's mixed-step price,
    interpolated linearly along the mixed grid's chunks and along its prefill grid's shape."""
    from kvsim.cost.profile import interp1, load_profile
    prof = load_profile(profile)              # the grids as the cost model holds them (made monotone)
    bs = int(doc["block_size"])
    xs_, ps = prof.prefill_step[bs]
    xs = [int(x) for x in xs_]
    xn, xc, xt, grid = prof.mixed_step[bs]                        # grid: [rows, ctx, chunk]
    m = doc["mixed_step"]
    ctx = float(m["ctx"][0])
    out = []
    for i, n in enumerate(m["decode"]):
        meas = np.asarray(m["time_s"][i][0], dtype=np.float64)
        chunks = np.asarray(m["chunk"], dtype=np.float64)
        plane = np.array([[float(interp1(float(n), xn, grid[:, ci, tj])) for tj in range(len(xt))]
                          for ci in range(len(xc))])
        at_ctx = np.array([float(interp1(ctx, xc, plane[:, tj])) for tj in range(len(xt))])
        linear = np.interp(chunks, xt, at_ctx)
        base = np.array([float(interp1(float(_padded(int(t) + n, xs)), xs, ps)) for t in xt])
        here = np.array([float(interp1(float(_padded(int(t) + n, xs)), xs, ps)) for t in chunks])
        shaped = here + np.interp(chunks, xt, at_ctx - base)
        for lo, hi in ((1, 64), (65, 256), (257, 512), (513, 1024), (1025, 2048)):
            sel = (chunks >= lo) & (chunks <= hi)
            if sel.any():
                el, es = linear[sel] / meas[sel] - 1, shaped[sel] / meas[sel] - 1
                out.append({"rows": n, "lo": lo, "hi": hi, "points": int(sel.sum()),
                            "linear_mean": float(el.mean()), "linear_abs": float(np.abs(el).mean()),
                            "shaped_mean": float(es.mean()), "shaped_abs": float(np.abs(es).mean())})
    return out


def analyze(a) -> None:
    doc = json.loads(Path(a.analyze).read_text())
    m = doc["mixed_step"]
    print(f"measured on {doc['gpu']} ({doc['model']}, block {doc['block_size']}, ctx {m['ctx'][0]}); "
          f"priced by {a.profile}")
    print("rows  chunks      n  linear: mean err  |err|   prefill-shape: mean err  |err|")
    for r in price_both(doc, a.profile):
        print(f"{r['rows']:4d}  {r['lo']:4d}-{r['hi']:<5d} {r['points']:3d}  {100 * r['linear_mean']:+7.1f}% "
              f"{100 * r['linear_abs']:6.1f}%          {100 * r['shaped_mean']:+7.1f}% {100 * r['shaped_abs']:6.1f}%")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--measure", action="store_true")
    ap.add_argument("--analyze", default=None, help="a chunk_sweep.json to price with --profile")
    ap.add_argument("--profile", default=None)
    ap.add_argument("--model", default="llama-3-8b")
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--rows", default="1,8,32")
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--step", type=int, default=32, help="chunk tokens between measured points")
    ap.add_argument("--grid-idle", type=float, default=1.0)
    ap.add_argument("--no-route", action="store_true",
                    help="every prefill graph size replays its own graph (the engine before runtime.cuda_graph_prefill_route); "
                         "writes chunk_sweep_noroute.json")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if a.measure:
        if not a.out:
            ap.error("--measure needs --out")
        measure(a)
    elif a.analyze:
        if not a.profile:
            ap.error("--analyze needs --profile")
        analyze(a)
    else:
        ap.error("--measure or --analyze")


if __name__ == "__main__":
    main()
