"""Why decode steps of a long engine run take longer than the profile's decode grid (issue #10).

Runs a scenario on the real engine, recording every step's decode contexts, then re-times a sample
of its decode-only steps in isolation on the same engine (same CUDA graphs, same cache), three ways:

* ``exact``   — the step's own context lengths;
* ``uniform`` — the same batch with every context at the step's mean (what the profile's
  batch x mean-context grid assumes);
* ``at_max``  — the same batch with every context at the step's longest;
* ``ascending`` / ``descending`` — the step's own contexts sorted (the engine's rows run in the
  scheduler's order, oldest first; the profile's spread grid has them ascending);
* ``even``    — the profile's spread shape (evenly spaced up to the step's longest) at the same rows.

Every sampled step's contexts are written to ``contexts.json``, so their shape can be studied on a CPU.

``engine_gpu`` (the step's device time inside the run) minus ``exact`` is what the sustained run adds
(clocks, cache state); ``exact`` minus ``uniform`` is what unequal contexts add. GPU clocks, power and
temperature are sampled by ``nvidia-smi`` throughout (``clocks.csv``, with phase marks in ``phases.csv``).

usage (GPU): python benchmarks/engine/decode_gap.py SCENARIO.yaml --out DIR [--samples 80] [--profile P]
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recorded_run import gap_parser, run_recorded


def main() -> None:
    a = gap_parser(__doc__.splitlines()[0], samples=80).parse_args()
    import kvsim
    from kvsim.calibrate.measure import _bench
    from kvsim.cost.profile import spread_contexts
    from kvsim.engine.synthetic_step import synthetic_step
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    smi = subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu",
                            "--format=csv,noheader,nounits", "-lms", "200"], stdout=open(out / "clocks.csv", "w"))
    phases = []

    def mark(name):
        phases.append({"phase": name, "unix_s": time.time()})
    sc = kvsim.load_scenario(a.scenario, a.set)
    eng, _, its = run_recorded(sc, mark)
    its["n_prefill"] = [len(x) for x in its.new]
    dec = its[(its.n_prefill == 0) & (its.decode_seqs > 0) & (its.swap_in_blocks == 0)
              & (its.swap_out_blocks == 0) & (its.cow_copies == 0)]
    pick = dec.iloc[np.linspace(0, len(dec) - 1, min(a.samples, len(dec))).astype(int)]
    bs, model, graphs = sc.engine.block_size, eng.model, eng.graphs
    gen = torch.Generator().manual_seed(0)

    def timed(ctx):
        ids, pos, meta = synthetic_step([], ctx, block_size=bs, num_blocks=eng.cache.num_blocks,
                                        vocab_size=model.spec.vocab_size, device=eng.device, backend=eng.backend,
                                        generator=gen)
        run = graphs.run if graphs is not None and graphs.fits(meta) else \
            (lambda i, p, m: model(i, p, eng.cache.gpu, m))
        return _bench(lambda: model.compute_logits(run(ids, pos, meta)).float().argmax(-1).tolist(), warmup=3, rep=15)
    rows = []
    with torch.inference_mode():
        for _, r in pick.iterrows():
            c = [int(x) for x in r.ctx]
            mean = int(round(sum(c) / len(c)))
            rows.append({"iter": int(r["iter"]), "n": len(c), "ctx_mean": sum(c) / len(c), "ctx_max": max(c),
                         "ctx_sum": sum(c), "engine_duration": r.duration_s, "engine_gpu": r.gpu_s, "engine_cpu": r.cpu_s,
                         "exact": timed(c), "uniform": timed([mean] * len(c)), "at_max": timed([max(c)] * len(c)),
                         "ascending": timed(sorted(c)), "descending": timed(sorted(c, reverse=True)),
                         "even": timed(spread_contexts(len(c), max(c))), "contexts": c})
    mark("done")
    smi.terminate()
    (out / "contexts.json").write_text(json.dumps([{"iter": r["iter"], "contexts": r.pop("contexts")} for r in rows]))
    df = pd.DataFrame(rows)
    if a.profile:
        from kvsim.cost.calibrated import CalibratedCostModel, interp1, load_profile
        p = load_profile(a.profile)
        sizes = graphs.sizes if graphs is not None else None
        m = CalibratedCostModel(p, model_name=p.model, dtype=p.dtype, block_size_tokens=bs,
                                decode_graph_batches=sizes)
        # what the simulator charges: the padded graph batch, plus unequal contexts when the profile has them
        df["grid"] = [float(m.decode_step_times(n, np.array([float(s)]))[0] - interp1(float(n), *p.overhead))
                      for n, s in zip(df.n, df.ctx_sum)]
        df["grid_spread"] = [float(m.decode_step_times(n, np.array([float(s)]), np.array([float(x)]))[0]
                                   - interp1(float(n), *p.overhead)) for n, s, x in zip(df.n, df.ctx_sum, df.ctx_max)]
        df["overhead"] = [float(interp1(float(n), *p.overhead)) for n in df.n]
    df.to_csv(out / "decode_gap.csv", index=False)
    pd.DataFrame(phases).to_csv(out / "phases.csv", index=False)
    cols = [c for c in ("engine_gpu", "exact", "uniform", "at_max", "ascending", "descending", "even", "grid",
                        "grid_spread") if c in df]
    df["nb"] = pd.cut(df.n, [0, 8, 16, 32, 48, 64, 128, 256])
    summary = df.groupby("nb", observed=True)[["n", "ctx_mean", "ctx_max"] + cols].mean() * \
        pd.Series({"n": 1, "ctx_mean": 1, "ctx_max": 1, **{c: 1e3 for c in cols}})
    (out / "decode_gap.md").write_text(
        f"# Decode gap: {sc.name} on {torch.cuda.get_device_name(0)}\n\nMean per batch bin; times in ms.\n\n"
        + summary.round(3).to_string() + "\n\n" + json.dumps(
            {"mean_engine_gpu_over_exact": float((df.engine_gpu / df.exact).mean()),
             "mean_exact_over_uniform": float((df.exact / df.uniform).mean()),
             "mean_at_max_over_exact": float((df.at_max / df.exact).mean())}, indent=1) + "\n")
    print((out / "decode_gap.md").read_text())


if __name__ == "__main__":
    main()
