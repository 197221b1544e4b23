"""Command line: ``kvsim run | sweep | plan | report block-size | paper | models | gpus | fields``.

Bad input (unknown field, impossible config, unreadable file, bad arguments)
prints one line ``error: <field>: <what is wrong>`` and exits with code 2.
Anything else that goes wrong is a bug: one line ``error: internal error: ...``
and exit code 1 (``KVSIM_DEBUG=1`` shows the traceback). Outputs are written
only under ``--out`` (default ``runs/<sanitised name>``), as one set
(:mod:`kvsim.outdir`).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kvsim.errors import KvsimError
from kvsim.outdir import default_out

def _int_list(raw: str, field: str, example: str) -> list[int]:
    """``"1,2,4"`` -> [1, 2, 4]; empty items, non-integers and an empty list are errors."""
    parts = [x.strip() for x in str(raw).split(",")]
    try:
        if not parts or any(not x for x in parts):
            raise ValueError
        return [int(x) for x in parts]
    except ValueError:
        raise KvsimError(field, f"got {raw!r}, expected integers like {example}") from None


def _check_jobs(jobs) -> None:
    if jobs is not None and not 1 <= jobs <= 1024:
        raise KvsimError("--jobs", f"got {jobs}, expected an integer in [1, 1024]")


def _cmd_report(args) -> int:
    from kvsim.plan import parse_slo
    from kvsim.report import block_size_report
    sizes = _int_list(args.block_sizes, "--block-sizes", "8,16,32") if args.block_sizes is not None else None
    _check_jobs(args.jobs)
    out = Path(args.out) if args.out else default_out(Path(args.scenario).stem, "-block-size")
    from kvsim.plan.slo import with_goodput
    slo = with_goodput(parse_slo(args.slo), None, True)
    rep = block_size_report(args.scenario, slo, out, overrides=args.set, block_sizes=sizes,
                            requests=args.requests, jobs=args.jobs, progress=not args.quiet,
                            compare_v1=args.compare_v1, profile=args.profile)
    print(f"priced by: {rep.pricing}")
    print(rep.table_text())
    print(f"recommended block size: {rep.block_size} — {rep.reason}")
    if rep.decides:
        print(f"what decides: {rep.decides}")
    if rep.v1_reason:
        print(f"v0 vs v1: {rep.v1_reason}")
    print(f"wrote {out / 'report.html'} (open it in a browser)")
    return 0


def _cmd_paper(args) -> int:
    from kvsim.paper import reproduce
    _check_jobs(args.jobs)
    out = Path(args.out or Path("runs") / "paper")
    from kvsim.report.paper_cost import PaperCost
    cost = PaperCost(preset=args.preset, profile=args.profile, gpu=args.gpu, rate_scale=args.rate_scale)
    path = reproduce(out, quick=args.quick, jobs=args.jobs, progress=not args.quiet, cost=cost)
    print(f"wrote {path} and the figures next to it")
    return 0


def _add_plan_args(p, requests_default: int) -> None:
    p.add_argument("scenario", help="scenario YAML file")
    p.add_argument("--slo", action="append", default=[], metavar="KEY=VALUE",
                   help="SLO upper bound (repeatable): normalized_latency_s, ttft_p99_s, tpot_p99_s, "
                        "preemption_rate, goodput_miss_frac (with --goodput) (default normalized_latency_s=0.1)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--requests", type=int, default=requests_default,
                   help="requests per probe (at least; fast rates get 60 s of arrivals)")
    p.add_argument("--jobs", type=int, default=None, help="parallel processes (default: all cores)")
    p.add_argument("--out", help="output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _cmd_models(args) -> int:
    from kvsim.catalogue import get_model, list_models
    print(f"{'model':<16}{'arch':<7}{'params':>9}{'layers':>8}{'hidden':>8}{'heads':>7}{'kv':>5}"
          f"{'KV/token':>11}{'max len':>9}")
    for name in list_models():
        m = get_model(name)
        print(f"{m.name:<16}{m.arch:<7}{m.num_params() / 1e9:>8.2f}B{m.num_layers:>8}{m.hidden_size:>8}"
              f"{m.num_heads:>7}{m.num_kv_heads:>5}{m.kv_bytes_per_token() / 1024:>9.0f}KB{m.max_seq_len:>9}")
    return 0


def _cmd_fields(args) -> int:
    from kvsim.fields import field_rows, format_fields
    text = format_fields(field_rows(), args.match)
    if not text:
        raise KvsimError("fields", f"no scenario field's name or help contains {args.match!r}; `kvsim fields` "
                                   "lists them all")
    print(text)
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


class _Parser(argparse.ArgumentParser):
    """argparse with the one-line error contract: ``error: <argument>: <problem>`` and exit 2; options are
    never abbreviated (``--seed 2`` is not ``--seeds 2``) and an empty value is refused (it would otherwise
    read as the option not given: ``--out ''`` writing to the default folder)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        ns, extra = super().parse_known_args(args, namespace)
        for action in self._actions:
            value = getattr(ns, action.dest, None) if action.dest is not argparse.SUPPRESS else None
            values = value if isinstance(value, list) else [value]
            if any(isinstance(v, str) and not v.strip() for v in values):
                name = action.option_strings[-1] if action.option_strings else action.dest
                self.error(f"argument {name}: empty value")
        return ns, extra

    def error(self, message: str):
        msg = " ".join(message.split())
        if msg.startswith("argument "):
            msg = msg[len("argument "):]
        sys.stderr.write(f"error: {msg} (see {self.prog} --help)\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    from kvsim.cli_sim import PLAN_DEFAULT, SWEEP_DEFAULT, _add_seed_args, _cmd_plan, _cmd_run, _cmd_sweep
    from kvsim.output import RUN_DEFAULT
    from kvsim.outdir import add_outputs_arg
    p = _Parser(prog="kvsim", description="KV-cache paging simulator and capacity planner")
    from kvsim import __version__
    p.add_argument("--version", action="version", version=f"kvsim {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="simulate one scenario")
    r.add_argument("scenario", help="scenario YAML file")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field, e.g. --set engine.block_size=32 (repeatable)")
    r.add_argument("--out", help="output directory (default runs/<name>)")
    r.add_argument("--no-fast-forward", action="store_true", help="step every iteration (slower, same results)")
    r.add_argument("--profile", help="use the calibrated cost model with this profile (kvsim calibrate)")
    _add_seed_args(r, jobs=True)
    r.add_argument("--goodput", nargs="+", default=None, metavar="METRIC:MS",
                   help="per-request SLOs as in vllm bench serve, e.g. --goodput ttft:2000 tpot:100 e2el:60000 "
                        "(ms; metrics ttft, tpot, e2el): prints the share of requests meeting all and goodput")
    r.add_argument("--metric-percentiles", default=None, metavar="P1,P2,...",
                   help="percentiles of TTFT, TPOT, ITL and E2E latency to print (ms), e.g. 50,90,99")
    from kvsim.cli_sim import add_bench_args
    add_bench_args(r, percentile_metrics=True)
    add_outputs_arg(r, RUN_DEFAULT)
    r.add_argument("--iterations", default="auto", metavar="MODE",
                   help="csv's iteration file: rows (iterations.csv, one row per iteration), segments "
                        "(segments.csv, one row per stepped iteration or fast-forwarded segment) or auto "
                        "(default: rows up to 1,000,000 iterations, segments above)")
    r.set_defaults(func=_cmd_run)
    s = sub.add_parser("sweep", help="run a grid of scenario variants in parallel")
    s.add_argument("scenario")
    s.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2,...",
                   help="a field and its values (repeatable; the grid is the cartesian product)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument("--jobs", type=int, default=None, help="parallel processes (default: all cores)")
    s.add_argument("--out", help="output directory (default runs/<name>-sweep)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local processes (default) or a Ray cluster (pip install 'kvsim[ray]')")
    _add_seed_args(s)
    add_bench_args(s)
    add_outputs_arg(s, SWEEP_DEFAULT)
    s.set_defaults(func=_cmd_sweep)
    pl = sub.add_parser("plan", help="highest request rate meeting SLOs, and the best configuration")
    _add_plan_args(pl, 600)
    pl.add_argument("--candidates", action="append", default=[], metavar="KEY=V1,V2,...",
                    help="candidate values of a scenario field (repeatable; the cartesian product is searched)")
    pl.add_argument("--replicas", default="1", metavar="N[,N...]", help="replica counts to consider (default 1)")
    pl.add_argument("--tol", type=float, default=0.02, help="relative tolerance of the rate bisection; with --seeds > 1 the width the capacity interval "
                         "must narrow to (default 0.02)")
    pl.add_argument("--objective", choices=("gpu", "usd", "rate"), default="gpu",
                    help="recommend by goodput per GPU (default), requests per dollar, or total rate")
    _add_seed_args(pl)
    pl.add_argument("--max-requests", type=int, default=None,
                    help="with --seeds > 1: double the requests per run up to this many until the capacity "
                         "interval is within --tol, else say it is not (default 8 x --requests)")
    pl.add_argument("--goodput", nargs="+", default=None, metavar="METRIC:MS",
                    help="per-request SLOs as vllm bench serve's, e.g. ttft:2000 tpot:100 e2el:60000; the plan "
                         "then needs goodput_miss_frac <= 0.01 (or the --slo goodput_miss_frac=... given)")
    pl.add_argument("--price", action="append", default=[], metavar="GPU=USD_PER_HOUR",
                    help="per-GPU price for --objective usd, e.g. --price h200-141gb=3.5 (repeatable; overrides "
                         "the catalogue's, needed for a GPU the catalogue has no price for)")
    add_bench_args(pl)
    add_outputs_arg(pl, PLAN_DEFAULT)
    pl.set_defaults(func=_cmd_plan)
    rp = sub.add_parser("report", help="tuning reports (self-contained HTML)")
    rsub = rp.add_subparsers(dest="report", required=True)
    bs = rsub.add_parser("block-size", help="which KV block size for this workload, and why")
    _add_plan_args(bs, 600)
    bs.add_argument("--block-sizes", default=None, metavar="B1,B2,...",
                    help="block sizes to compare (default 1,2,4,8,16,32,64,128,256)")
    bs.add_argument("--compare-v1", action="store_true",
                    help="also search each block size under engine.policy=v1 (a max_rate_v1 column and the reason)")
    bs.add_argument("--profile", default=None, metavar="P",
                    help="price each block size from this measured profile (kvsim calibrate); sizes it lacks are "
                         "listed as not measured (default: the scenario's cost model, usually the roofline)")
    bs.set_defaults(func=_cmd_report)
    pa = sub.add_parser("paper", help="reproduce the PagedAttention paper's figures on the simulator")
    pa.add_argument("--out", help="output directory (default runs/paper)")
    pa.add_argument("--quick", action="store_true", help="fewer requests and rates (about 2 minutes)")
    pa.add_argument("--jobs", type=int, default=None)
    pa.add_argument("--preset", default=None, metavar="NAME",
                    help="cost preset (kvsim/cost/presets.py): paper-a100-2023 = A100 with the measured host "
                         "overheads of the 2023 vLLM engine (default: the plain roofline)")
    pa.add_argument("--profile", default=None, metavar="JSON",
                    help="price steps with a measured profile (kvsim calibrate), e.g. "
                         "calibrate/profiles/H200/opt-13b.json; Fig. 18b/19 sweep only its block sizes")
    pa.add_argument("--gpu", default=None, help="GPU memory from the catalogue (default: the scenarios' A100-40GB)")
    pa.add_argument("--rate-scale", type=float, default=1.0, metavar="X",
                    help="multiply every request rate (a faster card needs higher rates to load it)")
    pa.add_argument("--quiet", action="store_true")
    pa.set_defaults(func=_cmd_paper)
    from kvsim.engine.cli import add_parser as _add_engine
    _add_engine(sub)
    from kvsim.calibrate.cli import add_parser as _add_calibrate
    _add_calibrate(sub)
    from kvsim.calibrate.merge import add_parser as _add_merge
    _add_merge(sub)
    from kvsim.validate_cli import add_parser as _add_validate
    _add_validate(sub)
    sub.add_parser("models", help="list the model catalogue").set_defaults(func=_cmd_models)
    sub.add_parser("gpus", help="list the GPU catalogue").set_defaults(func=_cmd_gpus)
    f = sub.add_parser("fields", help="list every scenario field: type, default, allowed range, help")
    f.add_argument("match", nargs="?", default=None, help="only fields whose name or help contains this text")
    f.set_defaults(func=_cmd_fields)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if "--version" in argv[:1] and len(argv) > 1:
        parser.error(f"argument --version: takes nothing else (got {' '.join(argv[1:])!r})")
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        parser.error(f"argument {argv[0]}: unrecognized option before the command (kvsim COMMAND [options]; "
                     f"commands: {', '.join(parser._subparsers._group_actions[0].choices)})")
    args = parser.parse_args(argv)
    from kvsim.workload import config as wconf
    wconf.deferred = []                  # notes (e.g. a deprecated dataset name) follow a successful command
    try:
        if getattr(args, "cmd", None) in ("run", "sweep", "plan"):
            from kvsim.cli_sim import bench_overrides, check_rate_flag
            args.set = args.set + bench_overrides(args)
            check_rate_flag(args)
        rc = args.func(args)
        for note in wconf.deferred:
            print(note, file=sys.stderr)
        return rc
    except KvsimError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:          # e.g. `kvsim models | head`
        sys.stderr.close()
        return 0
    except MemoryError:
        print("error: out of memory: the run needs more RAM than this machine has; use fewer requests or a "
              "smaller grid", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - a bug: one line, not a traceback (KVSIM_DEBUG=1 shows it)
        if os.environ.get("KVSIM_DEBUG"):
            raise
        first = (str(e).splitlines() or [""])[0]
        print(f"error: internal error: {type(e).__name__}: {first} (please report; KVSIM_DEBUG=1 shows the "
              f"traceback)", file=sys.stderr)
        return 1
    finally:
        wconf.deferred = None


if __name__ == "__main__":
    sys.exit(main())
