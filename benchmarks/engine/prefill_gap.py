"""Why prefill-only steps of an engine run differ from their calibrated price (issue #10).

Runs a scenario on the real engine, recording every step's prompts (new and cached tokens), then re-times a
sample of its prefill-only steps in isolation on the same engine (same graphs and cache), the way
calibration times prefill grids (each step after two decode steps of 16 rows x 512 context: `kvsim calibrate`'s
``between_decode_steps``), two ways:

* ``exact``  — the step's own prompts;
* ``equal``  — as many prompts of equal length with the same total (what the multi-prompt grid times).

With ``--profile``, ``price`` is what the simulator charges for the step's own plan. Then
``engine_duration - exact`` is what the run adds to the same shape (its host work, the card's state
between steps), ``exact - equal`` what unequal prompts add, and ``exact - price`` the profile's miss on the
shape itself. On the H200 a static batch of 21-32 prompts (2,000-3,400 tokens) ran 9-17% over its price
(`benchmarks/engine/results_H200/serving_0055/README.md`, commit eba0530, v25); this says which of the three it is.

usage (GPU): python benchmarks/engine/prefill_gap.py SCENARIO.yaml --out DIR [--samples 60] [--profile P]
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recorded_run import gap_parser, run_recorded


def equal_split(total: int, k: int) -> list[int]:
    """``k`` prompt lengths as equal as can be, summing to ``total`` (each at least 1)."""
    base, extra = divmod(max(total, k), k)
    return [base + (1 if i < extra else 0) for i in range(k)]


def main() -> None:
    a = gap_parser(__doc__.splitlines()[0], samples=60).parse_args()
    import kvsim
    from kvsim.calibrate.measure import _bench_between
    from kvsim.core.plan import StepPlan
    from kvsim.engine.synthetic_step import synthetic_step
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    sc = kvsim.load_scenario(a.scenario, a.set or None)
    eng, _, its = run_recorded(sc)
    pre = its[(its.decode_seqs == 0) & (its.prefill_tokens > 0) & (its.swap_in_blocks == 0)
              & (its.swap_out_blocks == 0) & (its.cow_copies == 0)].sort_values("prefill_tokens")
    pick = pre.iloc[np.linspace(0, len(pre) - 1, min(a.samples, len(pre))).astype(int)] if len(pre) else pre
    bs, model = sc.engine.block_size, eng.model
    graphs = [g for g in (eng.graphs, eng.prefill_graphs) if g is not None]
    gen = torch.Generator().manual_seed(0)
    kw = dict(block_size=bs, num_blocks=eng.cache.num_blocks, vocab_size=model.spec.vocab_size, device=eng.device,
              backend=eng.backend, generator=gen, mixed_decode_kernel=sc.runtime.mixed_decode_kernel)

    def run(ids, pos, meta):                 # the engine's path: a captured graph if one fits, else eager
        g = next((g for g in graphs if g.fits(meta)), None)
        return g.run(ids, pos, meta) if g is not None else model(ids, pos, eng.cache.gpu, meta)
    cool = synthetic_step([], [min(512, eng.setup.max_model_len)] * 16, **kw)     # calibration's between-step

    def between():
        for _ in range(2):
            run(*cool)

    def timed(prefills):
        ids, pos, meta = synthetic_step(prefills, [], **kw)
        last = meta.prefill_query_start[1:].long() - 1
        return _bench_between(lambda: model.compute_logits(run(ids, pos, meta)[last]).argmax(-1).tolist(), between)
    price = None
    if a.profile:
        from kvsim.graph_sizes import engine_graph_sizes
        from kvsim.cost.calibrated import CalibratedCostModel, load_profile
        p = load_profile(a.profile)
        cm = CalibratedCostModel(p, model_name=p.model, dtype=p.dtype, block_size_tokens=bs,
                                 **engine_graph_sizes(sc))

        def price(new, cached):
            return cm.step_time(StepPlan(prefill_group_ids=list(range(len(new))), prefill_new_tokens=new,
                                         prefill_cached_tokens=cached))
    rows = []
    with torch.inference_mode():
        for _, r in pick.iterrows():
            new, cached = [int(x) for x in r.new], [int(x) for x in r.cached]
            row = {"iter": int(r["iter"]), "prompts": len(new), "tokens": sum(new), "longest": max(new),
                   "cached": sum(cached), "engine_duration": r.duration_s, "engine_gpu": r.gpu_s, "engine_cpu": r.cpu_s,
                   "exact": timed(list(zip(new, cached))),
                   "equal": timed(list(zip(equal_split(sum(new), len(new)), equal_split(sum(cached), len(new))
                                           if sum(cached) else [0] * len(new))))}
            if price is not None:
                row["price"] = price(new, cached)
            rows.append(row)
    df = pd.DataFrame(rows)
    df.to_csv(out / "prefill_gap.csv", index=False)
    cols = [c for c in ("engine_duration", "engine_gpu", "exact", "equal", "price") if c in df]
    if len(df):
        df["group"] = [f"{'1' if k == 1 else '2-8' if k <= 8 else '9+'} prompts, "
                       f"{'<=256' if t <= 256 else '257-1024' if t <= 1024 else '>1024'} tokens"
                       for k, t in zip(df.prompts, df.tokens)]
        summary = df.groupby("group")[["prompts", "tokens"] + cols].mean()
        for c in cols:
            summary[c] *= 1e3
        ratios = {f"mean_{x}_over_{y}": float((df[x] / df[y]).mean())
                  for x, y in (("engine_duration", "exact"), ("exact", "equal"), ("exact", "price")) if x in df and y in df}
        text = summary.round(3).to_string() + "\n\n" + json.dumps(ratios, indent=1)
    else:
        text = "no prefill-only steps in the run"
    (out / "prefill_gap.md").write_text(f"# Prefill gap: {sc.name} on "
                                        f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU'}\n\n"
                                        f"Mean per group; times in ms.\n\n{text}\n")
    print((out / "prefill_gap.md").read_text())


if __name__ == "__main__":
    main()
