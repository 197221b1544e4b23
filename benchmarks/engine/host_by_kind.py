"""Where an engine run's host time sits, by step kind and the kind of the step before it (CPU, from saved records).

For each (kind, previous kind) pair of an engine run's ``iterations.csv`` (decode-only, mixed, prefill-only):
the steps, their mean host time on the critical path (``cpu_s``), GPU part (``gpu_s``) and duration, and the
share prepared while the step before them was in flight (``host_ahead``, where recorded). Written for
``runtime.async_prompt_steps`` (kvsim/engine/serve_loop.py): with it off, a mixed step and the decode step after
it kept the host's bookkeeping and scheduling on the critical path; with it on, nothing should be left there but
after a prefill-only step that started from idle.

usage:
    python benchmarks/engine/host_by_kind.py RUN_DIR [RUN_DIR ...] [--md OUT.md]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from kvsim.validate_records import record_file


def kinds(its: pd.DataFrame) -> pd.Series:
    """decode / mixed / prefill per step (a step of neither kind, e.g. swaps alone, is "other")."""
    pre, dec = its.prefill_tokens > 0, its.decode_seqs > 0
    out = pd.Series("other", index=its.index)
    out[dec & ~pre] = "decode"
    out[dec & pre] = "mixed"
    out[pre & ~dec] = "prefill"
    return out


def table(run: Path) -> pd.DataFrame:
    its = pd.read_csv(record_file(run, "iterations.csv"))
    its = its.assign(kind=kinds(its))
    its = its.assign(after=its.kind.shift(1).fillna("start"))
    agg = {"steps": ("duration_s", "size"), "host_ms": ("cpu_s", "mean"), "gpu_ms": ("gpu_s", "mean"),
           "step_ms": ("duration_s", "mean")}
    if "host_ahead" in its.columns:
        agg["ahead"] = ("host_ahead", "mean")
    t = its.groupby(["kind", "after"]).agg(**agg).reset_index()
    for c in ("host_ms", "gpu_ms", "step_ms"):
        t[c] = (t[c] * 1e3).round(3)
    if "ahead" in t.columns:
        t["ahead"] = t["ahead"].round(3)
    return t


def markdown(t: pd.DataFrame) -> str:
    rows = [list(t.columns), ["---"] * len(t.columns)] + [[str(v) for v in r] for r in t.itertuples(index=False)]
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--md", type=Path, help="also write the tables as Markdown here")
    args = ap.parse_args()
    parts = []
    for run in args.runs:
        doc = json.loads((run / "summary.json").read_text())
        summary, engine = doc.get("summary", doc), doc.get("engine", {})
        head = (f"{run}: {summary.get('requests_finished')} requests, throughput "
                f"{summary.get('throughput_req_s', float('nan')):.3f} req/s, {engine.get('steps_overlapped')} steps "
                f"overlapped, {engine.get('arrivals_deferred')} arrivals deferred")
        t = table(run)
        print(head)
        print(t.to_string(index=False))
        parts.append(f"**{run.parent.name}/{run.name}** ({head.split(': ', 1)[1]})\n\n{markdown(t)}\n")
    if args.md:
        args.md.write_text("\n".join(parts))


if __name__ == "__main__":
    main()
