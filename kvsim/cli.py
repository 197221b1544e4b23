"""Command line: ``kvsim run | sweep | models | gpus``.

Bad input (unknown field, impossible config, unreadable file) prints one line
``error: <field>: <what is wrong>`` and exits with code 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from kvsim.errors import KvsimError

ROWS = (
    ("throughput", "throughput_req_s", "{:.3f} req/s"), ("", "throughput_tok_s", "{:.1f} tok/s"),
    ("normalized latency (mean)", "normalized_latency_s", "{:.4f} s/token"),
    ("TTFT p50 / p99", ("ttft_p50_s", "ttft_p99_s"), "{:.3f} / {:.3f} s"),
    ("TPOT p50 / p99", ("tpot_p50_s", "tpot_p99_s"), "{:.4f} / {:.4f} s"),
    ("avg batched requests", "avg_batched_requests", "{:.2f}"),
    ("preemptions (swap / recompute)", ("preemptions", "preemptions_swap", "preemptions_recompute"),
     "{} ({} / {})"),
    ("KV used / reserved", ("mem_used_frac", "mem_reserved_frac"), "{:.1%} / {:.1%}"),
    ("KV internal / external frag.", ("mem_internal_frag_frac", "mem_external_frag_frac"), "{:.1%} / {:.1%}"),
    ("KV saved by sharing", "sharing_saved_frac", "{:.1%}"),
    ("requests finished / rejected / total", ("requests_finished", "requests_rejected", "requests_total"),
     "{} / {} / {}"),
    ("iterations, simulated time", ("num_iterations", "sim_duration_s"), "{}, {:.1f} s"),
)


def format_summary(summary: dict) -> str:
    lines = []
    for label, keys, fmt in ROWS:
        keys = keys if isinstance(keys, tuple) else (keys,)
        vals = [summary.get(k) for k in keys]
        text = "n/a" if any(v is None for v in vals) else fmt.format(*vals)
        lines.append(f"  {label:<38} {text}")
    return "\n".join(lines)


def _cmd_run(args) -> int:
    from kvsim.config import load_scenario
    from kvsim.output import write_run
    from kvsim.sim import SimEngine
    from kvsim.build import setup_run
    sc = load_scenario(args.scenario, args.set)
    t0 = time.perf_counter()
    setup = setup_run(sc)
    eng = SimEngine(setup, fast_forward=not args.no_fast_forward)
    res = eng.run()
    wall = time.perf_counter() - t0
    out = Path(args.out or Path("runs") / sc.name)
    write_run(res, out)
    e = sc.engine
    print(f"kvsim run: {sc.name} — {setup.model.name} on {setup.gpu.name} x{sc.tensor_parallel}, "
          f"{e.allocator}" + (f" (block {e.block_size})" if e.allocator == "paged" else "")
          + f", {e.scheduler} scheduler, {sc.workload.dataset} @ {sc.workload.rate_req_s} req/s")
    print(f"  {setup.budget.summary()}")
    print(format_summary(res.summary))
    print(f"  wrote {out}/{{summary.json, requests.csv, iterations.csv, run.png}} "
          f"in {wall:.2f} s wall ({eng.ff_steps} of {res.summary['num_iterations']} iterations fast-forwarded)")
    return 0


def _cmd_sweep(args) -> int:
    from kvsim.config import load_scenario
    from kvsim.plots import plot_sweep
    from kvsim.sweep import parse_grid, sweep
    grid = parse_grid(args.grid)
    sc = load_scenario(args.scenario, args.set)
    df = sweep(args.scenario, grid, args.set, jobs=args.jobs, progress=not args.quiet)
    out = Path(args.out or Path("runs") / f"{sc.name}-sweep")
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "sweep.csv", index=False)
    ok = df[df.error == ""] if "error" in df else df
    if len(ok):
        plot_sweep(ok, list(grid), out / "sweep.png")
    cols = list(grid) + ["throughput_req_s", "normalized_latency_s", "avg_batched_requests", "preemptions"]
    cols = [c for c in cols if c in df]
    print(df[cols + (["error"] if (df.get("error", "") != "").any() else [])].to_string(index=False))
    print(f"wrote {out}/sweep.csv and sweep.png")
    return 0


def _cmd_models(args) -> int:
    from kvsim.catalogue import get_model, list_models
    print(f"{'model':<16}{'arch':<7}{'params':>9}{'layers':>8}{'hidden':>8}{'heads':>7}{'kv':>5}"
          f"{'KV/token':>11}{'max len':>9}")
    for name in list_models():
        m = get_model(name)
        print(f"{m.name:<16}{m.arch:<7}{m.num_params() / 1e9:>8.2f}B{m.num_layers:>8}{m.hidden_size:>8}"
              f"{m.num_heads:>7}{m.num_kv_heads:>5}{m.kv_bytes_per_token() / 1024:>9.0f}KB{m.max_seq_len:>9}")
    return 0


def _cmd_gpus(args) -> int:
    from kvsim.catalogue import get_gpu, list_gpus
    print(f"{'gpu':<14}{'memory':>9}{'HBM':>11}{'fp16 dense':>13}{'host link':>11}{'$/h':>7}")
    for name in list_gpus():
        g = get_gpu(name)
        price = f"{g.price_per_hour_usd:.2f}" if g.price_per_hour_usd else "-"
        print(f"{g.name:<14}{g.memory_bytes / 2**30:>6.0f}GiB{g.hbm_bandwidth_Bps / 1e12:>7.2f}TB/s"
              f"{g.peak_fp16_flops / 1e12:>8.0f}TFLOPs{g.host_link_Bps / 1e9:>7.0f}GB/s{price:>7}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kvsim", description="KV-cache paging simulator and capacity planner")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="simulate one scenario")
    r.add_argument("scenario", help="scenario YAML file")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field, e.g. --set engine.block_size=32 (repeatable)")
    r.add_argument("--out", help="output directory (default runs/<name>)")
    r.add_argument("--no-fast-forward", action="store_true", help="step every iteration (slower, same results)")
    r.set_defaults(func=_cmd_run)
    s = sub.add_parser("sweep", help="run a grid of scenario variants in parallel")
    s.add_argument("scenario")
    s.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2,...",
                   help="a field and its values (repeatable; the grid is the cartesian product)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument("--jobs", type=int, default=None, help="parallel processes (default: all cores)")
    s.add_argument("--out", help="output directory (default runs/<name>-sweep)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_sweep)
    sub.add_parser("models", help="list the model catalogue").set_defaults(func=_cmd_models)
    sub.add_parser("gpus", help="list the GPU catalogue").set_defaults(func=_cmd_gpus)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KvsimError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:          # e.g. `kvsim models | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
