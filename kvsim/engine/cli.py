"""``kvsim engine SCENARIO.yaml``: run the real engine on a scenario's workload."""
from __future__ import annotations

import time
from pathlib import Path


def add_parser(sub) -> None:
    r = sub.add_parser("engine", help="run the real paged engine (GPU, or a tiny model on CPU)")
    r.add_argument("scenario")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    r.add_argument("--out", help="output directory (default runs/<name>-engine)")
    r.set_defaults(func=cmd_engine)


def cmd_engine(args) -> int:
    from kvsim.cli import format_summary
    from kvsim.config import load_scenario
    try:
        from kvsim.engine.engine import RealEngine
    except ImportError as e:
        from kvsim.errors import KvsimError
        raise KvsimError("engine", f"needs torch and triton (pip install -e '.[gpu]'): {e}") from None
    from kvsim.output import write_engine_run
    sc = load_scenario(args.scenario, args.set)
    t0 = time.perf_counter()
    eng = RealEngine(sc)
    res = eng.run()
    out = Path(args.out or Path("runs") / f"{sc.name}-engine")
    write_engine_run(res, out)
    info = res.info
    print(f"kvsim engine: {sc.name} — {eng.setup.model.name} on {info['device']} ({info['attention_backend']}), "
          f"{sc.engine.allocator}, KV blocks {info['kv_blocks']} (simulator: {info['simulator_blocks']})")
    print(format_summary(res.summary))
    print(f"  per iteration: cpu {info['cpu_s_mean'] * 1e3:.2f} ms, gpu {info['gpu_s_mean'] * 1e3:.2f} ms; "
          f"wrote {out} in {time.perf_counter() - t0:.1f} s")
    return 0
