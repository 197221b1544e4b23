"""Reproduce analogues of the PagedAttention paper's figures on the simulator: ``kvsim paper [--quick]``.

Each experiment sweeps a scenario of ``scenarios/paper/`` with :func:`kvsim.sweep`,
draws a figure (:mod:`kvsim.report.paper_figs`) and puts the measured number
next to the paper's (:mod:`kvsim.report.paper_values`) in ``SUMMARY.md``.
``--quick`` uses 400 requests (1,500 for Alpaca-like, 200 for beam search) and
fewer rates; the full run uses 1,000 (3,000 for Alpaca-like, so that a probe
lasts at least a minute of arrivals). ``--preset paper-a100-2023`` prices every
step with the measured host overheads of the paper's 2023 engine
(:mod:`kvsim.cost.presets`); without it the default roofline is used.

Numbers are read where the paper reads them (:mod:`kvsim.report.paper_measure`):
Fig. 12 as rates at equal normalized latency, Fig. 2 while the cache is full
(:func:`fig2_full_cache`), Fig. 13 at the paper's rates, Fig. 18a from the
project's kernel benchmark. The rate grids below are dense around the knees
(the FasterTransformer-like static baseline saturates near 0.1 req/s).

Beyond the paper: the same parallel-sampling and ShareGPT-like workloads under ``engine.policy`` v0 and
v1 (:mod:`kvsim.report.paper_v1`; the full run adds v1 to the block-size tables) and a sliding-window
model against full attention on long prompts (:mod:`kvsim.report.paper_window`).

Fig. 17 (chatbot) has no scenario file: it is ShareGPT-like lengths with a
512-token conversation history prepended to every prompt (``prefix_len`` with
prefix caching off, so the history is computed and stored per request, as
when every conversation is different) — long prompts, as in the paper, which
truncates histories to the last 1,024 tokens.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd

from kvsim.errors import KvsimError
from kvsim.report.paper_cost import PaperCost
from kvsim.sweeps import sweep

PAPER = Path(__file__).resolve().parents[1] / "scenarios" / "paper"
ALLOCATORS = ["paged", "orca_oracle", "orca_pow2", "orca_max"]
STATIC = "static (FT-like)"
SHARE_RATES = [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5]
SHARE_RATES_QUICK = [0.5, 1.0, 1.5, 2.0, 2.5]
STATIC_RATES = [0.05, 0.1, 0.2, 0.5]          # request-level batching: slow to simulate at low rates
STATIC_RATES_QUICK = [0.05, 0.1, 0.5]
ALPACA_RATES = [2, 4, 10, 20, 30, 40, 50, 60, 80]
ALPACA_RATES_QUICK = [4, 15, 30, 50, 80]
FIG2_RATE = 2.5                               # ShareGPT-like: above every allocator's capacity
FIG2_FREE_BELOW = 0.05                        # "full": free usable slots under 5% of the cache


def _sc(name: str) -> Path:
    p = PAPER / f"{name}.yaml"
    if not p.exists():
        raise KvsimError("paper", f"scenario {p} not found (run from a kvsim checkout)")
    return p


def fig2_point(task: tuple) -> dict:
    """One allocator at a saturating rate: memory split over its full-cache iterations (and over the whole run)."""
    name, overrides, allocator, free_below = task
    from kvsim.config import load_scenario
    from kvsim.report.paper_readings import full_cache_split
    from kvsim.sim import simulate
    r = simulate(load_scenario(_sc(name), list(overrides)))
    reservation = r.setup.max_model_len if allocator == "orca_max" else 0
    split = full_cache_split(r.iterations, free_below, reservation)
    return {"engine.allocator": allocator, **split, "run_mem_used_frac": r.summary["mem_used_frac"],
            "avg_batched_requests": r.summary["avg_batched_requests"]}


def fig2_full_cache(overrides: list[str], jobs: int | None, rate: float = FIG2_RATE,
                    free_below: float = FIG2_FREE_BELOW) -> pd.DataFrame:
    """Fig. 2: the KV split of each allocator while its cache is full, ShareGPT-like at ``rate``.

    Columns are named like a run summary's (``mem_used_frac``, ``mem_internal_frag_frac``, ...)
    so the figure code draws them as before.
    """
    from concurrent.futures import ProcessPoolExecutor
    tasks = [(f"fig12_opt13b_sharegpt_{a}", [*overrides, f"workload.rate_req_s={rate}"], a, free_below)
             for a in ALLOCATORS]
    with ProcessPoolExecutor(max_workers=max(1, min(jobs or os.cpu_count() or 1, len(tasks)))) as ex:
        rows = list(ex.map(fig2_point, tasks))
    df = pd.DataFrame(rows).rename(columns={"mem_internal_frac": "mem_internal_frag_frac",
                                            "mem_external_frac": "mem_external_frag_frac"})
    return df.assign(**{"workload.rate_req_s": rate, "free_below_frac": free_below})


def experiments(quick: bool, jobs: int | None, progress: bool, preset: str | None = None,
                cost: PaperCost | None = None) -> dict:
    """Every sweep's frame; ``cost`` (:class:`PaperCost`) sets the cost model, the rate scale and which
    block sizes Fig. 18b / 19 can sweep (a figure left with none is absent from the result)."""
    cost = cost or PaperCost(preset=preset)
    pre = cost.overrides()
    rs = cost.rates
    n = [f"workload.num_requests={400 if quick else 1000}", *pre]
    fast = [f"workload.num_requests={1500 if quick else 3000}"]      # Alpaca-like: >= 60 s of arrivals
    run = lambda name, grid, extra=(): sweep(_sc(name), grid, n + list(extra), jobs=jobs, progress=progress)
    res: dict = {}
    share_rates = rs(SHARE_RATES_QUICK if quick else SHARE_RATES)
    static_rates = rs(STATIC_RATES_QUICK if quick else STATIC_RATES)
    alpaca_rates = rs(ALPACA_RATES_QUICK if quick else ALPACA_RATES)
    res["fig12_sharegpt"] = pd.concat([run(f"fig12_opt13b_sharegpt_{a}", {"workload.rate_req_s": share_rates})
                                       .assign(**{"engine.allocator": a}) for a in ALLOCATORS]
                                      + [run("fig12_opt13b_sharegpt_static", {"workload.rate_req_s": static_rates})
                                         .assign(**{"engine.allocator": STATIC})], ignore_index=True)
    res["fig12_alpaca"] = pd.concat([run(f"fig12_opt13b_alpaca_{a}", {"workload.rate_req_s": alpaca_rates}, fast)
                                     .assign(**{"engine.allocator": a}) for a in ALLOCATORS], ignore_index=True)
    res["fig2"] = fig2_full_cache(n, jobs, rate=rs(FIG2_RATE))
    if not cost.profile:      # beyond the paper, on the default roofline or a preset (their rates are not scaled)
        from kvsim.report import paper_v1, paper_window
        paged = res["fig12_sharegpt"][res["fig12_sharegpt"]["engine.allocator"] == "paged"]
        res.update(paper_v1.experiments(run, quick, paged, share_rates))
        res.update(paper_window.experiments(quick, jobs, pre))
    widths = [2, 4, 6]
    res["fig14_parallel"] = run("fig14_parallel_sampling_paged",
                                {"workload.n": widths, "engine.allocator": ["paged", "orca_oracle"]},
                                [f"workload.rate_req_s={rs(40)}", "workload.num_requests=200"] if quick else
                                [f"workload.rate_req_s={rs(40)}"])
    res["fig14_beam"] = run("fig14_beam_search_paged",
                            {"workload.beam_width": widths, "engine.allocator": ["paged", "orca_oracle"]},
                            [f"workload.rate_req_s={rs(40)}", "workload.num_requests=200"] if quick else
                            [f"workload.rate_req_s={rs(40)}"])
    from kvsim.report import paper_fig15 as f15
    par = [f"workload.rate_req_s={rs(40)}", *(["workload.num_requests=200"] if quick else [])]
    share = f15.workload_share(_sc("fig14_parallel_sampling_paged"), [*n, *par])
    pp = res["fig14_parallel"].query("`engine.allocator` == 'paged'").set_index("workload.n").sharing_saved_frac
    res["fig15_prompt_share"] = f15.fig15_table(widths, share, pp)
    res["fig15_beam_keep"] = run("fig14_beam_search_paged", f15.beam_keep_grid(), par)
    if cost.prices(_sc("fig16_prefix_1shot")):      # absent (skipped) when a profile holds another model
        res["fig16"] = pd.concat([run(f"fig16_prefix_{k}", {"engine.enable_prefix_caching": [True, False],
                                                            "workload.rate_req_s": rs([10, 20, 40])}).assign(shots=k)
                                  for k in ("1shot", "5shot")], ignore_index=True)
    res["fig17"] = run("fig12_opt13b_sharegpt_paged", {"engine.allocator": ALLOCATORS,
                                                       "workload.rate_req_s": rs([0.3, 0.6, 0.9, 1.2])},
                       ["workload.prefix_len=512", "workload.num_prefixes=100000", "workload.max_len_tokens=2048"])
    sizes = cost.sizes([1, 2, 4, 8, 16, 32, 64, 128, 256] if not quick else [2, 8, 16, 32, 64, 128, 256])
    res["fig18b"] = pd.concat([run(f"fig18b_block_size_{d}", {"engine.block_size": sizes}, extra).assign(dataset=d)
                               for d, extra in (("sharegpt", [f"workload.rate_req_s={rs(2.0)}"]),
                                                ("alpaca", [f"workload.rate_req_s={rs(50)}"] + fast))],
                              ignore_index=True)
    from kvsim.report.blocksize import DEFAULT_BLOCK_SIZES, analyse
    picks = {}
    search = cost.sizes([16, 32, 64, 128] if quick else list(DEFAULT_BLOCK_SIZES))
    for d in ("sharegpt", "alpaca"):
        a = analyse(_sc(f"fig18b_block_size_{d}"), {"normalized_latency_s": 0.1}, jobs=jobs, overrides=pre,
                    block_sizes=search, requests=400 if quick else 600, compare_v1=not quick and not cost.profile)
        picks[d] = a.block_size
        res[f"fig18b_rate_{d}"] = a.table
    res["fig18b_choice"] = pd.DataFrame([{"dataset": d, "block_size": b, "searched": ",".join(map(str, search))}
                                         for d, b in picks.items()])
    f19 = cost.sizes([1, 4, 16, 64, 256])
    if len(f19) >= 2:                     # a comparison across block sizes needs two of them
        from kvsim.config import load_scenario
        own = lambda m: f"workload.rate_req_s={rs(load_scenario(_sc(f'fig19_{m}')).workload.rate_req_s)}"  # noqa: E731
        res["fig19"] = pd.concat([run(f"fig19_{m}", {"engine.block_size": f19}, [own(m)]).assign(mode=m)
                                  for m in ("swap", "recompute")], ignore_index=True)
    return res


PAPER_SUFFIXES = (".csv", ".png", ".json", ".md")


def reproduce(out, quick: bool = False, jobs: int | None = None, progress: bool = False,
              preset: str | None = None, cost: PaperCost | None = None) -> Path:
    """Run every experiment, write figures, ``results.json`` and ``SUMMARY.md`` into ``out``."""
    from kvsim.outdir import OutputSet, finite_json
    from kvsim.report.paper_figs import draw_all
    from kvsim.report.paper_measure import measured
    from kvsim.report.paper_summary import summary_markdown
    out = Path(out)
    cost = cost or PaperCost(preset=preset)        # an unknown preset or unusable profile fails before any work
    OutputSet(out, PAPER_SUFFIXES).check()        # refuse a foreign --out before minutes of work
    t0 = time.perf_counter()
    res = experiments(quick, jobs, progress, cost=cost)
    with OutputSet(out, PAPER_SUFFIXES) as d:
        for k, df in res.items():
            df.to_csv(d / f"{k}.csv", index=False)
        meas = measured(res, rate_scale=cost.rate_scale)
        draw_all(res, d, meas)
        (d / "results.json").write_text(finite_json(meas, indent=2))
        (d / "SUMMARY.md").write_text(summary_markdown(meas, quick, time.perf_counter() - t0, cost=cost))
    return out / "SUMMARY.md"
