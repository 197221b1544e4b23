"""The block-size engine check's runs in one process: the model is loaded once and each run builds only its KV
cache and CUDA graphs (``benchmarks/engine/blocksize_check.sh`` calls this).

Each ``--run B:RATE:REQUESTS:SEED`` is ``kvsim engine SCENARIO --set engine.block_size=B --set
workload.rate_req_s=RATE --set workload.num_requests=REQUESTS --set workload.duration_s=null --set seed=SEED``
(after the engine settings the report's profile was measured under, ``--profile``: the report priced that engine,
:func:`kvsim.validate.profile_sets`; then ``--set`` items), written to ``OUT/b<B>_r<RATE>_s<SEED>/`` (summary.json, requests.csv, iterations.csv: what
``kvsim.report.engine_check`` reads). A folder that already holds requests.csv is kept (a call cut short resumes);
a run is not started when less than ``--min-left`` seconds of ``--time-limit`` remain. Through ``kvsim engine``
each 20-s run of OPT-13B on an H100 took about 30 s besides serving (loading dummy weights, capturing, writing
plots), 2026-12-06; here the load is paid once and no plot is drawn.

``--bracket REPORT/block_size.csv --blocks 1,16,128`` instead of ``--run``: each block at its predicted SLO rate,
then a step of 15% of that rate further on the side its SLO rate lies until one run meets the SLO and one does
not (:func:`bracket_runs`): two runs per block when the prediction is within 15%, where the fixed fractions
(1.0, 0.85, 1.15) spent three, ~140 s each for OPT-13B on an H100.

usage (GPU): python benchmarks/engine/blocksize_runs.py SCENARIO --out DIR --run 16:15.7:942:0 --run ... \
    [--profile P.json] [--set gpu=h100-80gb] [--time-limit 560] [--min-left 90]
    python benchmarks/engine/blocksize_runs.py SCENARIO --out DIR --bracket REPORT/block_size.csv --blocks 1,16,128 \
    [--seeds 0] [--slo normalized_latency_s=0.1] [--step 0.15] [--max-rounds 2] ...
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))      # scenario_runs: the one-process loop


def parse_run(text: str) -> tuple[int, float, int, int]:
    try:
        b, rate, n, seed = text.split(":")
        return int(b), float(rate), int(n), int(seed)
    except ValueError:
        from kvsim.errors import KvsimError
        raise KvsimError("--run", f"expected BLOCK:RATE:REQUESTS:SEED, got {text!r}") from None


def run_dir(out: Path, b: int, rate: float, seed: int) -> Path:
    return out / f"b{b}_r{rate:g}_s{seed}"


def run_all(scenario: str, runs, out: Path, sets: list[str],
            time_limit: float | None = None, min_left: float = 0.0, log=print) -> list[Path]:
    """Each run of ``runs`` (a list, or :func:`bracket_runs`' generator) not yet on disk, one engine at a time on one
    loaded model (:func:`scenario_runs.serve_each`, whose dummy weights are re-drawn from each run's seed: before
    2026-12-07 a later seed's runs served the first run's weights); returns the folders written."""
    import kvsim
    from scenario_runs import serve_each

    def jobs():
        for b, rate, n, seed in runs:
            sc = kvsim.load_scenario(scenario, list(sets) + [
                f"engine.block_size={b}", f"workload.rate_req_s={rate!r}", f"workload.num_requests={n}",
                "workload.duration_s=null", f"seed={seed}"])
            yield sc, run_dir(out, b, rate, seed), f"block {b} rate {rate:g} seed {seed}"

    def done(sc, d, res, eng, start, end):
        s = res.summary
        log(f"{d.name}: {s.get('requests_finished')}/{s.get('requests_total')} finished, "
            f"normalized latency {s.get('normalized_latency_s', float('nan')):.4f} s/token, {end - start:.1f} s")
    return serve_each(jobs(), time_limit, min_left, log, done)


def bracket_runs(report_csv: str, blocks: list[int], seeds: list[int], out: Path, key: str, bound: float,
                 step: float, max_rounds: int):
    """``(B, RATE, REQUESTS, SEED)`` runs, generated round by round as the runs before them finish: each block at
    its predicted SLO rate, then, per block and seed, a step of ``step`` of that rate further on the side its SLO
    rate lies until one run meets the SLO and one does not, at most ``max_rounds`` steps
    (:func:`kvsim.report.engine_check.next_fraction`). Runs already in ``out`` count as measured. A block's run that
    did not happen (a call cut short) stops its search."""
    import pandas as pd
    from kvsim.report.engine_check import next_fraction, probe_runs, run_metric
    from kvsim.validate_records import record_file
    report = pd.read_csv(report_csv)
    tried: dict[tuple[int, int], dict[float, float]] = {(b, s): {} for s in seeds for b in blocks}
    pending = dict.fromkeys(tried, 1.0)
    while pending:
        asked = {k: parse_run(probe_runs(report, [k[0]], [frac], [k[1]])[0]) for k, frac in pending.items()}
        yield from asked.values()
        nxt = {}
        for (b, seed), frac in pending.items():
            reqs = record_file(run_dir(out, b, asked[(b, seed)][1], seed), "requests.csv")
            if not reqs.exists():
                continue
            tried[(b, seed)][frac] = run_metric(pd.read_csv(reqs), key)
            f = next_fraction(tried[(b, seed)], bound, step, max_rounds)
            if f is not None:
                nxt[(b, seed)] = f
        pending = nxt


def engine_sets(profile: str | None, sets: list[str]) -> list[str]:
    """The profile's engine mode (graph ladder, routing, overlap, swap path: what the report's prices assume), then
    ``sets`` (which win); ``sets`` alone without a profile."""
    if not profile:
        return list(sets)
    from kvsim.validate import _profile_doc, profile_sets
    return profile_sets(_profile_doc(profile).get("meta")) + list(sets)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scenario")
    ap.add_argument("--out", required=True)
    ap.add_argument("--run", action="append", default=[], metavar="B:RATE:REQUESTS:SEED")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--profile", default=None, help="the report's profile: run the engine in its mode")
    ap.add_argument("--time-limit", type=float, default=None)
    ap.add_argument("--min-left", type=float, default=90.0)
    ap.add_argument("--bracket", metavar="BLOCK_SIZE_CSV", default=None,
                    help="instead of --run: each of --blocks at its predicted SLO rate, then steps until bracketed")
    ap.add_argument("--blocks", default="", help="with --bracket: the block sizes, e.g. 1,16,128")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--slo", default="normalized_latency_s=0.1", help="with --bracket: KEY=BOUND")
    ap.add_argument("--step", type=float, default=0.15, help="with --bracket: a step, as a fraction of the rate")
    ap.add_argument("--max-rounds", type=int, default=2)
    a = ap.parse_args(argv)
    from kvsim.errors import KvsimError
    try:
        if a.bracket:
            key, bound = a.slo.split("=")
            runs = bracket_runs(a.bracket, [int(b) for b in a.blocks.split(",") if b], [int(x) for x in
                                a.seeds.split(",")], Path(a.out), key, float(bound), a.step, a.max_rounds)
        else:
            runs = [parse_run(r) for r in a.run]
        run_all(a.scenario, runs, Path(a.out), engine_sets(a.profile, a.set), a.time_limit, a.min_left)
    except KvsimError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
