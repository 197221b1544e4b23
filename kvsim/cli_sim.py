"""The simulator's commands: ``kvsim run``, ``sweep`` and ``plan`` (the parser is in :mod:`kvsim.cli`).

Each takes ``--seeds N`` (:mod:`kvsim.replicate`): one run per seed, metrics
as mean and Student-t interval; ``run`` also prints vLLM-bench style latency
percentiles and goodput (:mod:`kvsim.latency`). All three take vllm bench's load flags
(``--request-rate``, ``--burstiness``, ``--max-concurrency``; the last section).
"""
from __future__ import annotations

import time
from pathlib import Path

from kvsim.cli import _check_jobs, _int_list
from kvsim.errors import KvsimError
from kvsim.runtext import arrivals_text, format_summary
from kvsim.outdir import default_out


def _cmd_run(args) -> int:
    from kvsim.config import load_scenario
    from kvsim.output import write_run
    extra = ["cost.model=calibrated", f"cost.profile={args.profile}"] if args.profile else []
    sc = load_scenario(args.scenario, args.set + extra)
    from kvsim.replicate import check_seeds, seed_list
    from kvsim.stats import check_confidence
    seeds = seed_list(sc.seed, check_seeds(args.seeds))
    confidence = check_confidence(args.confidence)
    _check_jobs(args.jobs)
    from kvsim.output import RUN_DEFAULT
    from kvsim.outdir import parse_outputs
    kinds = parse_outputs(args.outputs, RUN_DEFAULT)
    from kvsim.iterrecords import check_mode
    its_mode = check_mode(args.iterations)
    latency_args = None
    if args.goodput or args.metric_percentiles or args.percentile_metrics:
        from kvsim.latency import parse_goodput, parse_percentiles
        latency_args = (parse_percentiles(args.metric_percentiles), parse_goodput(args.goodput),
                        parse_metrics(args.percentile_metrics))
    out = Path(args.out) if args.out else default_out(sc.name)
    from kvsim.outdir import OutputSet
    from kvsim.output import RUN_FILE_NAMES
    OutputSet(out, RUN_FILE_NAMES).check()           # a foreign --out fails before the simulation, not after it
    from kvsim.build import setup_run                  # (numpy, pandas, simpy: after the arguments are checked)
    from kvsim.sim import SimEngine
    t0 = time.perf_counter()
    setup = setup_run(sc)
    eng = SimEngine(setup, fast_forward=not args.no_fast_forward)
    res = eng.run(queue_thirds=True)         # (the overload warning's queue averages, in the summary's pass)
    replications = None
    if len(seeds) > 1:
        from kvsim.config import read_yaml
        from kvsim.replicate import replication_document, run_seeds
        rest = run_seeds(read_yaml(args.scenario), args.set + extra, seeds[1:], jobs=args.jobs)
        replications = [res.summary] + rest
    wall = time.perf_counter() - t0
    arrivals = arrivals_text(sc, len(setup.requests))

    def report() -> str:
        from kvsim.report.run_report import render_run
        pct, slo, metrics = latency_args if latency_args is not None else (None, None, None)
        return render_run(res, arrivals, replications=replications, confidence=confidence, percentiles=pct,
                          goodput_slo=slo, metrics=metrics)
    written = write_run(res, out, extra=None if replications is None else
                        {"replications": replication_document(seeds, replications, confidence)}, kinds=kinds,
                        report=report, iterations=its_mode)
    e = sc.engine
    print(f"kvsim run: {sc.name} — {setup.model.name} on {setup.gpu.name} x{sc.tensor_parallel}, "
          f"{e.allocator}" + (f" (block {e.block_size})" if e.allocator == "paged" else "")
          + (f", {e.scheduler} scheduler" if e.policy == "v0" else ", v1 scheduler (recompute-only, chunked prefill)"))
    print(f"  arrivals: {arrivals}")
    print(f"  {setup.budget.summary()}")
    if setup.model.sliding_window:
        print(f"  KV groups: {setup.kv_layout.describe()}; a block is one page of {e.block_size} tokens")
    if replications is None:
        print(format_summary(res.summary))
    else:
        from kvsim.replicate import format_replicated
        print(f"  seeds {seeds[0]}..{seeds[-1]}; requests.csv, iterations.csv and run.png are seed {seeds[0]}'s, "
              f"summary.json holds every run")
        print(format_replicated(replications, confidence))
    if latency_args is not None:
        from kvsim.latency import ITL_COLUMNS, format_latency_table
        from kvsim.output import iteration_frame
        print(format_latency_table(res.requests, iteration_frame(res, ITL_COLUMNS), *latency_args))
    warning = overload_warning(sc, res)
    if warning:
        print(warning)
    if "segments.csv" in written and its_mode == "auto":
        print(f"  {res.summary['num_iterations']:,} iterations: segments.csv has one row per stepped iteration or "
              f"fast-forwarded segment (--iterations rows writes iterations.csv, one row per iteration)")
    print(f"  wrote {out}/{{{', '.join(written)}}} "
          f"in {wall:.2f} s wall ({eng.ff_steps} of {res.summary['num_iterations']} iterations fast-forwarded)")
    return 0


def overload_warning(sc, res) -> str | None:
    """``  WARNING: Overloaded ...`` when the run's waiting queue grew (:func:`kvsim.report.run_report.verdict`,
    the report's headline), for any scheduler; None otherwise."""
    from kvsim.output import iteration_chunks
    from kvsim.queue_thirds import rate_driven
    from kvsim.report.run_report import REPORT_COLUMNS, verdict
    if not rate_driven(sc.workload):
        return None
    # (the simulator's result holds the queue averages, from its summary pass: no second pass over the rows)
    head, why = verdict(sc, res.summary, res.requests, iteration_chunks(res, REPORT_COLUMNS),
                        thirds=getattr(res, "queue_thirds", None))
    if not head.startswith("Overloaded"):
        return None
    return f"  WARNING: {head}. {why.split('. ')[0]}."


def _cmd_sweep(args) -> int:
    from kvsim.config import load_scenario
    from kvsim.plots import plot_sweep
    from kvsim.sweeps import parse_grid, sweep
    from kvsim.outdir import OutputSet
    grid = parse_grid(args.grid)
    sc = load_scenario(args.scenario, args.set)
    _notes(sc)
    _check_jobs(args.jobs)
    out = Path(args.out) if args.out else default_out(sc.name, "-sweep")
    from kvsim.replicate import check_seeds
    from kvsim.stats import check_confidence
    seeds = check_seeds(args.seeds)
    check_confidence(args.confidence)
    from kvsim.outdir import parse_outputs
    kinds = parse_outputs(args.outputs, SWEEP_DEFAULT)
    runs_csv = "sweep_runs.csv" if seeds > 1 else "sweep.csv"
    sweep_files = ("sweep.csv", "sweep.png", "sweep_runs.csv", "sweep.json", "report.html")
    OutputSet(out, sweep_files).check()              # a foreign --out fails before the sweep, not after it
    resume = out / runs_csv if args.out and out.is_dir() and (out / runs_csv).is_file() else None
    df = sweep(args.scenario, grid, args.set, jobs=args.jobs, progress=not args.quiet,
               backend=args.backend, resume=resume, seeds=seeds, confidence=args.confidence)
    written = []
    with OutputSet(out, sweep_files) as d:
        if "csv" in kinds:
            df.to_csv(d / "sweep.csv", index=False)
            written.append("sweep.csv")
            if seeds > 1:
                df.attrs["runs"].to_csv(d / "sweep_runs.csv", index=False)
                written.append("sweep_runs.csv")
        if "json" in kinds:
            from kvsim.outdir import write_json
            write_json(d / "sweep.json", {"grid": grid, "seeds": seeds, "points": df.to_dict(orient="records")},
                       indent=1)
            written.append("sweep.json")
        ok = df[df.error == ""] if "error" in df else df
        if len(ok) and "png" in kinds:
            plot_sweep(ok, list(grid), d / "sweep.png")
            written.append("sweep.png")
        if "html" in kinds:
            from kvsim.report.sweep_report import render_sweep
            (d / "report.html").write_text(render_sweep(df, grid, sc.name, seeds, args.confidence), encoding="utf-8")
            written.append("report.html")
    cols = list(grid) + ["throughput_req_s", "normalized_latency_s", "avg_batched_requests", "preemptions"]
    if seeds > 1:
        cols = list(grid) + [f"{m}{e}" for m in ("throughput_req_s", "normalized_latency_s", "ttft_p99_s")
                             for e in ("", "_ci_lo", "_ci_hi")] + ["runs"]
        print(f"mean and {args.confidence:.0%} interval over seeds (per point); per-run rows in sweep_runs.csv")
    cols = [c for c in cols if c in df]
    print(df[cols + (["error"] if (df.get("error", "") != "").any() else [])].to_string(
        index=False, float_format=lambda x: f"{x:.4g}"))
    print(f"wrote {out}/{{{', '.join(written)}}}")
    return 0


SWEEP_DEFAULT = ("csv", "png", "html")
PLAN_DEFAULT = ("csv", "json", "png", "html")


def _cmd_plan(args) -> int:
    from kvsim.plan import parse_slo, plan
    from kvsim.plan.output import describe_recommendation, format_table, write_plan
    from kvsim.sweeps import parse_grid
    from kvsim.config import load_scenario
    from kvsim.latency import parse_goodput
    from kvsim.plan.slo import with_goodput
    goodput = parse_goodput(args.goodput)
    slo = with_goodput(parse_slo(args.slo), goodput, bool(args.slo))
    cands = parse_grid(args.candidates, "--candidates") if args.candidates else {}
    replicas = _int_list(args.replicas, "--replicas", "1,2,4")
    sc = load_scenario(args.scenario, args.set)
    _notes(sc)
    _check_jobs(args.jobs)
    from kvsim.outdir import parse_outputs
    kinds = parse_outputs(args.outputs, PLAN_DEFAULT)
    prices = parse_prices(args.price)
    out = Path(args.out) if args.out else default_out(sc.name, "-plan")
    from kvsim.outdir import OutputSet
    from kvsim.plan.output import PLAN_FILES
    OutputSet(out, [f for fs in PLAN_FILES.values() for f in fs]).check()   # before the search, not after it
    res = plan(args.scenario, slo, cands, overrides=args.set, replicas=replicas, requests=args.requests,
               rel_tol=args.tol, objective=args.objective, jobs=args.jobs, progress=not args.quiet,
               seeds=args.seeds, confidence=args.confidence, max_requests=args.max_requests, goodput=goodput,
               prices=prices)
    written = write_plan(res, list(cands), out, kinds, sc.name)
    print(format_table(res, list(cands)))
    print(describe_recommendation(res, list(cands)))
    print(f"wrote {out}/{{{', '.join(p.name for p in written)}}}")
    return 0


def _notes(sc) -> None:
    """Notes on the base scenario that the worker processes cannot print (they go to stderr after success)."""
    from kvsim.build import dtype_note
    from kvsim.workload.config import note_once
    note = dtype_note(sc)
    if note:
        note_once(note)


def parse_prices(items: list[str] | None) -> dict[str, float]:
    """``--price h200=3.5`` (repeatable, or comma-separated) -> {"h200": 3.5} (checked by the planner)."""
    out = {}
    for item in (x.strip() for raw in items or [] for x in str(raw).split(",")):
        gpu, sep, usd = item.partition("=")
        try:
            if not (sep and gpu.strip()):
                raise ValueError
            out[gpu.strip()] = float(usd)
        except ValueError:
            raise KvsimError("--price", f"got {item!r}, expected GPU=USD_PER_HOUR like h200-141gb=3.5") from None
    return out


def _add_seed_args(p, jobs: bool = False) -> None:
    p.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="replications with seeds seed..seed+N-1; metrics as mean and interval (default 1)")
    p.add_argument("--confidence", type=float, default=0.95,
                   help="confidence of the Student-t intervals across seeds (default 0.95)")
    if jobs:
        p.add_argument("--jobs", type=int, default=None, help="parallel processes for --seeds (default: all cores)")


# -- vllm bench serve's load flags on run, sweep and plan ---------------------------------------------------
# ``--request-rate R`` (inf: burst at t=0), ``--burstiness K`` (gamma shape, cv 1/sqrt(K)) and
# ``--max-concurrency N`` (closed loop) are the workload fields of the same meaning, applied after every
# ``--set`` (so the flag wins); ``--percentile-metrics ttft,tpot,itl,e2el`` (run) picks the latency rows.
FLAGS = (("request_rate", "--request-rate", "workload.rate_req_s", "R",
          "vllm bench's --request-rate: workload.rate_req_s (inf = every request at t=0)"),
         ("burstiness", "--burstiness", "workload.burstiness", "K",
          "vllm bench's --burstiness: gamma shape of the inter-arrival times (1 = Poisson, < 1 burstier); "
          "workload.burstiness"),
         ("max_concurrency", "--max-concurrency", "workload.max_concurrency", "N",
          "vllm bench's --max-concurrency: at most N requests in flight (closed loop); workload.max_concurrency"))


def add_bench_args(p, percentile_metrics: bool = False) -> None:
    from kvsim.labels import LATENCY_METRICS
    for dest, flag, _, metavar, text in FLAGS:
        p.add_argument(flag, dest=dest, default=None, metavar=metavar, help=text)
    if percentile_metrics:
        p.add_argument("--percentile-metrics", default=None, metavar="M1,M2,...",
                       help=f"latency metrics to print ({','.join(LATENCY_METRICS)}; default all), as vllm "
                            "bench's; with --metric-percentiles")


def bench_overrides(args) -> list[str]:
    """The ``--set`` items the vLLM-bench flags given in ``args`` stand for (they are YAML values, checked by the
    scenario's own validation, so a bad one names the flag's field)."""
    out = []
    for dest, flag, key, _, _ in FLAGS:
        raw = getattr(args, dest, None)
        if raw is None:
            continue
        if not str(raw).strip():
            raise KvsimError(flag, "got an empty value")
        out.append(f"{key}={str(raw).strip()}")
    return out


def check_rate_flag(args) -> None:
    """``--request-rate`` on a trace that replays its own arrival times would change nothing: refuse it."""
    if getattr(args, "request_rate", None) is None:
        return
    from kvsim.config import load_scenario
    w = load_scenario(args.scenario, args.set).workload
    if w.dataset == "trace" and not w.retime_trace:
        raise KvsimError("--request-rate", "the trace replays its own arrival_s (workload.retime_trace is false), "
                                           "so a rate changes nothing; add --set workload.retime_trace=true --set "
                                           "workload.arrival=poisson to re-time its rows at this rate")


def parse_metrics(raw) -> list[str] | None:
    """``"ttft,e2el"`` -> ["ttft", "e2el"] (None when not given: all of them)."""
    from kvsim.labels import LATENCY_METRICS
    if raw is None:
        return None
    names = [x.strip().lower() for x in str(raw).split(",")]
    bad = [x for x in names if x not in LATENCY_METRICS]
    if not names or bad:
        raise KvsimError("--percentile-metrics", f"got {raw!r}; allowed: comma-separated "
                                                 f"{', '.join(LATENCY_METRICS)}")
    return list(dict.fromkeys(names))
