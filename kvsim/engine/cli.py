"""``kvsim engine SCENARIO.yaml``: run the real engine on a scenario's workload."""
from __future__ import annotations

import time
from pathlib import Path


def add_parser(sub) -> None:
    r = sub.add_parser("engine", help="run the real paged engine (GPU, or a tiny model on CPU; "
                                      "tensor_parallel N > 1: N gloo ranks on CPU)")
    r.add_argument("scenario")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    r.add_argument("--out", help="output directory (default runs/<name>-engine)")
    from kvsim.outdir import add_outputs_arg
    from kvsim.output import ENGINE_DEFAULT
    add_outputs_arg(r, ENGINE_DEFAULT)
    r.set_defaults(func=cmd_engine)


def _on_cpu(sc) -> bool:
    import torch
    want = sc.runtime.device
    return want == "cpu" or (want == "auto" and not torch.cuda.is_available())


def cmd_engine(args) -> int:
    from kvsim.config import load_scenario
    from kvsim.outdir import parse_outputs
    from kvsim.output import ENGINE_DEFAULT
    from kvsim.runtext import arrivals_text, format_summary
    kinds = parse_outputs(args.outputs, ENGINE_DEFAULT)     # a bad --outputs fails before torch is imported
    try:
        from kvsim.engine.engine import RealEngine
    except ImportError as e:
        from kvsim.errors import KvsimError
        raise KvsimError("engine", f"needs torch and triton (pip install -e '.[gpu]'): {e}") from None
    from kvsim.engine.preflight import check_engine_fits
    from kvsim.outdir import OutputSet, default_out
    from kvsim.output import RUN_FILE_NAMES, write_engine_run
    sc = load_scenario(args.scenario, args.set)
    out = Path(args.out) if args.out else default_out(sc.name, "-engine")
    OutputSet(out, RUN_FILE_NAMES).check()          # refuse a foreign --out before loading a model
    check_engine_fits(sc)
    t0 = time.perf_counter()
    if sc.tensor_parallel != 1 and _on_cpu(sc):   # CPU ranks over gloo; on a GPU RealEngine refuses tp != 1
        from kvsim.engine.tp_ranks import run_engine_tp
        eng, res = run_engine_tp(args.scenario, args.set, world=sc.tensor_parallel)
    else:
        eng = RealEngine(sc)
        res = eng.run()
    info = res.info
    arrivals = arrivals_text(sc, len(eng.setup.requests))

    def report() -> str:
        from kvsim.report.run_report import render_run
        return render_run(res, arrivals, engine=info)
    written = write_engine_run(res, out, kinds=kinds, report=report)
    ranks = f" x{sc.tensor_parallel} ranks (gloo)" if sc.tensor_parallel != 1 else ""
    print(f"kvsim engine: {sc.name} — {eng.setup.model.name} on {info['device']}{ranks} ({info['attention_backend']}), "
          f"{sc.engine.allocator}, KV blocks {info['kv_blocks']} (simulator: {info['simulator_blocks']})")
    print(f"  arrivals: {arrivals}")
    s = res.summary
    if s.get("requests_total") and not s.get("requests_finished"):
        from kvsim.errors import KvsimError
        raise KvsimError("runtime.max_wall_s" if sc.runtime.max_wall_s else "engine",
                         f"the engine finished none of {s['requests_total']} requests (records in {out})")
    print(format_summary(res.summary, clock="wall"))
    print(f"  per iteration: cpu {info['cpu_s_mean'] * 1e3:.2f} ms, gpu {info['gpu_s_mean'] * 1e3:.2f} ms; "
          f"wrote {out}/{{{', '.join(written)}}} in {time.perf_counter() - t0:.1f} s")
    compiled = info.get("kernels_compiled_while_serving", 0)
    if compiled:
        steps = sorted({e["step"] for e in info.get("kernels_compiled_while_serving_first", [])})
        print(f"note: {compiled} Triton kernel(s) compiled while serving (steps {', '.join(map(str, steps[:8]))}"
              f"{', ...' if len(steps) > 8 else ''}): those steps' times include compiling; warm-up missed a "
              f"kernel variant (benchmarks/engine/compile_watch.py says which)")
    return 0
